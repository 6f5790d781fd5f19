"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, controller
manager, scheduler and the node agent, each a process of its own.

Everything lives in one cluster directory (`.cluster/` for `make cluster`, a
temporary one in tests): `pki/`, the kubeconfigs, `etcd/`, `logs/`, `pids/` and
`state.json` with the ports in use. `up()` is idempotent: a directory whose
components all still run is left alone; otherwise every component is (re)started.
`down()` stops every process `up()` started.

The API server runs with what a kubeadm cluster has on and envtest leaves off:
RBAC and Node authorization, ServiceAccount token issuing (the controller
manager mints tokens with the matching key), the default admission chain
including PodSecurity and ResourceQuota, plus NodeRestriction.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dsgd_cluster import pod_network
from dsgd_cluster.daemons import running_pid, start_daemon, stop_daemon
from dsgd_cluster.kubeconfig import write_kubeconfig
from dsgd_cluster.pki import Pki, ensure_pki

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "build.sh"
#: Start order; `down()` stops in reverse.
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "node-agent",
)
READY_TIMEOUT = 120.0
SERVICE_CIDR = "10.96.0.0/16"
ISSUER = "https://kubernetes.default.svc.cluster.local"


class ClusterError(RuntimeError):
    """A component failed to start; the message names it and its log."""


@dataclass(frozen=True)
class ClusterInfo:
    """What a client needs: the admin kubeconfig, the server URL and the binaries."""

    root: Path
    server: str
    binaries: Path

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (written only when `up()` got an audit policy)."""
        return self.root / "logs" / "audit.log"

    def binary(self, name: str) -> Path:
        return self.binaries / name


def run_build_script(script: Path, what: str) -> Path:
    """Run a build script that prints its cache directory last; its progress goes to stderr.
    ClusterError naming `what` and the script when it fails."""
    result = subprocess.run(
        ["bash", str(script)], stdout=subprocess.PIPE, stderr=sys.stderr, text=True
    )
    if result.returncode != 0:
        raise ClusterError(f"building {what} failed ({script}); see above")
    return Path(result.stdout.strip().splitlines()[-1])


def build_binaries() -> Path:
    """The directory of built binaries (cluster/build.sh; cached per machine)."""
    return run_build_script(BUILD_SCRIPT, "the control plane")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _https_ok(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(root: Path, name: str, url: str, context: ssl.SSLContext | None = None) -> None:
    """Return once `url` answers 200; ClusterError when daemon `name` exits or after
    READY_TIMEOUT, naming its log."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if running_pid(root, name) is None:
            raise ClusterError(f"{name} exited; see {root / 'logs' / (name + '.log')}")
        if context is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
        elif _https_ok(url, context):
            return
        time.sleep(0.2)
    raise ClusterError(
        f"{name} not ready at {url} after {READY_TIMEOUT:.0f} s; "
        f"see {root / 'logs' / (name + '.log')}"
    )


def _admin_tls(pki: Pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(pki.client_cert("admin")), str(pki.client_key("admin")))
    return context


def _component_tls() -> ssl.SSLContext:
    # The controller manager and scheduler serve /healthz with a self-signed cert.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def status(root: Path) -> dict[str, int | None]:
    """Each component's pid, or None when it does not run."""
    return {name: running_pid(root, name) for name in COMPONENTS}


def up(
    root: Path,
    nodes: int = 4,
    gpus_per_node: int = 0,
    tie_to_caller: bool = False,
    audit_policy: Path | None = None,
) -> ClusterInfo:
    """Start (or keep) the cluster in `root`; return how to reach it once it is ready.

    A cluster whose every component still runs is kept as it is: `nodes`,
    `gpus_per_node` and `audit_policy` apply when it is (re)started (`down` first).

    `tie_to_caller`: every component gets SIGKILL when the calling process dies,
    even by SIGKILL (a test session that is killed leaves nothing behind).
    `audit_policy`: an audit.k8s.io Policy file; the API server then writes its
    audit events as JSON lines to `ClusterInfo.audit_log` (the oracle for what a
    client really asked the server).
    """
    root = root.resolve()
    state_file = root / "state.json"
    if state_file.exists() and all(pid is not None for pid in status(root).values()):
        state = json.loads(state_file.read_text())
        return ClusterInfo(root, state["server"], Path(state["binaries"]))
    down(root)  # a partly running cluster restarts whole, on its old data

    binaries = build_binaries()
    start = partial(start_daemon, root, tie_to_caller=tie_to_caller)
    pki = ensure_pki(root / "pki")
    ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "cm", "sched")}
    server = f"https://127.0.0.1:{ports['apiserver']}"
    info = ClusterInfo(root, server, binaries)
    kubeconfigs = {
        client: write_kubeconfig(
            root / f"{client}.kubeconfig",
            server,
            pki.ca_cert,
            user=client,
            cert_file=pki.client_cert(client),
            key_file=pki.client_key(client),
        )
        for client in ("controller-manager", "scheduler", "node-agent")
    }
    write_kubeconfig(
        info.kubeconfig,
        server,
        pki.ca_cert,
        user="admin",
        cert_file=pki.client_cert("admin"),
        key_file=pki.client_key("admin"),
    )

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    start(
        "etcd",
        [
            str(info.binary("etcd")),
            f"--data-dir={root / 'etcd'}",
            f"--listen-client-url={etcd_url}",
            f"--listen-peer-url=http://127.0.0.1:{ports['etcd-peer']}",
        ],
    )
    wait_ready(root, "etcd", f"{etcd_url}/health")

    start(
        "kube-apiserver",
        [
            str(info.binary("kube-apiserver")),
            *_apiserver_flags(root, pki, etcd_url, ports["apiserver"]),
            *(
                [
                    f"--audit-policy-file={audit_policy}",
                    f"--audit-log-path={info.audit_log}",
                    "--audit-log-format=json",
                    "--audit-log-maxsize=0",
                ]
                if audit_policy is not None
                else []
            ),
        ],
    )
    wait_ready(root, "kube-apiserver", f"{server}/readyz", _admin_tls(pki))

    start(
        "kube-controller-manager",
        [
            str(info.binary("kube-controller-manager")),
            *_kube_client_flags(kubeconfigs["controller-manager"]),
            f"--secure-port={ports['cm']}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            "--use-service-account-credentials=true",
            # No cloud, no pod CIDRs to hand out: the node agent owns pod IPs.
            "--controllers=*,-nodeipam",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ],
    )
    start(
        "kube-scheduler",
        [
            str(info.binary("kube-scheduler")),
            *_kube_client_flags(kubeconfigs["scheduler"]),
            f"--secure-port={ports['sched']}",
        ],
    )
    wait_ready(
        root,
        "kube-controller-manager",
        f"https://127.0.0.1:{ports['cm']}/healthz",
        _component_tls(),
    )
    wait_ready(
        root, "kube-scheduler", f"https://127.0.0.1:{ports['sched']}/healthz", _component_tls()
    )

    start(
        "node-agent",
        [
            sys.executable,
            "-m",
            "dsgd_cluster.node_agent",
            f"--kubeconfig={kubeconfigs['node-agent']}",
            f"--workdir={root / 'pods'}",
            f"--nodes={nodes}",
            f"--gpus-per-node={gpus_per_node}",
            f"--pod-network={pod_network.ensure()}",
            f"--ca-file={pki.ca_cert}",
            f"--server={server}",
        ],
    )
    _wait_nodes_ready(info, nodes)

    state_file.write_text(
        json.dumps({"server": server, "binaries": str(binaries), "ports": ports}, indent=2)
    )
    return info


def _kube_client_flags(kubeconfig: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        "--leader-elect=false",
    ]


def _apiserver_flags(root: Path, pki: Pki, etcd_url: str, port: int) -> list[str]:
    return [
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={root / 'pki'}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        # PodSecurity, ServiceAccount, ResourceQuota, LimitRanger … are on by default.
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        # The `kubernetes` Service's endpoints would be a loopback address, which
        # Endpoints validation refuses; nothing in the cluster dials it anyway.
        "--endpoint-reconciler-type=none",
        f"--kubelet-client-certificate={pki.client_cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={pki.client_key('apiserver-kubelet-client')}",
        "--profiling=false",
    ]


def _wait_nodes_ready(info: ClusterInfo, nodes: int) -> None:
    kubectl = [str(info.binary("kubectl")), f"--kubeconfig={info.kubeconfig}"]
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if running_pid(info.root, "node-agent") is None:
            raise ClusterError(f"node-agent exited; see {info.root / 'logs' / 'node-agent.log'}")
        result = subprocess.run(
            [
                *kubectl,
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode == 0 and result.stdout.split().count("True") >= nodes:
            return
        time.sleep(0.5)
    raise ClusterError(f"{nodes} nodes not Ready after {READY_TIMEOUT:.0f} s")


def down(root: Path) -> list[str]:
    """Stop every component of the cluster in `root` (its monitoring first, if it was
    started); return the names that ran."""
    from dsgd_cluster.monitoring import down_monitoring  # it builds on this module

    root = root.resolve()
    stopped = down_monitoring(root)
    stopped += [name for name in reversed(COMPONENTS) if stop_daemon(root, name)]
    pod_network.release()
    return stopped
