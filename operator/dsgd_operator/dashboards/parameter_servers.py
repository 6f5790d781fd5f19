"""The "dsgd / Parameter servers" dashboard: Downpour SGD's servers, per job and shard.

What only the servers see: the staleness of the pushes they apply (their shard's
version at apply time minus the version the pushing replica computed on), and
how many pushes they apply and fetches they serve. The workers' side of the same
traffic (bytes pushed and fetched, scopes push and fetch) is on the training
dashboard's "Bytes sent and payload by scope".
"""

from __future__ import annotations

from dsgd_contract import metrics as m

from dsgd_operator.dashboards.panels import Board, Look, Target, stat_panel, time_series
from dsgd_operator.dashboards.promql import BY_JOB, JOB_LEGEND, PARAMETER_SERVERS, SHARD_LEGEND
from dsgd_operator.dashboards.training import job_variables

UID = "dsgd-parameter-servers"
#: Staleness quantiles drawn; 1 is the upper bound of the bucket holding the largest one.
QUANTILES = ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"), (1.0, "max (bucket bound)"))
BY_SHARD = f"{BY_JOB}, {m.SHARD_LABEL}"


def _rate(name: str) -> str:
    return f"rate({name}{{{PARAMETER_SERVERS}}}[$__rate_interval])"


def _quantile(q: float, by: str) -> str:
    return f"histogram_quantile({q:g}, sum by ({by}, le) ({_rate(m.STALENESS + '_bucket')}))"


def _mean_staleness(by: str) -> str:
    return (
        f"sum by ({by}) ({_rate(m.STALENESS + '_sum')}) "
        f"/ sum by ({by}) ({_rate(m.STALENESS + '_count')})"
    )


def _staleness(board: Board) -> None:
    board.row("Staleness")
    board.panel(
        time_series(
            "Staleness of applied pushes",
            "Quantiles and mean, over every shard of a job, of how many pushes a gradient "
            "is behind when a server applies it (its shard's version then minus the version "
            "the replica fetched). Bounded by the other replicas' pushes during one "
            "fetch-to-push interval; grows with replicas and with fetchSteps. The max line "
            "is the upper bound of the histogram bucket holding the largest staleness.",
            [Target(_quantile(q, BY_JOB), f"{JOB_LEGEND} {name}") for q, name in QUANTILES]
            + [Target(_mean_staleness(BY_JOB), f"{JOB_LEGEND} mean")],
            Look(decimals=1, min=0),
        ),
        16,
        8,
    )
    board.panel(
        stat_panel(
            "Mean staleness",
            "Mean staleness of the pushes the job's servers applied in the last interval.",
            [Target(_mean_staleness(BY_JOB), JOB_LEGEND)],
            Look(decimals=2),
        ),
        8,
        8,
    )
    board.panel(
        time_series(
            "Staleness p95 by shard",
            "95th percentile of the staleness of the pushes each shard applied: shards "
            "that differ point at a slow server (every push reaches every shard).",
            [Target(_quantile(0.95, BY_SHARD), SHARD_LEGEND)],
            Look(decimals=1, min=0),
        ),
        24,
        8,
    )


def _traffic(board: Board) -> None:
    board.row("Pushes and fetches")
    for title, name, description in (
        ("Pushes applied per second by shard", m.SERVER_UPDATES,
         "Gradient pushes each server applied per second (each replica pushes every "
         "pushSteps steps to every shard)."),
        ("Fetches served per second by shard", m.SERVER_FETCHES,
         "Parameter fetches each server served per second (each replica fetches every "
         "fetchSteps steps; evaluations fetch the whole model too)."),
    ):  # fmt: skip
        board.panel(
            time_series(
                title,
                description,
                [Target(f"sum by ({BY_SHARD}) ({_rate(name)})", SHARD_LEGEND)],
                Look(unit="ops"),
            ),
            12,
            8,
        )


def board() -> Board:
    servers = Board(
        UID,
        "dsgd / Parameter servers",
        "Downpour SGD's parameter servers (downpour-sgd jobs, pods <job>-ps-<i>): staleness "
        "of the pushes they apply, pushes applied and fetches served per shard.",
        job_variables(m.SERVER_UPDATES, m.SHARD_LABEL, "Shard"),
    )
    _staleness(servers)
    _traffic(servers)
    return servers
