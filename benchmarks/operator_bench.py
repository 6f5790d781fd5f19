"""Operator benchmark on the real control plane, against the server's own limit.

Run from the repository root:  python benchmarks/operator_bench.py [--jobs 100] [--nodes 16]

A local cluster (dsgd_cluster: etcd, kube-apiserver, controller manager; no nodes,
so pods stay Pending and nothing trains) serves both sides. Its scheduler and node
agent are stopped: with no node, the scheduler would only retry the 12,800 pending
pods of the bursts over and over, a third of a core of this 2-core machine
that neither side is answerable for (measured: the steady phase's p99 of the bare
client too went from a few hundred milliseconds to seconds).

- the operator, as deployed: its own process (`dsgd operator`), authenticated as
  a ServiceAccount of its own;
- the anchor: a bare Kubernetes client (16 threads, another ServiceAccount)
  creating the very objects the operator creates — per job, the job, then its
  Service, ConfigMap and pods with ownerReferences, then one status patch —
  the fastest this server on this machine takes them.

Measured, by the API server's audit log (the oracle for what each client really
sent, and the clock: job accepted → last pod created, server timestamps): that
time (p50/p99) for one 16-node job, for a burst of N jobs and at a steady rate
(with where it went: the operator reacting, its requests); the burst's throughput
against the bare client's, in rounds taken in turn (ABBA) on a settled control
plane, median ratio; API requests per job (watches excluded) against the minimum;
the operator's resident memory.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from api_audit import AuditLog, JobTimes, audit_policy
from bare_client import BARE_NAMESPACE, GROUP, PLURAL, VERSION, bare_client_job, job_manifest
from dsgd_cluster.control_plane import ClusterInfo, down, status, up
from dsgd_cluster.daemons import stop_daemon
from dsgd_cluster.kubeconfig import write_kubeconfig
from dsgd_operator.builders import build_children
from dsgd_operator.local_gang import parent_death_signal
from dsgd_operator.manifest import parse_job
from kubernetes import client, config

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "dsgd-bench"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:operator"
BARE_USER = f"system:serviceaccount:{NAMESPACE}:bare"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_account_kubeconfig(info: ClusterInfo, api: client.ApiClient, name: str) -> Path:
    """A kubeconfig for a cluster-admin ServiceAccount `name` (its own audit identity)."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(NAMESPACE, {"metadata": {"name": name}})
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": f"bench-{name}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        }
    )
    token = core.create_namespaced_service_account_token(
        name, NAMESPACE, {"spec": {"expirationSeconds": 7200}}
    ).status.token
    return write_kubeconfig(
        info.root / f"{name}.kubeconfig",
        info.server,
        info.root / "pki" / "ca.crt",
        user=name,
        token=token,
    )


def submit(
    custom: client.CustomObjectsApi,
    namespace: str,
    names: list[str],
    nodes: int,
    pool: ThreadPoolExecutor,
) -> None:
    """Create the jobs concurrently (the audit log records when each was accepted)."""

    def one(name: str) -> None:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, job_manifest(name, nodes)
        )

    list(pool.map(one, names))


def at_steady_rate(names: list[str], rate: float, start: Callable[[str], Any]) -> None:
    """Call `start(name)` for each of `names` at `rate` per second, on the clock (a slow
    call delays the next one only by its own overrun)."""
    origin = time.perf_counter()
    for index, name in enumerate(names):
        time.sleep(max(0.0, origin + index / rate - time.perf_counter()))
        start(name)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by the processes `pids` (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], audit: AuditLog, timeout: float = 120.0) -> float:
    """Wait until `pids` together use under a tenth of a core and the audit log gains no
    write, for 2 s running (a burst's aftermath, the operator's status patches, the
    controllers included, is over); returns the seconds waited."""
    started = time.perf_counter()
    quiet = 0
    while quiet < 2 and time.perf_counter() - started < timeout:
        cpu, writes = cpu_seconds(pids), audit.writes()
        time.sleep(1.0)
        idle = cpu_seconds(pids) - cpu < 0.1 and audit.writes() == writes
        quiet = quiet + 1 if idle else 0
    return time.perf_counter() - started


def show(title: str, values: list[float]) -> str:
    return (
        f"{title}: p50 {statistics.median(values) * 1000:.0f} ms, "
        f"p99 {percentile(values, 99) * 1000:.0f} ms (n={len(values)})"
    )


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy = root / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(audit_policy([OPERATOR_USER, BARE_USER], (GROUP, PLURAL))))
        info = up(root / "cluster", nodes=0, tie_to_caller=True, audit_policy=policy)
        for idle in ("kube-scheduler", "node-agent"):  # nothing to schedule or run (above)
            stop_daemon(info.root, idle)
        try:
            run(info, args, root)
        finally:
            down(root / "cluster")


def install_crds(info: ClusterInfo) -> None:
    kubectl = [str(info.binary("kubectl")), f"--kubeconfig={info.kubeconfig}"]
    for verb in (["apply", "--server-side"], ["wait", "--for=condition=Established"]):
        subprocess.run([*kubectl, *verb, "-f", str(REPO / "crds")], check=True, capture_output=True)


def start_operator(kubeconfig: Path, log: Path, profile: str | None = None) -> subprocess.Popen:
    """`dsgd operator` serving NAMESPACE, as deployed, logging to `log`; under cProfile,
    writing its statistics to `profile` when it stops, if given."""
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    return subprocess.Popen(
        [
            sys.executable,
            *profiler,
            "-m",
            "dsgd_operator.cli",
            "operator",
            "--namespace",
            NAMESPACE,
            "--liveness-port",
            str(free_port()),
            "--metrics-port",
            "0",
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        # Killed with us, even by SIGKILL (a timed-out smoke test), like the cluster's daemons.
        preexec_fn=parent_death_signal(signal.SIGKILL),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def breakdown(times: dict[str, JobTimes]) -> dict[str, list[float]]:
    """Where each job's creation → all pods time went, by the server's timestamps: the
    operator reacting (job accepted → its first request for the job received) and its
    requests (→ the last pod created)."""
    return {
        "react": [t.first_request - t.accepted for t in times.values()],
        "requests": [t.last_pod_created - t.first_request for t in times.values()],
    }


def run(info: ClusterInfo, args: argparse.Namespace, root: Path) -> None:
    admin = config.new_client_from_config(config_file=str(info.kubeconfig))
    core = client.CoreV1Api(admin)
    for namespace in (NAMESPACE, BARE_NAMESPACE):
        core.create_namespace({"metadata": {"name": namespace}})
    install_crds(info)
    operator_kubeconfig = service_account_kubeconfig(info, admin, "operator")
    bare = config.new_client_from_config(
        config_file=str(service_account_kubeconfig(info, admin, "bare"))
    )
    custom = client.CustomObjectsApi(admin)
    audit = AuditLog(info.audit_log)
    operator = start_operator(
        operator_kubeconfig, Path(args.log or root / "operator.log"), args.profile
    )
    quiet = [*(pid for pid in status(info.root).values() if pid is not None), operator.pid]
    pool = ThreadPoolExecutor(16)
    results: dict = {"bursts": [], "requests": Counter()}
    try:
        # Warm-up: imports, kopf's start, the first watch. Not measured.
        submit(custom, NAMESPACE, ["warm-up"], 2, pool)
        audit.wait(["warm-up"], 2, 180)
        results["idle_rss"] = rss_mib(operator.pid)

        results["single"] = []
        for index in range(args.repeat):
            name = f"single-{index:02d}"
            submit(custom, NAMESPACE, [name], args.nodes, pool)
            results["single"].append(audit.wait([name], args.nodes, 60)[name].creation_to_pods)

        # Bursts, operator and bare client in turn (ABBA order over rounds), each from the
        # first job accepted to the last pod created, on a settled control plane.
        for round_index in range(args.rounds):
            order = ("operator", "bare") if round_index % 2 == 0 else ("bare", "operator")
            seconds: dict[str, float] = {}
            for side in order:
                settle(quiet, audit, args.settle_timeout)
                names = [f"{side[:2]}{round_index}-{i:03d}" for i in range(args.jobs)]
                start = audit.position()
                if side == "operator":
                    submit(custom, NAMESPACE, names, args.nodes, pool)
                else:
                    list(pool.map(lambda n: bare_client_job(bare, n, args.nodes), names))
                times = audit.wait(names, args.nodes, 600)
                seconds[side] = max(t.last_pod_created for t in times.values()) - min(
                    t.accepted for t in times.values()
                )
                if side == "operator":
                    results["burst_latency"] = [t.creation_to_pods for t in times.values()]
                    # The burst's requests: until 3 s after its last pod (its status patches
                    # and events come right after), not the periodic resync lists of every
                    # job that a long settling would add.
                    time.sleep(3)
                    results["requests"] += audit.requests_by_kind(
                        OPERATOR_USER, start, audit.position()
                    )
                    settle(quiet, audit, args.settle_timeout)
                    results["busy_rss"] = rss_mib(operator.pid)
            results["bursts"].append(seconds)

        # The steady rate: the operator's jobs, then the bare client's (the server's own
        # latency under the same load: the bursts' jobs and pods are still there).
        results["settle"] = settle(quiet, audit, args.settle_timeout)
        names = [f"steady-{i:03d}" for i in range(args.steady_jobs)]
        at_steady_rate(names, args.rate, lambda n: submit(custom, NAMESPACE, [n], args.nodes, pool))
        times = audit.wait(names, args.nodes, 300)
        results["steady"] = [t.creation_to_pods for t in times.values()]
        results["steady_parts"] = breakdown(times)
        settle(quiet, audit, args.settle_timeout)
        names = [f"bs-{i:03d}" for i in range(args.steady_jobs)]
        at_steady_rate(
            names, args.rate, lambda n: pool.submit(bare_client_job, bare, n, args.nodes)
        )
        times = audit.wait(names, args.nodes, 300)
        results["bare_steady"] = [t.creation_to_pods for t in times.values()]
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(60)
        pool.shutdown()
    report(args, results)


def report(args: argparse.Namespace, results: dict) -> None:
    print(f"== operator benchmark on the real control plane ({os.cpu_count()} CPUs) ==")
    print(show(f"1 job × {args.nodes} nodes, creation → all pods created", results["single"]))
    print(
        show(f"burst of {args.jobs} jobs × {args.nodes} nodes", results["burst_latency"])
        + " (the last round)"
    )
    ratios = []
    for index, seconds in enumerate(results["bursts"]):
        operator_rate, bare_rate = args.jobs / seconds["operator"], args.jobs / seconds["bare"]
        ratios.append(operator_rate / bare_rate)
        print(
            f"  burst round {index + 1}: operator {operator_rate:.2f} jobs/s "
            f"({seconds['operator']:.1f} s), bare client {bare_rate:.2f} jobs/s "
            f"({seconds['bare']:.1f} s): {ratios[-1]:.2f}×"
        )
    print(
        f"  burst throughput: {statistics.median(ratios):.2f}× the bare client "
        f"(median of {len(ratios)} rounds; goal ≥ 0.8×)"
    )
    print(
        show(f"steady {args.rate:g} jobs/s × {args.steady_jobs} jobs", results["steady"])
        + " (goal p99 < 1 s; started once the bursts' aftermath settled, "
        f"after {results['settle']:.0f} s)"
    )
    for part, values in results["steady_parts"].items():
        if values:
            print("  " + show(part, values))
    print(
        "  "
        + show("the bare client at the same rate", results["bare_steady"])
        + " (the server's own latency under this load; its pods are created one by one)"
    )
    requests, rounds = results["requests"], len(results["bursts"])
    jobs = args.jobs * rounds
    total = sum(requests.values())
    # One create per object the builders make (what the bare client sends) + 1 status patch.
    kinds = Counter(obj["kind"] for obj in build_children(parse_job(job_manifest("j", args.nodes))))
    made = " + ".join(f"{count} {kind}" for kind, count in kinds.items())
    minimum = sum(kinds.values()) + 1
    print(
        f"operator API requests per job (audit log, watches excluded): "
        f"{total / jobs:.1f}; minimum {minimum} ({made} + 1 status patch; "
        "goal ≤ minimum + 2)"
    )
    for kind, count in requests.most_common():
        print(f"  {kind:50s} {count / jobs:6.2f} per job")
    print(
        f"operator RSS: idle {results['idle_rss']:.0f} MiB, after the bursts "
        f"({jobs * args.nodes} pods) {results['busy_rss']:.0f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16, help="nodes (pods) of every job")
    parser.add_argument("--repeat", type=int, default=10, help="single-job repetitions")
    parser.add_argument("--jobs", type=int, default=100, help="jobs in each burst")
    parser.add_argument("--rounds", type=int, default=4, help="bursts of each side, interleaved")
    parser.add_argument("--rate", type=float, default=2.0, help="jobs/s of the steady phase")
    parser.add_argument("--steady-jobs", type=int, default=100, help="jobs of the steady phase")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=120.0,
        help="longest wait (s) for the control plane to settle before each phase",
    )
    parser.add_argument("--log", help="write the operator's log here")
    parser.add_argument(
        "--profile", help="run the operator under cProfile, its statistics written here"
    )
    main(parser.parse_args())
