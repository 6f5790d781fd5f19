"""Monitoring on the local cluster: the Prometheus Operator and the Prometheus it configures.

`up_monitoring` (`python -m dsgd_cluster monitoring`, `make cluster-monitoring`) adds three
daemons to a running cluster, in its directory like the control plane's:

- `prometheus-operator`: upstream's operator (cluster/monitoring.sh), reconciling
  Prometheus objects in MONITORING_NAMESPACE and the ServiceMonitors, PodMonitors and
  PrometheusRules of every namespace. It authenticates as the cluster's administrator
  with a client certificate, as the node agent does: off-cluster it has no other way
  (no token flag, and in-cluster mode reads the pod's token file).
- `prometheus-config`: dsgd_cluster.prometheus_config, doing what the operator's
  config-reloader sidecar does in a pod: the generated configuration and rule files onto
  disk, then `/-/reload`.
- `prometheus`: Prometheus built from its module (cluster/monitoring.sh: Debian's build
  leaves out the Kubernetes service discovery, which every generated configuration uses),
  reading that configuration, discovering pods and endpoints through the API server as
  ServiceAccount `prometheus` with upstream's example ClusterRole (a token, renewed by
  `prometheus-config`).

The Prometheus object asks for `replicas: 0`: its StatefulSet would run Prometheus from an
image with an init container and the sidecar, and discover in-cluster; the node agent
runs one container per pod from this machine's programs and routes no Services. So
Prometheus runs beside the cluster, and everything it scrapes and evaluates is what the
operator generated from the monitors. The Prometheus version in the object is the built
one's, so the operator generates for the Prometheus that runs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from dsgd_cluster.control_plane import (
    READY_TIMEOUT,
    ClusterError,
    ClusterInfo,
    free_port,
    run_build_script,
    wait_ready,
)
from dsgd_cluster.daemons import running_pid, start_daemon, stop_daemon
from dsgd_cluster.kubeconfig import write_kubeconfig
from dsgd_cluster.pki import Pki

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "monitoring.sh"
MONITORING_NAMESPACE = "monitoring"
PROMETHEUS_NAME = "dsgd"
SERVICE_ACCOUNT = "prometheus"
#: Start order; `down_monitoring` (and the cluster's `down`) stops them in reverse.
COMPONENTS = ("prometheus-operator", "prometheus-config", "prometheus")


@dataclass(frozen=True)
class MonitoringInfo:
    """Where the local Prometheus answers, and where its files are."""

    prometheus_url: str
    directory: Path


def build_monitoring() -> Path:
    """The directory with `operator`, `prometheus`, `crds/` and `rbac/` (cluster/monitoring.sh,
    built once per machine)."""
    return run_build_script(BUILD_SCRIPT, "the Prometheus Operator and Prometheus")


def prometheus_version(program: Path) -> str:
    """`v<major>.<minor>.<patch>` of the Prometheus `program` (its `--version`)."""
    shown = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"version (\d+\.\d+\.\d+)", shown.stdout)
    if not found:
        raise ClusterError(f"cannot read the version of {program}: {shown.stdout.strip()!r}")
    return f"v{found.group(1)}"


def prometheus_resource(
    version: str, scrape_interval: str = "30s", scrape_timeout: str = "10s"
) -> dict[str, Any]:
    """The Prometheus object: every namespace's monitors and rules, no pods (see above)."""
    everything: dict[str, Any] = {}
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": PROMETHEUS_NAME, "namespace": MONITORING_NAMESPACE},
        "spec": {
            "version": version,
            "replicas": 0,
            # ServiceMonitors discover through EndpointSlices (v1 Endpoints: deprecated).
            "serviceDiscoveryRole": "EndpointSlice",
            "serviceAccountName": SERVICE_ACCOUNT,
            "scrapeInterval": scrape_interval,
            "scrapeTimeout": scrape_timeout,
            "evaluationInterval": scrape_interval,
            **{
                f"{kind}{part}": everything
                for kind in ("serviceMonitor", "podMonitor", "rule")
                for part in ("Selector", "NamespaceSelector")
            },
        },
    }


def prometheus_identity(cluster_role: dict[str, Any]) -> list[dict[str, Any]]:
    """Namespace, ServiceAccount and upstream's ClusterRole bound to it."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MONITORING_NAMESPACE}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": MONITORING_NAMESPACE},
        },
        cluster_role,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_role["metadata"]["name"]},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role["metadata"]["name"],
            },
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": SERVICE_ACCOUNT,
                    "namespace": MONITORING_NAMESPACE,
                }
            ],
        },
    ]


def _kubectl(info: ClusterInfo, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(info.binary("kubectl")), f"--kubeconfig={info.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _apply(info: ClusterInfo, objects: list[dict[str, Any]]) -> None:
    document = {"apiVersion": "v1", "kind": "List", "items": objects}
    _kubectl(info, "apply", "--server-side", "-f", "-", stdin=json.dumps(document))


def _state_file(root: Path) -> Path:
    return root / "monitoring" / "state.json"


def up_monitoring(
    info: ClusterInfo,
    scrape_interval: str = "30s",
    scrape_timeout: str = "10s",
    tie_to_caller: bool = False,
) -> MonitoringInfo:
    """Start (or keep) the three daemons on the cluster `info`; return once Prometheus runs
    the operator's first configuration. Idempotent like the cluster's `up`: running daemons
    are kept as they are (the scrape settings apply when they are (re)started:
    `down_monitoring` first); a partial set is restarted whole. `tie_to_caller` as for the
    cluster."""
    root = info.root
    directory = root / "monitoring"
    state = _state_file(root)
    if state.exists() and all(running_pid(root, name) for name in COMPONENTS):
        return MonitoringInfo(json.loads(state.read_text())["prometheus_url"], directory)
    down_monitoring(root)

    assets = build_monitoring()
    crds = assets / "crds"
    _kubectl(info, "apply", "--server-side", "--force-conflicts", "-f", str(crds))
    _kubectl(info, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
    cluster_role = yaml.safe_load((assets / "rbac" / "prometheus-cluster-role.yaml").read_text())
    _apply(info, prometheus_identity(cluster_role))
    try:
        url = _start(info, assets, tie_to_caller, scrape_interval, scrape_timeout)
    except BaseException:
        down_monitoring(root)  # no half-started set left running
        raise
    state.write_text(json.dumps({"prometheus_url": url}))
    return MonitoringInfo(url, directory)


def _start(
    info: ClusterInfo, assets: Path, tie_to_caller: bool, scrape_interval: str, scrape_timeout: str
) -> str:
    root, directory = info.root, info.root / "monitoring"
    start = partial(start_daemon, root, tie_to_caller=tie_to_caller)
    pki = Pki(root / "pki")
    start(
        "prometheus-operator",
        [
            str(assets / "operator"),
            f"--apiserver={info.server}",
            f"--ca-file={pki.ca_cert}",
            f"--cert-file={pki.client_cert('admin')}",
            f"--key-file={pki.client_key('admin')}",
            f"--prometheus-instance-namespaces={MONITORING_NAMESPACE}",
            f"--web.listen-address=127.0.0.1:{free_port()}",
        ],
    )
    version = prometheus_version(assets / "prometheus")
    _apply(info, [prometheus_resource(version, scrape_interval, scrape_timeout)])

    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "prometheus.yml"
    config_file.unlink(missing_ok=True)  # an earlier run's: wait for this run's own
    write_kubeconfig(
        directory / "prometheus.kubeconfig",
        info.server,
        pki.ca_cert,
        user=SERVICE_ACCOUNT,
        token_file=directory / "token",
    )
    url = f"http://127.0.0.1:{free_port()}"
    start(
        "prometheus-config",
        [
            sys.executable, "-m", "dsgd_cluster.prometheus_config",
            f"--kubeconfig={info.kubeconfig}", f"--namespace={MONITORING_NAMESPACE}",
            f"--name={PROMETHEUS_NAME}", f"--service-account={SERVICE_ACCOUNT}",
            f"--dir={directory}", f"--prometheus-url={url}",
        ],
    )  # fmt: skip
    _wait_for_configuration(info, config_file)
    start(
        "prometheus",
        [
            str(assets / "prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            "--web.enable-lifecycle",
        ],
    )
    wait_ready(root, "prometheus", f"{url}/-/ready")
    return url


def _refusal(info: ClusterInfo) -> str | None:
    """The operator's message when it could not reconcile the Prometheus object as it now
    is (a condition of an earlier generation, e.g. a refused earlier run's, does not count)."""
    shown = _kubectl(
        info, "get", f"--namespace={MONITORING_NAMESPACE}", f"prometheus/{PROMETHEUS_NAME}",
        "-o=json",
    )  # fmt: skip
    prometheus = json.loads(shown)
    generation = prometheus["metadata"].get("generation")
    for condition in (prometheus.get("status") or {}).get("conditions") or []:
        if (
            condition.get("type") == "Reconciled"
            and condition.get("status") == "False"
            and condition.get("observedGeneration") == generation
        ):
            return condition.get("message")
    return None


def _wait_for_configuration(info: ClusterInfo, path: Path) -> None:
    """Until `prometheus-config` wrote the first configuration; the operator's own message
    (ClusterError) if it refuses the Prometheus object, e.g. a timeout above the interval."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not path.exists():
        refused = _refusal(info)
        if refused:
            raise ClusterError(
                f"the Prometheus Operator refused prometheus/{PROMETHEUS_NAME}: {refused}"
            )
        for daemon in ("prometheus-operator", "prometheus-config"):
            if running_pid(info.root, daemon) is None:
                raise ClusterError(f"{daemon} exited; see {info.root / 'logs' / daemon}.log")
        if time.monotonic() > deadline:
            raise ClusterError(
                f"no configuration from the Prometheus Operator after {READY_TIMEOUT:.0f} s; "
                f"see {info.root / 'logs'}/{{prometheus-operator,prometheus-config}}.log"
            )
        time.sleep(0.5)


def down_monitoring(root: Path) -> list[str]:
    """Stop the monitoring daemons of the cluster in `root`; return the names that ran."""
    root = root.resolve()
    _state_file(root).unlink(missing_ok=True)
    return [name for name in reversed(COMPONENTS) if stop_daemon(root, name)]
