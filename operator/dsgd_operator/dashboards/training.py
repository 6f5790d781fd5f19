"""The "dsgd / Training" dashboard: progress, loss, accuracy, trials, communication, GPUs."""

from __future__ import annotations

from dsgd_contract import metrics as m

from dsgd_operator.dashboards import gpu
from dsgd_operator.dashboards.panels import (
    PERCENT_UNIT,
    Board,
    Look,
    Target,
    datasource_variable,
    label_values,
    query_variable,
    stat_panel,
    time_series,
)
from dsgd_operator.dashboards.promql import (
    BY_JOB,
    CLUSTER_LABEL,
    JOB_LEGEND,
    RANK_LEGEND,
    TRAINER,
    matchers,
)

UID = "dsgd-training"
#: Every trainer series has a dsgd_job: "All" jobs is "any job", which also keeps the GPU
#: panels' join (on `up`) to trainer targets only.
ANY_JOB = ".+"
#: The grid cell and seed of a trial; jobs outside an experiment have no cell.
TRIAL = f"{m.EXPERIMENT_SERIES_LABEL}, {m.CELL_SERIES_LABEL}, {m.SEED_SERIES_LABEL}"
TRIAL_LEGEND = (
    f"{{{{{m.EXPERIMENT_SERIES_LABEL}}}}} {{{{{m.CELL_SERIES_LABEL}}}}} "
    f"seed {{{{{m.SEED_SERIES_LABEL}}}}}"
)


def _series(name: str, extra: str = "") -> str:
    """`name{<the trainer filters>}`, with `extra` matchers appended."""
    return f"{name}{{{TRAINER}{', ' + extra if extra else ''}}}"


def _rate(name: str) -> str:
    return f"rate({_series(name)}[$__rate_interval])"


def _per_rank(name: str) -> list[Target]:
    return [Target(_series(name), RANK_LEGEND)]


def job_variables(metric: str, member_label: str, member_title: str) -> list:
    """Data source, cluster, namespace, experiment and job, each narrowing the next, then the
    job's members (`member_label`: rank, or a parameter server's shard), listed from the
    series `metric`. The variables are named after the labels (the job's: dsgd_job)."""
    job = query_variable(
        "dsgd_job",
        "DistributedSGDJob",
        label_values(
            metric,
            matchers(
                **{
                    CLUSTER_LABEL: "cluster",
                    m.NAMESPACE_LABEL: "namespace",
                    m.EXPERIMENT_SERIES_LABEL: "experiment",
                }
            ),
            m.JOB_LABEL,
        ),
    ).all_value(ANY_JOB)
    job.description(
        "The DistributedSGDJob (series label dsgd_job, from the pod label dsgd.io/job-name), "
        "not Prometheus' scrape job (label job), which all trainers share."
    )
    return [
        datasource_variable(),
        query_variable("cluster", "Cluster", label_values(metric, "", CLUSTER_LABEL)).description(
            "The `cluster` label of a multi-cluster Prometheus or Thanos; All when it is absent."
        ),
        query_variable(
            "namespace",
            "Namespace",
            label_values(metric, matchers(**{CLUSTER_LABEL: "cluster"}), m.NAMESPACE_LABEL),
        ),
        query_variable(
            "experiment",
            "SGDExperiment",
            label_values(
                metric,
                matchers(**{CLUSTER_LABEL: "cluster", m.NAMESPACE_LABEL: "namespace"}),
                m.EXPERIMENT_SERIES_LABEL,
            ),
        ).description("The trials of one SGDExperiment; All includes jobs of no experiment."),
        job,
        query_variable(
            member_label,
            member_title,
            label_values(
                metric,
                matchers(
                    **{
                        CLUSTER_LABEL: "cluster",
                        m.NAMESPACE_LABEL: "namespace",
                        m.EXPERIMENT_SERIES_LABEL: "experiment",
                        m.JOB_LABEL: "dsgd_job",
                    }
                ),
                member_label,
            ),
        ),
    ]


def _progress(board: Board) -> None:
    board.row("Progress")
    board.panel(
        stat_panel(
            "Epoch",
            "Current epoch of each job (fractional within an epoch where the trainer reports it).",
            [Target(f"max by ({BY_JOB}) ({_series(m.EPOCH)})", JOB_LEGEND)],
            Look(decimals=2),
        ),
        6,
        5,
    )
    board.panel(
        stat_panel(
            "Steps per second",
            "Optimizer steps per second, per rank.",
            [Target(_rate(m.STEPS), RANK_LEGEND)],
            Look(unit="ops", decimals=2),
        ),
        6,
        5,
    )
    board.panel(
        stat_panel(
            "Samples per second",
            "Training throughput of the whole job (sum over ranks).",
            [Target(f"sum by ({BY_JOB}) ({_rate(m.SAMPLES)})", JOB_LEGEND)],
            Look(decimals=0),
        ),
        6,
        5,
    )
    attempts = (
        f"count by ({BY_JOB}) (count by ({BY_JOB}, attempt) "
        f"(last_over_time({_series(m.STEPS)}[$__range]))) - 1"
    )
    board.panel(
        stat_panel(
            "Gang restarts",
            "Gang restarts seen in the selected time range: every restart recreates the job's "
            "pods with the next dsgd.io/attempt label (status.restarts has the total).",
            [Target(attempts, JOB_LEGEND)],
            Look(decimals=0),
        ),
        6,
        5,
    )


def _loss_and_accuracy(board: Board) -> None:
    board.row("Loss and accuracy")
    for title, name, description, look in (
        ("Training loss", m.TRAIN_LOSS, "Mean training loss of each rank's recent batches.",
         Look()),
        ("Test loss", m.TEST_LOSS,
         "Loss of the synchronized model on the test set, at each evaluation.", Look()),
        ("Training accuracy", m.TRAIN_ACCURACY,
         "Accuracy on each rank's recent training batches.", PERCENT_UNIT),
        ("Test accuracy", m.TEST_ACCURACY,
         "Accuracy of the synchronized model on the test set, at each evaluation.",
         PERCENT_UNIT),
    ):  # fmt: skip
        board.panel(time_series(title, description, _per_rank(name), look), 12, 8)
    board.panel(
        time_series(
            "Learning rate",
            "Learning rate after linear scaling, warm-up and the step schedule.",
            _per_rank(m.LEARNING_RATE),
        ),
        24,
        8,
    )


def _trials(board: Board) -> None:
    """The running trials of an SGDExperiment side by side, one line per cell and seed."""
    board.row("Trials of the experiment")
    trial = f'{m.CELL_SERIES_LABEL}!=""'
    board.panel(
        time_series(
            "Test accuracy by trial",
            "Test accuracy of each trial (grid cell and seed) of the selected SGDExperiment "
            "(kubectl get sgdexperiment NAME -o yaml names each cell's axis values). Seeds of "
            "one cell should agree; cells whose lines stay within the seeds' spread do not "
            "differ.",
            [Target(f"max by ({TRIAL}) ({_series(m.TEST_ACCURACY, trial)})", TRIAL_LEGEND)],
            PERCENT_UNIT,
        ),
        12,
        8,
    )
    board.panel(
        time_series(
            "Training loss by trial",
            "Training loss of each trial of the selected SGDExperiment, averaged over its ranks.",
            [Target(f"avg by ({TRIAL}) ({_series(m.TRAIN_LOSS, trial)})", TRIAL_LEGEND)],
        ),
        12,
        8,
    )


def _communication(board: Board) -> None:
    board.row("Throughput and communication")
    board.panel(
        time_series(
            "Samples per second by rank",
            "Training samples per second reported by each rank.",
            _per_rank(m.SAMPLES_PER_SECOND),
        ),
        12,
        8,
    )
    communication, compute = _rate(m.COMMUNICATION_SECONDS), _rate(m.COMPUTE_SECONDS)
    board.panel(
        time_series(
            "Share of time communicating",
            "Fraction of each rank's training time spent in collectives (gradient or parameter "
            "averaging) rather than computing.",
            [Target(f"{communication} / ({communication} + {compute})", RANK_LEGEND)],
            PERCENT_UNIT,
        ),
        12,
        8,
    )
    by_scope = f"{BY_JOB}, {m.SCOPE_LABEL}"
    scope_legend = f"{JOB_LEGEND} {{{{{m.SCOPE_LABEL}}}}}"
    board.panel(
        time_series(
            "Bytes sent and payload by scope",
            "Bytes the ranks sent on the wire under the collectives' algorithms (ring "
            "all-reduce: 2(K-1)/K of the payload), and the size of the tensors they "
            "contributed, per second, by scope.",
            [
                Target(f"sum by ({by_scope}) ({_rate(name)})", f"{scope_legend} {what}")
                for name, what in ((m.COMMUNICATED_BYTES, "sent"), (m.PAYLOAD_BYTES, "payload"))
            ],
            Look(unit="Bps"),
        ),
        12,
        8,
    )
    board.panel(
        time_series(
            "Sync rounds by scope",
            "Model or gradient averagings per second by scope; every rank takes part in each "
            "round, so the largest rank count is shown.",
            [Target(f"max by ({by_scope}) ({_rate(m.SYNC_ROUNDS)})", scope_legend)],
            Look(unit="ops"),
        ),
        12,
        8,
    )
    buckets = f"sum by ({BY_JOB}, le) ({_rate(m.STEP_DURATION + '_bucket')})"
    board.panel(
        time_series(
            "Step duration",
            "Quantiles of the wall time of one optimizer step (compute and communication), "
            "over all ranks of a job.",
            [
                Target(f"histogram_quantile({q}, {buckets})", f"{JOB_LEGEND} p{round(q * 100)}")
                for q in (0.5, 0.95)
            ],
            Look(unit="s"),
        ),
        12,
        8,
    )
    board.panel(
        time_series(
            "Steps per second by rank",
            "Optimizer steps per second of each rank: a slow rank holds back every synchronous "
            "average.",
            [Target(_rate(m.STEPS), RANK_LEGEND)],
            Look(unit="ops"),
        ),
        12,
        8,
    )
    board.panel(
        time_series(
            "Consensus distance",
            "Each rank's ||x_k - mean|| / ||mean|| at the last global model averaging (local "
            "SGD variants; the mean over ranks is what metrics.jsonl records): how far the "
            "replicas drift apart between averagings.",
            _per_rank(m.CONSENSUS_DISTANCE),
        ),
        24,
        8,
    )
    board.panel(
        stat_panel(
            "Checkpoints skipped at resume",
            "Unusable checkpoints (corrupt or incomplete files) the ranks skipped for an older "
            "one when the gang resumed; the operator posts a CheckpointFallback Warning Event "
            "on the job too.",
            [
                Target(
                    f"max by ({BY_JOB}) ({_series(m.CHECKPOINTS_SKIPPED)})",
                    f"{{{{{m.JOB_LABEL}}}}}",
                )
            ],
            Look(decimals=0),
        ),
        12,
        5,
    )


def board() -> Board:
    training = Board(
        UID,
        "dsgd / Training",
        "DistributedSGDJob training: loss, accuracy, learning rate, throughput, communication "
        "and GPUs per job and rank, and the trials of an SGDExperiment side by side.",
        job_variables(m.STEPS, m.RANK_LABEL, "Rank"),
    )
    _progress(training)
    _loss_and_accuracy(training)
    _trials(training)
    _communication(training)
    gpu.add_row(training)
    return training
