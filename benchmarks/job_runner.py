"""Run one training job the way `dsgd run` does, on loopback or across a NetnsCluster.

The processes are the job's pods as `dsgd_operator.local_run` plans them (same
command, args and env as on a cluster: `python -m dsgd_trainer.launch` with the
PET_* variables; a downpour-sgd job's parameter servers too). Inside a cluster,
gang member i (node i; parameter server j is member nodes + j) runs in node
namespace i, which the cluster adds if it has fewer, and in a PID namespace of
its own, as a pod (`NetnsCluster.isolated_argv`); the rendezvous address becomes
node 0's namespace address, the parameter servers' RPC store server 0's, and gloo
and TensorPipe bind to the shaped interface. Results are read back from the
trainer's own `metrics.jsonl` and `summary.json`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsgd_contract.config import TrainingConfig
from dsgd_operator.api import API_VERSION, KIND, DistributedSGDJob
from dsgd_operator.local_gang import LocalGang, LocalProcess
from dsgd_operator.local_run import (
    free_port,
    plan_local_processes,
    prepare_run_directory,
)
from dsgd_trainer import results
from shaped_cluster import NetnsCluster

#: Lines of output kept per node to explain a failed run.
LOG_TAIL_LINES = 40


class JobFailed(RuntimeError):
    """A benchmark's training job exited non-zero or ran out of time."""


@dataclass
class JobResult:
    """What one training job left behind: its evaluation records and summary."""

    records: list[dict[str, Any]]
    summary: dict[str, Any]
    seconds: float  # launch to exit, process start-up included
    out_dir: str
    exit_code: int = 0  # non-zero only for a crash after training finished (see `warning`)
    warning: str | None = None
    log_tail: list[str] = field(default_factory=list)


def exit_on_termination() -> None:
    """Make SIGTERM/SIGHUP raise SystemExit, so that `finally` blocks stop the gangs we started.

    Python's default for SIGTERM ends the process at once, which would orphan the
    training processes (each runs in its own session so that it can be stopped as a group).
    """

    def raise_exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, raise_exit)


def make_job(config: TrainingConfig, name: str) -> DistributedSGDJob:
    """A DistributedSGDJob manifest holding `config` (what a user would apply)."""
    return DistributedSGDJob.model_validate(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name},
            "spec": config.to_wire(),
        }
    )


def plan_processes(
    job: DistributedSGDJob,
    out_dir: Path,
    config_path: Path,
    metrics_dir: Path,
    cluster: NetnsCluster | None,
) -> list[LocalProcess]:
    """The job's pods as local processes; inside `cluster`'s namespaces when given, one
    node namespace per gang member (the cluster grows to as many: `ensure_nodes`)."""
    topology = job.spec.topology
    members = topology.gang_members
    # Metrics port 0: no HTTP server (the multiprocess files are still written, as in a pod).
    processes = plan_local_processes(
        job, out_dir, config_path, metrics_dir, free_port(), metrics_ports=[0] * members
    )
    if cluster is None:
        return processes
    cluster.ensure_nodes(members)
    servers = topology.nodes if topology.parameter_servers else None
    wiring = cluster.wiring_env(parameter_server_node=servers)
    return [
        dataclasses.replace(
            process,
            argv=cluster.isolated_argv(process.node_rank, process.argv),
            env={**process.env, **wiring},
        )
        for process in processes
    ]


def run_job(
    job: DistributedSGDJob,
    out_dir: Path,
    cluster: NetnsCluster | None = None,
    timeout: float = 3600.0,
    echo: bool = False,
) -> JobResult:
    """Train `job` (e.g. an experiment's trial) to the end; JobFailed (with the last lines
    of output) if it fails.

    `out_dir` receives config.json, metrics.jsonl and summary.json (an existing
    metrics.jsonl there is removed first: runs are never resumed here).
    """
    out_dir, name = out_dir.resolve(), job.name
    for stale in ("metrics.jsonl", "summary.json"):
        (out_dir / stale).unlink(missing_ok=True)
    config_path = prepare_run_directory(job, out_dir)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)

    def log(node: int, line: str) -> None:
        tail.append(f"[node {node}] {line}")
        if echo:
            print(f"    [node {node}] {line}", flush=True)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsgdbench-metrics-") as metrics_dir:
        gang = LocalGang(plan_processes(job, out_dir, config_path, Path(metrics_dir), cluster), log)

        def check_time() -> None:
            if time.perf_counter() - started > timeout:
                raise JobFailed(f"{name} ran longer than {timeout:.0f} s\n" + "\n".join(tail))

        outcome = gang.run(check_time, tick_seconds=0.2)
    seconds = time.perf_counter() - started
    summary_path = out_dir / results.SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    finished = summary is not None and summary.get("epochs") == job.spec.training.epochs
    if outcome.exit_code != 0 and not finished:
        raise JobFailed(
            f"{name} failed with exit code {outcome.exit_code} (node {outcome.failed_node}):\n"
            + "\n".join(tail)
        )
    if summary is None or not finished:
        raise JobFailed(f"{name} exited 0 but wrote no complete {summary_path}\n" + "\n".join(tail))
    warning = None
    if outcome.exit_code != 0:
        # Training finished and its results are complete; a crash while the process exits
        # (seen: gloo teardown aborting) does not change them, so say so and keep them.
        warning = (
            f"{name}: training finished and wrote its summary, but node {outcome.failed_node} "
            f"then exited with code {outcome.exit_code}"
        )
        print(f"warning: {warning}", flush=True)
    return JobResult(
        records=results.read_records(out_dir),
        summary=summary,
        seconds=seconds,
        out_dir=str(out_dir),
        exit_code=outcome.exit_code,
        warning=warning,
        log_tail=list(tail),
    )
