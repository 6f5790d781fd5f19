"""A bandwidth-limited cluster on one machine: one network namespace per node, shaped links.

    python benchmarks/netns_cluster.py up --nodes 2 --rate 50mbit [--name NAME]
    python benchmarks/netns_cluster.py run --nodes 2 --rate 50mbit -- CMD ARG...
    python benchmarks/netns_cluster.py job --rate 50mbit JOB.yaml [--out DIR]
    python benchmarks/netns_cluster.py measure --rate 50mbit      # check the shaping
    python benchmarks/netns_cluster.py list
    python benchmarks/netns_cluster.py down [--name NAME]         # no name: every dsgdbench-*

`run` starts CMD on every node; `job` runs a DistributedSGDJob manifest's pods
(job_runner.py: one node namespace per gang member, a downpour-sgd job's parameter
servers included, each in a PID namespace of its own) and prints its figures beside
the bytes each member's shaped link carried.

From Python (what the other benchmarks do), this module re-exports the pieces::

    with NetnsCluster(nodes=2, rate="50mbit") as cluster:
        subprocess.run(cluster.exec_argv(0, ["python", ...]))

The layout (namespaces, bridge, veth, tbf) is netns_links.py's, the cluster class
shaped_cluster.py's, the goodput measurement netns_throughput.py's.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from netns_links import (
    INTERFACE,
    PREFIX,
    ClusterError,
    cluster_namespaces,
    delete_namespaces,
    list_namespaces,
    namespace_pids,
    netns_unavailable_reason,
    parse_rate,
    remove_all,
    tbf_burst_bytes,
)
from netns_throughput import measure_throughput
from shaped_cluster import NetnsCluster, Node

__all__ = [
    "INTERFACE",
    "PREFIX",
    "ClusterError",
    "NetnsCluster",
    "Node",
    "cluster_namespaces",
    "delete_namespaces",
    "list_namespaces",
    "measure_throughput",
    "namespace_pids",
    "netns_unavailable_reason",
    "parse_rate",
    "remove_all",
    "tbf_burst_bytes",
]


@contextlib.contextmanager
def _interrupt_as_exit() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _command_up(args: argparse.Namespace) -> int:
    cluster = NetnsCluster(args.nodes, args.rate, args.name)
    cluster.up()
    atexit.unregister(cluster.down)  # `up` leaves it running on purpose
    print(json.dumps(cluster.describe(), indent=2))
    print(f"tear down with: {sys.argv[0]} down --name {cluster.name}", file=sys.stderr)
    return 0


def _command_down(args: argparse.Namespace) -> int:
    removed = delete_namespaces(cluster_namespaces(args.name)) if args.name else remove_all()
    print("\n".join(f"deleted {name}" for name in removed) or "no dsgdbench namespaces")
    return 0


def _command_list(_args: argparse.Namespace) -> int:
    print("\n".join(list_namespaces()) or "no dsgdbench namespaces")
    return 0


def _command_measure(args: argparse.Namespace) -> int:
    with NetnsCluster(2, args.rate, args.name) as cluster:
        goodput = measure_throughput(cluster, seconds=args.seconds)
    ratio = goodput / cluster.rate_bits
    print(
        json.dumps(
            {"rate": args.rate, "goodput_bits_per_second": goodput, "ratio_to_rate": ratio},
            indent=2,
        )
    )
    return 0 if 0.8 <= ratio <= 1.2 else 1


def _command_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ClusterError("run: give the command after `--`")
    with NetnsCluster(args.nodes, args.rate, args.name) as cluster:
        processes = []
        for node in range(args.nodes):
            env = {**os.environ, **cluster.node_env(node, args.master_port)}
            processes.append(subprocess.Popen(cluster.exec_argv(node, command), env=env))
        codes = [process.wait() for process in processes]
    return next((code for code in codes if code != 0), 0)


def _command_job(args: argparse.Namespace) -> int:
    """One job's pods across a shaped cluster; its figures and each member's link bytes."""
    # Imported here: job_runner imports the cluster's modules (and dsgd's, and torch's).
    from dsgd_operator.local_run import member_label
    from dsgd_operator.manifest import ManifestError, load_jobs
    from job_runner import JobFailed, run_job

    try:
        jobs = load_jobs(args.manifest)
    except ManifestError as error:
        raise ClusterError(str(error)) from None
    if len(jobs) != 1:
        raise ClusterError(f"{args.manifest}: holds {len(jobs)} jobs; give a file with one")
    (job,) = jobs
    topology = job.spec.topology
    members = topology.gang_members
    out = Path(args.out or tempfile.mkdtemp(prefix="dsgdbench-job-"))
    with NetnsCluster(members, args.rate, args.name) as cluster:
        before = [cluster.interface_bytes(m) for m in range(members)]
        try:
            result = run_job(
                job.spec.training_config(), out, cluster, job.name, args.timeout, args.echo
            )
        except JobFailed as error:
            raise ClusterError(str(error)) from None
        after = [cluster.interface_bytes(m) for m in range(members)]
    summary = result.summary
    links = {}
    for member, ((tx0, rx0), (tx1, rx1)) in enumerate(zip(before, after, strict=True)):
        links[member_label(topology.nodes, member)] = {
            "sent_bytes": tx1 - tx0,
            "received_bytes": rx1 - rx0,
            # Over the whole run, start-up included: a lower bound of the rate while sending.
            "sent_bits_per_second": (tx1 - tx0) * 8 / result.seconds,
        }
    report = {
        "job": job.name,
        "algorithm": summary["algorithm"],
        "rate": cluster.rate,
        "rate_bits_per_second": cluster.rate_bits,
        "seconds": result.seconds,
        "wall_seconds": summary["wall_seconds"],
        "samples_per_second": summary["samples_per_second"],
        "final_test_accuracy": summary["final_test_accuracy"],
        "sync_rounds": summary["sync_rounds"],
        "rank0_communicated_bytes_by_scope": summary["communicated_bytes_by_scope"],
        "links": links,
        "out": str(out),
        "exit_code": result.exit_code,
        "warning": result.warning,
    }
    print(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netns_cluster.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="action", required=True)
    up = commands.add_parser("up", help="create a cluster and leave it up")
    run = commands.add_parser("run", help="create a cluster, run CMD on every node, tear down")
    for sub in (up, run):
        sub.add_argument("--nodes", type=int, required=True)
        sub.add_argument("--rate", required=True, help="tc rate of each node's link, e.g. 50mbit")
        sub.add_argument("--name", help="cluster name (default: this process's id)")
    run.add_argument("--master-port", type=int, default=29500)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARG...")
    job = commands.add_parser(
        "job", help="run a DistributedSGDJob manifest across a cluster, one node per gang member"
    )
    job.add_argument("manifest", help="a YAML file with one DistributedSGDJob")
    job.add_argument("--rate", required=True, help="tc rate of each member's link, e.g. 50mbit")
    job.add_argument("--name", help="cluster name (default: this process's id)")
    job.add_argument("--out", help="the run's directory (default: a new temporary one)")
    job.add_argument("--timeout", type=float, default=1800.0, help="seconds (default 1800)")
    job.add_argument("--echo", action="store_true", help="print the job's output as it runs")
    measure = commands.add_parser("measure", help="measure the goodput of a shaped link")
    measure.add_argument("--rate", required=True)
    measure.add_argument("--seconds", type=float, default=2.0)
    measure.add_argument("--name")
    down = commands.add_parser("down", help="delete a cluster, or every dsgdbench-* namespace")
    down.add_argument("--name", help="only this cluster")
    commands.add_parser("list", help="list dsgdbench-* namespaces")
    args = parser.parse_args(argv)
    handlers = {
        "up": _command_up,
        "down": _command_down,
        "list": _command_list,
        "measure": _command_measure,
        "run": _command_run,
        "job": _command_job,
    }
    try:
        with _interrupt_as_exit():
            return handlers[args.action](args)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
