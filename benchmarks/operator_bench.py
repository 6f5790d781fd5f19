"""Operator benchmark against the emulated API server (kmock): latency, requests, memory.

Run from the repository root:  python benchmarks/operator_bench.py [--jobs 100] [--nodes 16]

The operator runs as it is deployed: its own process (`run_operator`, production
options apart from the ports), talking HTTP to the emulator in this process.
Measured:

1. time from a job's creation (the API server's answer to the POST) to its
   last pod's creation request, for one 16-node job (repeated) and for N jobs
   submitted at once: p50 / p99;
2. API requests per job, by kind, next to the minimum (one POST per child
   object plus one status patch);
3. the operator process's resident memory, idle and with N jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests._kmock_cluster import (  # noqa: E402
    JOBS,
    Cluster,
    emulated_cluster,
    job_spec,
    write_kubeconfig,
)

RUN_OPERATOR = (
    "import sys\n"
    "from dsgd_operator.reconcile import OperatorOptions, run_operator\n"
    "sys.exit(run_operator(OperatorOptions.from_env()))\n"
)


class _Patch:
    """monkeypatch's two methods, outside pytest."""

    def __init__(self) -> None:
        self._undo: list = []

    def setattr(self, target, name, value) -> None:
        self._undo.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def delenv(self, name, raising=True) -> None:
        os.environ.pop(name, None)

    def undo(self) -> None:
        for target, name, value in reversed(self._undo):
            setattr(target, name, value)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def wait_until(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        await asyncio.sleep(0.01)


async def submit(cluster: Cluster, names: list[str], nodes: int) -> dict[str, float]:
    """Create the jobs concurrently; returns when the API server accepted each one."""

    async def one(name: str) -> tuple[str, float]:
        await cluster.create_job(name, job_spec(nodes))
        return name, time.perf_counter()

    return dict(await asyncio.gather(*(one(name) for name in names)))


def latencies(cluster: Cluster, accepted: dict[str, float], nodes: int) -> list[float]:
    done: dict[str, float] = {}
    for name, when in cluster.api.pod_creations:
        job = name.rsplit("-node-", 1)[0]
        done[job] = max(done.get(job, 0.0), when)
    return [done[name] - accepted[name] for name in accepted]


def all_created(cluster: Cluster, names: list[str], nodes: int) -> bool:
    counts = Counter(name.rsplit("-node-", 1)[0] for name, _ in cluster.api.pod_creations)
    return all(counts[name] >= nodes for name in names)


def request_breakdown(cluster: Cluster, since: int) -> Counter:
    kinds: Counter = Counter()
    for method, path, _ in cluster.api.calls[since:]:
        if "watch" in path:
            continue
        if path.endswith("/status") and JOBS.split("/")[-1] in path:
            kinds["PATCH job status"] += 1
        elif "distributedsgdjobs" in path and method == "PATCH":
            kinds["PATCH job (kopf: finalizer, annotations)"] += 1
        elif "distributedsgdjobs" in path:
            kinds[f"{method} jobs"] += 1
        else:
            kinds[f"{method} {path.rstrip('/').rsplit('/', 1)[-1]}"] += 1
    return kinds


async def main(args: argparse.Namespace) -> None:
    patch = _Patch()
    with tempfile.TemporaryDirectory() as tmp:
        async with emulated_cluster(Path(tmp), patch) as cluster:
            _record_pod_creations(cluster)
            kubeconfig = Path(tmp) / "kubeconfig"
            write_kubeconfig(kubeconfig, cluster.url)
            env = {
                **os.environ,
                "KUBECONFIG": str(kubeconfig),
                "DSGD_METRICS_PORT": "0",
                "DSGD_LIVENESS_PORT": "0",
            }
            log = (Path(args.log) if args.log else Path(tmp) / "operator.log").open("wb")
            operator = subprocess.Popen(
                [sys.executable, "-c", RUN_OPERATOR], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                # Ready when kopf lists the jobs (imports and start-up take seconds).
                await wait_until(
                    lambda: any(
                        "distributedsgdjobs" in p and m == "GET" for m, p, _ in cluster.api.calls
                    ),
                    120,
                )
                await asyncio.sleep(0.5)
                idle_rss = rss_mib(operator.pid)

                single: list[float] = []
                for run in range(args.repeat):
                    name = f"single-{run}"
                    accepted = await submit(cluster, [name], args.nodes)
                    await wait_until(lambda n=name: all_created(cluster, [n], args.nodes), 60)
                    single += latencies(cluster, accepted, args.nodes)
                await asyncio.sleep(1)

                since = len(cluster.api.calls)
                names = [f"many-{i:03d}" for i in range(args.jobs)]
                cpu_before = cpu_seconds(operator.pid), cpu_seconds(os.getpid())
                started = time.perf_counter()
                accepted = await submit(cluster, names, args.many_nodes)
                await wait_until(lambda: all_created(cluster, names, args.many_nodes), 300)
                burst = time.perf_counter() - started
                operator_cpu = cpu_seconds(operator.pid) - cpu_before[0]
                emulator_cpu = cpu_seconds(os.getpid()) - cpu_before[1]
                many = latencies(cluster, accepted, args.many_nodes)
                await asyncio.sleep(3)  # let status patches and events settle
                busy_rss = rss_mib(operator.pid)
                breakdown = request_breakdown(cluster, since)
            finally:
                operator.send_signal(signal.SIGTERM)
                await asyncio.to_thread(operator.wait, 60)
    patch.undo()

    def show(title: str, values: list[float]) -> None:
        print(
            f"{title}: p50 {statistics.median(values) * 1000:.0f} ms, "
            f"p99 {percentile(values, 99) * 1000:.0f} ms (n={len(values)})"
        )

    print(f"== operator benchmark against kmock ({os.cpu_count()} CPUs) ==")
    show(f"1 job × {args.nodes} nodes, creation → all pods created", single)
    show(f"{args.jobs} jobs × {args.many_nodes} nodes at once, creation → all pods created", many)
    print(
        f"  burst of {burst:.1f} s: CPU {operator_cpu:.1f} s in the operator, "
        f"{emulator_cpu:.1f} s in the emulator (and this script)"
    )
    # The user's own POST of each job is not the operator's doing.
    total = sum(count for kind, count in breakdown.items() if kind != "POST jobs")
    minimum = 2 + args.many_nodes + 1
    print(
        f"operator API requests per job (watches excluded): {total / args.jobs:.1f}; "
        f"minimum {minimum} (Service + ConfigMap + {args.many_nodes} pods + 1 status patch)"
    )
    for kind, count in breakdown.most_common():
        if kind == "POST jobs":
            continue
        print(f"  {kind:45s} {count / args.jobs:6.2f} per job")
    print(
        f"operator RSS: idle {idle_rss:.0f} MiB, with {args.jobs} jobs "
        f"({args.jobs * args.many_nodes} pods) {busy_rss:.0f} MiB"
    )


def _record_pod_creations(cluster: Cluster) -> None:
    """Log (pod name, arrival time) of each pod POST, as the emulator receives it."""
    emulator = cluster.api
    emulator.pod_creations = []
    original = emulator._handle

    async def handle(request):
        if request.method.value.upper() == "POST" and request.url.path.endswith("/pods"):
            name = (request.data or {}).get("metadata", {}).get("name", "")
            emulator.pod_creations.append((name, time.perf_counter()))
        return await original(request)

    emulator._handle = handle


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16, help="nodes of the single job")
    parser.add_argument("--repeat", type=int, default=20, help="single-job repetitions")
    parser.add_argument("--jobs", type=int, default=100, help="jobs submitted at once")
    parser.add_argument("--many-nodes", type=int, default=4, help="nodes of each of those")
    parser.add_argument("--log", help="write the operator's log here")
    asyncio.run(main(parser.parse_args()))
