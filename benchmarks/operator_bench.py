"""Operator benchmark on the real control plane, against the server's own limit.

Run from the repository root:  python benchmarks/operator_bench.py [--jobs 100] [--nodes 16]

A local cluster (dsgd_cluster: etcd, kube-apiserver, controller manager,
scheduler; no nodes, so pods stay Pending and nothing trains) serves both sides:

- the operator, as deployed: its own process (`dsgd operator`), authenticated as
  a ServiceAccount of its own;
- the anchor: a bare Kubernetes client (16 threads, another ServiceAccount)
  creating the very objects the operator creates — per job, the job, then its
  Service, ConfigMap and pods with ownerReferences, then one status patch —
  the fastest this server on this machine takes them.

Measured: creation → all pods created (p50/p99) for one 16-node job, for a
burst of N jobs, and at a steady rate; throughput of the burst against the bare
client's; API requests per job from the API server's audit log (the oracle for
what the operator really sent; watches excluded) against the minimum; the
operator's resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from dsgd_cluster.control_plane import ClusterInfo, down, up
from dsgd_cluster.kubeconfig import write_kubeconfig
from dsgd_operator.builders import build_children
from dsgd_operator.manifest import parse_job
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parent.parent
NAMESPACE, BARE_NAMESPACE = "dsgd-bench", "dsgd-bench-bare"
GROUP, VERSION, PLURAL = "dsgd.io", "v1alpha1", "distributedsgdjobs"
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "users": [f"system:serviceaccount:{NAMESPACE}:operator"]},
        {"level": "None"},
    ],
}


def job_manifest(name: str, nodes: int) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name},
        "spec": {
            "topology": {"nodes": nodes},
            "algorithm": {"name": "local-sgd", "localSteps": 2},
            "optimizer": {"warmupEpochs": 0},
            "training": {"model": "mlp", "epochs": 2, "dataset": {"name": "synthetic"}},
        },
    }


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


class PodClock:
    """When each pod of a namespace first appeared, as a watch sees it."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.seen: set[str] = set()
        self.count: Counter = Counter()  # pods seen per job
        self.last: dict[str, float] = {}  # when each job's latest pod was seen
        self.nodes_of: dict[str, int] = {}  # pods each job will have
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(core, namespace), daemon=True)
        self._thread.start()

    def _run(self, core: client.CoreV1Api, namespace: str) -> None:
        while not self._stop.is_set():
            try:
                stream = watch.Watch().stream(
                    core.list_namespaced_pod, namespace, timeout_seconds=30
                )
                for event in stream:
                    name = event["object"].metadata.name
                    if name not in self.seen:
                        self.seen.add(name)
                        job = name.rsplit("-node-", 1)[0]
                        self.count[job] += 1
                        self.last[job] = time.perf_counter()
            except Exception:  # the server went away (the end) or the watch broke: again
                time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()

    def done(self, job: str) -> float | None:
        """When the last of `job`'s pods appeared, once all `nodes` have."""
        return self.last[job] if self.count[job] >= self.nodes_of[job] else None

    def wait(self, jobs: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            done = {job: self.done(job) for job in jobs}
            if all(done.values()):
                return done  # type: ignore[return-value]
            if time.monotonic() > deadline:
                missing = sum(1 for v in done.values() if v is None)
                raise TimeoutError(f"{missing} jobs still lack pods after {timeout:.0f} s")
            time.sleep(0.02)


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
) -> dict[str, float]:
    """Create the jobs concurrently; each one's time is when the server accepted it."""

    def one(name: str) -> tuple[str, float]:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, job_manifest(name, nodes)
        )
        return name, time.perf_counter()

    return dict(pool.map(one, names))


def bare_client_burst(api: client.ApiClient, jobs: int, nodes: int) -> float:
    """Seconds for a bare client to create `jobs` jobs and every child the operator makes."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)

    def one(index: int) -> None:
        manifest = job_manifest(f"bare-{index:03d}", nodes)
        created = custom.create_namespaced_custom_object(
            GROUP, VERSION, BARE_NAMESPACE, PLURAL, manifest
        )
        owner = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "DistributedSGDJob",
            "name": manifest["metadata"]["name"],
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        job = parse_job(
            {**manifest, "metadata": {**manifest["metadata"], "namespace": BARE_NAMESPACE}}
        )
        for child in build_children(job):
            child["metadata"]["ownerReferences"] = [owner]
            kind = child["kind"]
            if kind == "Service":
                core.create_namespaced_service(BARE_NAMESPACE, child)
            elif kind == "ConfigMap":
                core.create_namespaced_config_map(BARE_NAMESPACE, child)
            elif kind == "Pod":
                core.create_namespaced_pod(BARE_NAMESPACE, child)
        custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            BARE_NAMESPACE,
            PLURAL,
            manifest["metadata"]["name"],
            {"status": {"phase": "Pending"}},
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(jobs)))
    return time.perf_counter() - started


def operator_requests(audit_log: Path, since_line: int) -> Counter:
    """The operator's requests after `since_line` of the audit log, by verb and resource."""
    kinds: Counter = Counter()
    with audit_log.open() as log:
        for number, line in enumerate(log):
            if number < since_line:
                continue
            event = json.loads(line)
            verb = event["verb"]
            if verb == "watch":
                continue
            ref = event.get("objectRef") or {}
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            kinds[f"{verb} {ref.get('resource', event['requestURI'])}{sub}"] += 1
    return kinds


def line_count(path: Path) -> int:
    return sum(1 for _ in path.open()) if path.exists() else 0


def show(title: str, values: list[float]) -> str:
    return (
        f"{title}: p50 {statistics.median(values) * 1000:.0f} ms, "
        f"p99 {percentile(values, 99) * 1000:.0f} ms (n={len(values)})"
    )


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy = root / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        info = up(root / "cluster", nodes=0, tie_to_caller=True, audit_policy=policy)
        try:
            run(info, args, root)
        finally:
            down(root / "cluster")


def run(info: ClusterInfo, args: argparse.Namespace, root: Path) -> None:
    admin = config.new_client_from_config(config_file=str(info.kubeconfig))
    core = client.CoreV1Api(admin)
    for namespace in (NAMESPACE, BARE_NAMESPACE):
        core.create_namespace({"metadata": {"name": namespace}})
    subprocess.run(
        [
            str(info.binary("kubectl")),
            f"--kubeconfig={info.kubeconfig}",
            "apply",
            "--server-side",
            "-f",
            str(REPO / "crds"),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            str(info.binary("kubectl")),
            f"--kubeconfig={info.kubeconfig}",
            "wait",
            "--for=condition=Established",
            "-f",
            str(REPO / "crds"),
        ],
        check=True,
        capture_output=True,
    )
    operator_kubeconfig = service_account_kubeconfig(info, admin, "operator")
    bare_kubeconfig = service_account_kubeconfig(info, admin, "bare")
    custom = client.CustomObjectsApi(admin)
    clock = PodClock(core, NAMESPACE)
    log = (Path(args.log) if args.log else root / "operator.log").open("wb")
    operator = subprocess.Popen(
        [
            sys.executable,
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
        env={**os.environ, "KUBECONFIG": str(operator_kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    pool = ThreadPoolExecutor(16)
    try:
        # Warm-up: imports, kopf's start, the first watch. Not measured.
        clock.nodes_of["warm-up"] = 2
        submit(custom, NAMESPACE, ["warm-up"], 2, pool)
        clock.wait(["warm-up"], 180)
        idle_rss = rss_mib(operator.pid)

        single = []
        for run_index in range(args.repeat):
            name = f"single-{run_index:02d}"
            clock.nodes_of[name] = args.nodes
            accepted = submit(custom, NAMESPACE, [name], args.nodes, pool)
            single.append(clock.wait([name], 60)[name] - accepted[name])

        audit_start = line_count(info.audit_log)
        names = [f"burst-{i:03d}" for i in range(args.jobs)]
        clock.nodes_of.update(dict.fromkeys(names, args.nodes))
        started = time.perf_counter()
        accepted = submit(custom, NAMESPACE, names, args.nodes, pool)
        done = clock.wait(names, 600)
        burst_seconds = max(done.values()) - started
        burst = [done[n] - accepted[n] for n in names]
        time.sleep(3)  # status patches and events of the burst settle
        busy_rss = rss_mib(operator.pid)
        requests = operator_requests(info.audit_log, audit_start)

        names = [f"steady-{i:03d}" for i in range(args.steady_jobs)]
        clock.nodes_of.update(dict.fromkeys(names, args.nodes))
        steady_accepted: dict[str, float] = {}
        origin = time.perf_counter()
        for index, name in enumerate(names):
            time.sleep(max(0.0, origin + index / args.rate - time.perf_counter()))
            steady_accepted.update(submit(custom, NAMESPACE, [name], args.nodes, pool))
        done = clock.wait(names, 300)
        steady = [done[n] - steady_accepted[n] for n in names]
    finally:
        clock.stop()
        operator.send_signal(signal.SIGTERM)
        operator.wait(60)
        pool.shutdown()

    bare_seconds = bare_client_burst(
        config.new_client_from_config(config_file=str(bare_kubeconfig)), args.jobs, args.nodes
    )
    report(args, single, burst, burst_seconds, bare_seconds, steady, requests, idle_rss, busy_rss)


def report(
    args, single, burst, burst_seconds, bare_seconds, steady, requests, idle_rss, busy_rss
) -> None:
    print(f"== operator benchmark on the real control plane ({os.cpu_count()} CPUs) ==")
    print(show(f"1 job × {args.nodes} nodes, creation → all pods created", single))
    print(show(f"burst of {args.jobs} jobs × {args.nodes} nodes", burst))
    operator_rate, bare_rate = args.jobs / burst_seconds, args.jobs / bare_seconds
    print(
        f"  burst throughput: operator {operator_rate:.2f} jobs/s ({burst_seconds:.1f} s), "
        f"bare client {bare_rate:.2f} jobs/s ({bare_seconds:.1f} s): "
        f"{operator_rate / bare_rate:.2f}× the bare client (goal ≥ 0.8×)"
    )
    print(
        show(f"steady {args.rate:g} jobs/s × {args.steady_jobs} jobs", steady) + " (goal p99 < 1 s)"
    )
    total = sum(requests.values())
    # One create per object the builders make (what the bare client sends) + 1 status patch.
    kinds = Counter(obj["kind"] for obj in build_children(parse_job(job_manifest("j", args.nodes))))
    made = " + ".join(f"{count} {kind}" for kind, count in kinds.items())
    minimum = sum(kinds.values()) + 1
    print(
        f"operator API requests per job (audit log, watches excluded): "
        f"{total / args.jobs:.1f}; minimum {minimum} ({made} + 1 status patch; "
        "goal ≤ minimum + 2)"
    )
    for kind, count in requests.most_common():
        print(f"  {kind:50s} {count / args.jobs:6.2f} per job")
    print(
        f"operator RSS: idle {idle_rss:.0f} MiB, after the burst "
        f"({args.jobs * args.nodes} pods) {busy_rss:.0f} MiB"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16, help="nodes (pods) of every job")
    parser.add_argument("--repeat", type=int, default=10, help="single-job repetitions")
    parser.add_argument("--jobs", type=int, default=100, help="jobs in the burst")
    parser.add_argument("--rate", type=float, default=2.0, help="jobs/s of the steady phase")
    parser.add_argument("--steady-jobs", type=int, default=40, help="jobs of the steady phase")
    parser.add_argument("--log", help="write the operator's log here")
    main(parser.parse_args())
