"""The "dsgd / Operator" dashboard: jobs by phase, restarts, failures, reconciling, health."""

from __future__ import annotations

from dsgd_contract import metrics as m

from dsgd_operator.dashboards.panels import (
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
    CLUSTER_LABEL,
    OPERATOR,
    OPERATOR_PER_JOB,
    SCRAPE_JOB_LABEL,
    matchers,
)

UID = "dsgd-operator"
PER_JOB_NOTE = 'Per-job series: filtered by the jobs\' namespace (variable "Job namespace").'
COUNT = Look(decimals=0)


def _operator(name: str) -> str:
    """An operator-wide series of the selected installation."""
    return f"{name}{{{OPERATOR}}}"


def _per_job(name: str) -> str:
    """A per-job series (labelled with the job's namespace) of the selected installation."""
    return f"{name}{{{OPERATOR_PER_JOB}}}"


def variables() -> list:
    reconciles = m.RECONCILE_DURATION + "_count"
    return [
        datasource_variable(),
        query_variable(
            "cluster", "Cluster", label_values(reconciles, "", CLUSTER_LABEL)
        ).description(
            "The `cluster` label of a multi-cluster Prometheus or Thanos; All when it is absent."
        ),
        query_variable(
            "namespace",
            "Operator namespace",
            label_values(reconciles, matchers(**{CLUSTER_LABEL: "cluster"}), m.NAMESPACE_LABEL),
        ),
        query_variable(
            "job",
            "Scrape job",
            label_values(
                reconciles,
                matchers(**{CLUSTER_LABEL: "cluster", m.NAMESPACE_LABEL: "namespace"}),
                SCRAPE_JOB_LABEL,
            ),
        ).description("Prometheus' scrape job of the operator (the ServiceMonitor's Service)."),
        query_variable(
            "job_namespace",
            "Job namespace",
            label_values(
                m.GANG_RESTARTS,
                matchers(**{CLUSTER_LABEL: "cluster", SCRAPE_JOB_LABEL: "job"}),
                m.NAMESPACE_LABEL,
            ),
        ),
    ]


def _jobs(board: Board) -> None:
    board.row("Jobs")
    by_phase = [Target(f"sum by ({m.PHASE_LABEL}) ({_operator(m.JOBS)})", "{{phase}}")]
    board.panel(
        time_series(
            "Jobs by phase", "DistributedSGDJobs the operator knows, by status.phase.",
            by_phase, COUNT,
        ),
        16, 8,
    )  # fmt: skip
    board.panel(
        stat_panel("Jobs now", "Jobs in each phase at the end of the time range.", by_phase, COUNT),
        8,
        8,
    )


def _restarts_and_failures(board: Board) -> None:
    board.row("Restarts and failures")
    restarts = f"increase({_per_job(m.GANG_RESTARTS)}[$__rate_interval])"
    failures = f"increase({_per_job(m.JOB_FAILURES)}[$__rate_interval])"
    board.panel(
        time_series(
            "Gang restarts",
            f"Gangs torn down and recreated after a worker failed. {PER_JOB_NOTE}",
            [Target(f"sum({restarts})", "restarts")],
            COUNT,
        ),
        8,
        8,
    )
    board.panel(
        time_series(
            "Job failures by reason",
            "Jobs that ended Failed, by reason (backoff limit, non-retryable exit code, "
            f"deadline, ...). {PER_JOB_NOTE}",
            [Target(f"sum by ({m.REASON_LABEL}) ({failures})", "{{reason}}")],
            COUNT,
        ),
        8,
        8,
    )
    board.panel(
        stat_panel(
            "In the time range",
            f"Totals over the selected time range. {PER_JOB_NOTE}",
            [
                Target(f"sum(increase({_per_job(m.GANG_RESTARTS)}[$__range]))", "gang restarts"),
                Target(f"sum(increase({_per_job(m.JOB_FAILURES)}[$__range]))", "job failures"),
                Target(f"sum(increase({_operator(m.PODS_CREATED)}[$__range]))", "pods created"),
            ],
            COUNT,
        ),
        8,
        8,
    )


def _reconciliation(board: Board) -> None:
    board.row("Reconciliation")
    buckets = f"sum by (le) (rate({_operator(m.RECONCILE_DURATION + '_bucket')}[$__rate_interval]))"
    board.panel(
        time_series(
            "Reconcile latency",
            "Duration of one reconcile pass of a job, API calls included.",
            [
                Target(f"histogram_quantile({q}, {buckets})", f"p{round(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
            Look(unit="s"),
        ),
        12,
        8,
    )
    passes = f"rate({_operator(m.RECONCILE_DURATION + '_count')}[$__rate_interval])"
    pods = f"rate({_operator(m.PODS_CREATED)}[$__rate_interval])"
    board.panel(
        time_series(
            "Reconcile passes and pod creations",
            "Reconcile passes and trainer pods created per second.",
            [Target(f"sum({passes})", "reconcile passes"), Target(f"sum({pods})", "pods created")],
            Look(unit="ops"),
        ),
        12,
        8,
    )


def _health(board: Board) -> None:
    board.row("Operator health")
    errors = f"rate({_operator(m.RECONCILE_ERRORS)}[$__rate_interval])"
    board.panel(
        time_series(
            "Reconcile errors and running jobs",
            "Failed reconcile passes per second (retried with backoff; lasting errors fire "
            "DSGDOperatorReconcileErrors) and the jobs the operator reports Running.",
            [
                Target(f"sum({errors})", "reconcile errors"),
                Target(f"count({_per_job(m.JOB_RUNNING)})", "jobs running"),
            ],
        ),
        12,
        8,
    )
    cpu = f"rate({_operator('process_cpu_seconds_total')}[$__rate_interval])"
    board.panel(
        time_series(
            "Operator process",
            "CPU (cores) and resident memory of the operator process, by version "
            "(dsgd_build_info).",
            [
                Target(f"sum by (instance) ({cpu})", "cpu {{instance}}"),
                Target(
                    f"sum by (instance) ({_operator('process_resident_memory_bytes')}) / 2^30",
                    "memory GiB {{instance}}",
                ),
                Target(
                    f"count by ({m.VERSION_LABEL}) ({_operator(m.BUILD_INFO)})",
                    "replicas of {{version}}",
                ),
            ],
        ),
        12,
        8,
    )


def board() -> Board:
    operator = Board(
        UID,
        "dsgd / Operator",
        "The dsgd operator: jobs by phase, reconcile latency, gang restarts and failures. "
        "Pick the operator installation by its namespace.",
        variables(),
    )
    _jobs(operator)
    _restarts_and_failures(operator)
    _reconciliation(operator)
    _health(operator)
    return operator
