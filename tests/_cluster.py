"""Fixtures of the real-control-plane tier: one cluster per test session.

`cluster` starts etcd, kube-apiserver, the controller manager, the scheduler
and the node agent (dsgd_cluster) in a temporary directory, tied to the pytest
process so that nothing outlives the session. Each test gets its own namespace
(`namespace`), labelled to enforce the `restricted` Pod Security Standard, so
every pod the tests create passes the admission a hardened cluster applies.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dsgd_cluster.control_plane import ClusterInfo, down, up
from dsgd_cluster.monitoring import build_monitoring
from kubernetes import client, config

from tests._polling import wait_until

REPO = Path(__file__).resolve().parent.parent
CRD_DIR = REPO / "crds"
#: What the API server audits: service accounts' requests (tests of the chart's RBAC read it).
AUDIT_POLICY = REPO / "tests" / "cluster-audit-policy.yaml"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


class Kubectl:
    """The real kubectl of the cluster's Kubernetes release, with its admin kubeconfig."""

    def __init__(self, info: ClusterInfo) -> None:
        self.binary = str(info.binary("kubectl"))
        self.kubeconfig = str(info.kubeconfig)

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterInfo]:
    root = tmp_path_factory.mktemp("cluster")
    info = up(root, nodes=4, tie_to_caller=True, audit_policy=AUDIT_POLICY)
    try:
        yield info
    finally:
        down(root)


@pytest.fixture(scope="session")
def kubectl(cluster: ClusterInfo) -> Kubectl:
    return Kubectl(cluster)


@pytest.fixture(scope="session")
def kube_api(cluster: ClusterInfo) -> client.ApiClient:
    """An admin client of the real API server."""
    return config.new_client_from_config(config_file=str(cluster.kubeconfig))


@pytest.fixture(scope="session")
def crd_installed(kubectl: Kubectl) -> None:
    """The generated CRDs applied with server-side apply, and Established."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    # `kubectl wait` errors out at once (".status.conditions accessor error") while a just-
    # created CRD has no conditions yet, instead of waiting: retried until it can wait.
    wait_until(
        lambda: kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "-f", str(CRD_DIR),
            check=False, timeout=90,
        ).returncode == 0,
        90, "the CRDs Established",
    )  # fmt: skip


#: The kinds the chart renders (monitoring.coreos.com/v1).
MONITORING_CRDS = ("podmonitors", "servicemonitors", "prometheusrules")


@pytest.fixture(scope="session")
def monitoring_crds_installed(kubectl: Kubectl) -> None:
    """The Prometheus Operator's own CRDs for the chart's monitors, applied and Established
    (from its module at the pinned release: cluster/monitoring.sh, built once per machine)."""
    directory = build_monitoring() / "crds"
    files = [str(directory / f"monitoring.coreos.com_{plural}.yaml") for plural in MONITORING_CRDS]
    applied = [arg for path in files for arg in ("-f", path)]
    kubectl("apply", "--server-side", "--force-conflicts", *applied)
    wait_until(
        lambda: kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", *applied,
            check=False, timeout=90,
        ).returncode == 0,
        90, "the Prometheus Operator CRDs Established",
    )  # fmt: skip


def create_namespace(api: client.ApiClient, prefix: str = "t") -> str:
    """A fresh namespace that enforces the restricted Pod Security Standard.

    Returns once pods can be admitted there: the ServiceAccount admission plugin
    refuses every pod until the controller manager has made the namespace's
    `default` ServiceAccount and the plugin's informer has seen it. A dry run
    asks the plugin itself.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name, "labels": RESTRICTED}})
    probe = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}

    def service_account_admitted() -> bool:
        try:
            core.create_namespaced_pod(name, probe, dry_run="All")
        except client.ApiException as error:
            return "serviceaccount" not in (error.body or "")
        return True

    wait_until(service_account_admitted, 30, f"the default ServiceAccount of {name}")
    return name


@pytest.fixture
def namespace(kube_api: client.ApiClient) -> Iterator[str]:
    name = create_namespace(kube_api)
    yield name
    # Not waited for: the namespace controller finishes it in the background.
    client.CoreV1Api(kube_api).delete_namespace(name)
