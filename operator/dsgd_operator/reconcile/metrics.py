"""The operator's own Prometheus metrics (served at :<metrics_port>/metrics).

They live in a registry of their own, so that embedding the operator (tests,
`dsgd run`) never collides with other metrics of the same process.
"""

from __future__ import annotations

from collections.abc import Iterable

from dsgd_contract.job_status import KNOWN_FAILURE_REASONS, PHASES
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Gauge(
    "dsgd_jobs", "DistributedSGDJobs known to the operator, by phase.", ["phase"], registry=REGISTRY
)
# A pass is a handful of API calls: a list, a few creates, a status patch. Buckets
# from one fast local call (5 ms) to a slow API server under load (30 s).
RECONCILE_DURATION = Histogram(
    "dsgd_reconcile_duration_seconds",
    "Duration of one reconcile pass of a job (API calls included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
PODS_CREATED = Counter("dsgd_pods_created_total", "Trainer pods created.", registry=REGISTRY)
GANG_RESTARTS = Counter(
    "dsgd_gang_restarts_total", "Gangs torn down and recreated after a failure.", registry=REGISTRY
)
JOB_FAILURES = Counter(
    "dsgd_job_failures_total", "Jobs that ended Failed, by reason.", ["reason"], registry=REGISTRY
)


# Known failure reasons start at zero, so that rates and alerts see the series at once.
for _reason in KNOWN_FAILURE_REASONS:
    JOB_FAILURES.labels(reason=_reason)


def set_job_phases(phases: Iterable[str | None]) -> None:
    """Publish how many jobs are in each phase (every phase reported, zeros included)."""
    counts = dict.fromkeys(PHASES, 0)
    for phase in phases:
        if phase in counts:
            counts[phase] += 1
    for phase, count in counts.items():
        JOBS.labels(phase=phase).set(count)


def serve(port: int, address: str = "0.0.0.0"):
    """Start the /metrics HTTP server in a thread; returns (server, thread) to shut it down."""
    return start_http_server(port, addr=address, registry=REGISTRY)
