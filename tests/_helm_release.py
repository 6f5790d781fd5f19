"""A release of the dsgd chart installed with the real helm CLI on the session's control plane.

Fixtures `helm` and `release` (registered in conftest): each test gets a release in a
namespace of its own, uninstalled and its namespace deleted afterwards.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dsgd_cluster.control_plane import ClusterInfo
from kubernetes import client

from tests._cluster import create_namespace
from tests._polling import wait_until

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm" / "dsgd"


class Helm:
    """The real helm CLI (v3, built from helm.sh/helm) against the session cluster."""

    def __init__(self, info: ClusterInfo) -> None:
        self.argv = [str(info.binary("helm")), f"--kubeconfig={info.kubeconfig}"]

    def __call__(self, *args: str, timeout: float = 240) -> str:
        result = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"helm {' '.join(args)}: {result.stderr}{result.stdout}"
        return result.stdout


def operator_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=operator"
    ).items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


class Release:
    """One installed release in a namespace of its own; uninstalled (and waited for) after."""

    def __init__(self, helm: Helm, core: client.CoreV1Api, name: str, namespace: str) -> None:
        self.helm, self.core, self.name, self.namespace = helm, core, name, namespace
        self.account = f"system:serviceaccount:{namespace}:{name}"

    def install(self, *values: str, chart: Path = CHART) -> None:
        self.helm(
            "install", self.name, str(chart), f"--namespace={self.namespace}",
            "--set=image.registry=localhost", "--set=image.repository=dsgd-operator", *values,
            "--wait", "--timeout=180s",
        )  # fmt: skip

    def healthz_test(self, pod: client.V1Pod) -> str:
        """`helm test`, its Pod pointed at the operator pod's IP (no Service routing here)."""
        url = f"http://{pod.status.pod_ip}:8080/healthz"
        self.helm(
            "upgrade", self.name, str(CHART), f"--namespace={self.namespace}",
            "--reset-then-reuse-values",
            f"--set=helmTest.url={url}", "--wait", "--timeout=180s",
        )  # fmt: skip
        return self.helm("test", self.name, f"--namespace={self.namespace}", "--timeout=180s")

    def uninstall(self) -> None:
        self.helm("uninstall", self.name, f"--namespace={self.namespace}", "--wait")
        wait_until(lambda: not operator_pods(self.core, self.namespace), 60, "operator pods gone")


@pytest.fixture
def helm(cluster: ClusterInfo) -> Helm:
    return Helm(cluster)


@pytest.fixture
def release(helm: Helm, kube_api: client.ApiClient, crd_installed: None) -> Iterator[Release]:
    namespace = create_namespace(kube_api, "dsgd")
    core = client.CoreV1Api(kube_api)
    rel = Release(helm, core, "dsgd", namespace)
    try:
        yield rel
    finally:
        subprocess.run(
            [*helm.argv, "uninstall", rel.name, f"--namespace={namespace}", "--wait"],
            capture_output=True,
            timeout=120,
        )
        core.delete_namespace(namespace)
