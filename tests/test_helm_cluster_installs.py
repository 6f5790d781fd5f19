"""The chart's user-facing rights and install variants on the real control plane.

Oracles: the API server's authorizer (requests made as other users through
impersonation, `kubectl --as`), the controller manager's ClusterRole aggregation
controller, and `helm install` itself.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from dsgd_cluster.control_plane import ClusterInfo
from kubernetes import client

from tests._cluster import Kubectl, create_namespace
from tests._helm_release import CHART, Release, operator_pods
from tests._polling import wait_until

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits-hierarchical.yaml"


def _job(name: str, epochs: int | None = None) -> str:
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"]["name"] = name
    if epochs is not None:
        job["spec"]["training"]["epochs"] = epochs
    return yaml.safe_dump(job)


def _as(kubectl: Kubectl, user: str) -> Callable[..., object]:
    """kubectl as `user` (impersonated by the admin; the user is in no group but
    system:authenticated), returning (exit code, stderr+stdout)."""

    def run(*args: str, input: str | None = None) -> tuple[int, str]:
        result = kubectl(f"--as={user}", *args, input=input, check=False)
        return result.returncode, result.stderr + result.stdout

    return run


@pytest.fixture
def team(kube_api: client.ApiClient, kubectl: Kubectl) -> Iterator[str]:
    """A namespace where alice holds the built-in `edit` role and bob `view`, nothing else."""
    name = create_namespace(kube_api, "team")
    for user, role in (("alice", "edit"), ("bob", "view")):
        kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}",
                f"--user={user}", "-n", name)  # fmt: skip
    yield name
    client.CoreV1Api(kube_api).delete_namespace(name)


def _allowed(
    kubectl: Kubectl, user: str, verb: str, resource: str, namespace: str, *flags: str
) -> bool:
    code, _ = _as(kubectl, user)("auth", "can-i", verb, resource, "-n", namespace, *flags)
    return code == 0


def test_edit_users_create_jobs_and_view_users_read_them(
    kubectl: Kubectl, release: Release, team: str
) -> None:
    alice, bob = _as(kubectl, "alice"), _as(kubectl, "bob")
    # Before the chart: the built-in roles know nothing of dsgd.io.
    code, out = alice("apply", "-n", team, "-f", "-", input=_job("before"))
    assert code != 0 and "forbidden" in out.lower(), out
    release.install()
    # The aggregation controller copies the rules into edit/view asynchronously.
    wait_until(
        lambda: _allowed(kubectl, "alice", "create", "distributedsgdjobs.dsgd.io", team)
        and _allowed(kubectl, "bob", "list", "distributedsgdjobs.dsgd.io", team),
        60, "the chart's rules aggregated into edit and view",
    )  # fmt: skip
    code, out = alice("apply", "-n", team, "-f", "-", input=_job("by-alice"))
    assert code == 0, out
    code, out = bob("get", "-n", team, "sgdjob/by-alice", "-o=name")
    assert code == 0 and "by-alice" in out, out
    code, out = bob("apply", "-n", team, "-f", "-", input=_job("by-bob"))
    assert code != 0 and "forbidden" in out.lower(), out
    code, out = bob("delete", "-n", team, "sgdjob/by-alice")
    assert code != 0 and "forbidden" in out.lower(), out
    # Status is the operator's to write, even for editors.
    jobs = "distributedsgdjobs.dsgd.io"
    assert _allowed(kubectl, "alice", "get", jobs, team, "--subresource=status")
    assert not _allowed(kubectl, "alice", "patch", jobs, team, "--subresource=status")
    # Rights stop at the namespace: alice is nobody in the release's namespace.
    assert not _allowed(kubectl, "alice", "create", jobs, release.namespace)
    # The operator takes the job (its finalizer) and lets it go when alice deletes it.
    code, out = alice("delete", "-n", team, "sgdjob/by-alice", "--timeout=120s")
    assert code == 0, out
    release.uninstall()


DIGEST = "sha256:" + "9f86d081884c7d65" * 4
MIRROR = "mirror.internal:5000/proxy"
#: values → (operator image, trainer image) the API server must hold in the pods.
VARIANTS = {
    "digest-pinned": (
        ["--set=image.digest=" + DIGEST, "--set=trainerImage.digest=" + DIGEST,
         "--set=helmTest.image.tag=", "--set=helmTest.image.digest=" + DIGEST],
        (f"localhost/dsgd-operator@{DIGEST}", f"ghcr.io/dsgd-io/dsgd-trainer@{DIGEST}"),
    ),
    "registry-mirrored": (
        [f"--set=global.imageRegistry={MIRROR}", "--set=global.imagePullSecrets[0].name=mirror",
         "--set=helmTest.tolerations[0].operator=Exists"],
        (f"{MIRROR}/dsgd-operator:0.1.0", f"{MIRROR}/dsgd-io/dsgd-trainer:0.1.0"),
    ),
}  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANTS)
def test_digest_pinned_and_mirrored_installs_run(
    kubectl: Kubectl, kube_api: client.ApiClient, release: Release, namespace: str, variant: str
) -> None:
    """The operator and the pods it creates carry the pinned or mirrored references; the API
    server admits them and `helm test` passes (the node agent runs any image's Python)."""
    values, (operator_image, trainer_image) = VARIANTS[variant]
    release.install(*values)
    (pod,) = operator_pods(release.core, release.namespace)
    assert pod.spec.containers[0].image == operator_image
    if variant == "registry-mirrored":
        assert [s.name for s in pod.spec.image_pull_secrets] == ["mirror"]
    release.healthz_test(pod)
    manifest = yaml.safe_load(_job("no-image"))
    assert "image" not in manifest["spec"]  # the operator's default, i.e. trainerImage
    kubectl("apply", "-n", namespace, "-f", "-", input=_job("no-image"))
    core = client.CoreV1Api(kube_api)
    trainers = wait_until(
        lambda: core.list_namespaced_pod(namespace, label_selector="dsgd.io/job-name").items,
        120, "the job's pods",
    )  # fmt: skip
    assert {p.spec.containers[0].image for p in trainers} == {trainer_image}
    kubectl("delete", "-n", namespace, "sgdjob/no-image", "--timeout=120s")
    release.uninstall()


def _status(kubectl: Kubectl, namespace: str, name: str) -> dict:
    job = kubectl("get", "-n", namespace, f"sgdjob/{name}", "-o=json").stdout
    return json.loads(job).get("status") or {}


def _pod_uids(core: client.CoreV1Api, namespace: str, job: str) -> dict[str, str]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"dsgd.io/job-name={job}").items
    return {pod.metadata.name: pod.metadata.uid for pod in pods}


def _listed_pods_in(info: ClusterInfo, account: str, pod_name: str, namespace: str) -> bool:
    """Whether the operator pod `pod_name` (its bound token) listed pods in `namespace`."""
    for line in info.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref, user = event.get("objectRef") or {}, event["user"]
        if (
            user["username"] == account
            and user.get("extra", {}).get("authentication.kubernetes.io/pod-name") == [pod_name]
            and ref.get("resource") == "pods"
            and ref.get("namespace") == namespace
            and event["verb"] == "list"
        ):
            return True
    return False


def test_upgrade_from_the_previous_version_keeps_a_running_job(
    cluster: ClusterInfo, kubectl: Kubectl, kube_api: client.ApiClient, release: Release,
    namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    """The documented upgrade: the new CRD applied first (server-side, from `helm show
    crds`), then `helm upgrade --reset-then-reuse-values`. The operator is replaced; the
    running job keeps its pods and the new operator carries on reporting its progress."""
    previous = tmp_path / "dsgd"
    shutil.copytree(CHART, previous)
    chart_yaml = previous / "Chart.yaml"
    # The previous release: its version and appVersion (the operator image's tag) one back.
    text = chart_yaml.read_text().replace("version: 0.1.0", "version: 0.0.9", 1)
    chart_yaml.write_text(text.replace('appVersion: "0.1.0"', 'appVersion: "0.0.9"', 1))
    release.install("--set=operator.restartBackoffSeconds=7", chart=previous)
    (old_operator,) = operator_pods(release.core, release.namespace)
    kubectl("apply", "-n", namespace, "-f", "-", input=_job("long", epochs=40))
    core = client.CoreV1Api(kube_api)

    wait_until(lambda: _status(kubectl, namespace, "long").get("phase") == "Running", 400,
               "the job Running")  # fmt: skip
    pods = _pod_uids(core, namespace, "long")
    crds = release.helm("show", "crds", str(CHART))
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
    release.helm(
        "upgrade", release.name, str(CHART), f"--namespace={release.namespace}",
        "--reset-then-reuse-values", "--wait", "--timeout=180s",
    )  # fmt: skip
    history = json.loads(
        release.helm("history", release.name, f"--namespace={release.namespace}", "-o=json")
    )
    assert [h["chart"] for h in history] == ["dsgd-0.0.9", "dsgd-0.1.0"]
    values = json.loads(
        release.helm("get", "values", release.name, f"--namespace={release.namespace}", "-o=json")
    )
    assert values["operator"] == {"restartBackoffSeconds": 7}  # the user's value survived
    (new_operator,) = operator_pods(release.core, release.namespace)
    assert new_operator.metadata.uid != old_operator.metadata.uid
    assert old_operator.spec.containers[0].image.endswith(":0.0.9")
    assert new_operator.spec.containers[0].image.endswith(":0.1.0")
    # The new operator adopts the gang (the API server's audit log: its own bound token
    # lists the job's pods) and leaves it alone: same pods, still Running, no restart.
    wait_until(
        lambda: _listed_pods_in(cluster, release.account, new_operator.metadata.name, namespace),
        120, "the new operator reconciling the job",
    )  # fmt: skip
    assert _pod_uids(core, namespace, "long") == pods
    status = _status(kubectl, namespace, "long")
    assert status["phase"] == "Running" and status.get("restarts", 0) == 0, status
    kubectl("delete", "-n", namespace, "sgdjob/long", "--timeout=120s")
    release.uninstall()
