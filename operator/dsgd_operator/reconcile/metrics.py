"""The operator's own Prometheus metrics (served at :<metrics_port>/metrics).

They live in a registry of their own, so that embedding the operator (tests,
`dsgd run`) never collides with other metrics of the same process; the process and
platform collectors are registered there too, so `process_*` (CPU, memory, open file
descriptors) and `python_info` are still served.

Per-job series (`dsgd_gang_restarts_total`, `dsgd_job_failures_total`,
`dsgd_job_running`) carry the job's `namespace` and `dsgd_job`, so alerts name the
job and can be routed by namespace. They start at zero when the operator first sees a
job (so that `increase()` sees the first restart or failure) and are dropped when the
job is deleted, so the series count follows the jobs that exist.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

from dsgd_contract import metrics as names
from dsgd_contract.job_status import KNOWN_FAILURE_REASONS, PHASES, RUNNING
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_JOB = (names.NAMESPACE_LABEL, names.JOB_LABEL)

BUILD_INFO = Gauge(
    names.BUILD_INFO,
    "Always 1; labelled with the running operator's version.",
    [names.VERSION_LABEL, "python_version"],
    registry=REGISTRY,
)
JOBS = Gauge(
    names.JOBS,
    "DistributedSGDJobs known to the operator, by phase.",
    [names.PHASE_LABEL],
    registry=REGISTRY,
)
JOB_RUNNING = Gauge(
    names.JOB_RUNNING,
    "1 while a job is Running (its trainer pods should be serving metrics); absent otherwise.",
    _JOB,
    registry=REGISTRY,
)
# A pass is a handful of API calls: a list, a few creates, a status patch. Buckets
# from one fast local call (5 ms) to a slow API server under load (30 s).
RECONCILE_DURATION = Histogram(
    names.RECONCILE_DURATION,
    "Duration of one reconcile pass of a job (API calls included), failed passes too.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    names.RECONCILE_ERRORS,
    "Reconcile passes that failed (an API error or a bug); the pass is retried with backoff.",
    registry=REGISTRY,
)
PODS_CREATED = Counter(names.PODS_CREATED, "Trainer pods created.", registry=REGISTRY)
GANG_RESTARTS = Counter(
    names.GANG_RESTARTS,
    "Gangs torn down and recreated after a failure, per job.",
    _JOB,
    registry=REGISTRY,
)
JOB_FAILURES = Counter(
    names.JOB_FAILURES,
    "Jobs that ended Failed, per job and reason.",
    [*_JOB, names.REASON_LABEL],
    registry=REGISTRY,
)


def _package_version() -> str:
    try:
        return version("dsgd")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


BUILD_INFO.labels(_package_version(), platform.python_version()).set(1)


def job_seen(namespace: str, name: str) -> None:
    """Start the job's restart and failure counters at zero (idempotent)."""
    GANG_RESTARTS.labels(namespace, name)
    for reason in KNOWN_FAILURE_REASONS:
        JOB_FAILURES.labels(namespace, name, reason)


def job_phase(namespace: str, name: str, phase: str | None) -> None:
    """Publish whether the job is Running (the series exists only while it is)."""
    if phase == RUNNING:
        JOB_RUNNING.labels(namespace, name).set(1)
    else:
        JOB_RUNNING.remove(namespace, name)  # a no-op when absent


def gang_restarted(namespace: str, name: str) -> None:
    GANG_RESTARTS.labels(namespace, name).inc()


def job_failed(namespace: str, name: str, reason: str) -> None:
    JOB_FAILURES.labels(namespace, name, reason).inc()


def job_forgotten(namespace: str, name: str) -> None:
    """Drop every series of a deleted job."""
    job = {names.NAMESPACE_LABEL: namespace, names.JOB_LABEL: name}
    for metric in (JOB_RUNNING, GANG_RESTARTS, JOB_FAILURES):
        metric.remove_by_labels(job)


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
