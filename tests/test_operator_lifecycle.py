"""The operator (kopf, in this process) against the real API server, the test playing the kubelet.

Pod phases, exit codes and reasons (OOMKilled, Evicted, image pull back-off, a pod
Pending too long, non-retryable exit codes, deadlines) are reported through the
pods' status subresource by the test, on pods that no node runs (tests/_api_kubelet.py):
what the operator makes of them is then read back from the server: children,
status, conditions, events, restarts, cleanup, garbage collection. The runs with
real trainers are tests/test_operator_cluster.py, _disruption.py and _refusals.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from dsgd_contract.pod import ATTEMPT_LABEL, JOB_NAME_LABEL, NODE_RANK_LABEL
from dsgd_operator import api
from dsgd_operator.reconcile import metrics
from kubernetes import client

from tests._api_kubelet import (  # noqa: F401  (fixtures)
    kube_fixture,
    operator_fixture,
    operator_options,
    unscheduled_job_spec,
)
from tests._operator_in_process import FAST_OPTIONS, Operator
from tests._polling import wait_until, wait_until_async

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def installed_crd(kube_api: client.ApiClient, group: str, version: str, kind: str, plural: str):
    """A schema-less CRD (a gang scheduler's API, without the scheduler) while the block runs;
    deleted afterwards, and gone before the next test (which may expect its absence)."""
    extensions = client.ApiextensionsV1Api(kube_api)
    name = f"{plural}.{group}"
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    extensions.create_custom_resource_definition(
        {
            "metadata": {"name": name},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                "versions": [{"name": version, "served": True, "storage": True, "schema": schema}],
            },
        }
    )

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    def gone() -> bool:
        try:
            extensions.read_custom_resource_definition(name)
        except client.ApiException as error:
            return error.status == 404
        return False

    try:
        wait_until(established, 30, f"CRD {name} established")
        yield
    finally:
        extensions.delete_custom_resource_definition(name)
        wait_until(gone, 60, f"CRD {name} deleted")


async def wait_for(check, timeout: float = 30.0, what: str = ""):
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    return await wait_until_async(check, timeout, what or repr(check))


def phase_is(kube, job: str, phase: str):
    return lambda: kube.status(job).get("phase") == phase


def pod_names(kube, job: str) -> list[str]:
    return [pod["metadata"]["name"] for pod in kube.pods(job)]


def attempts(kube, job: str) -> set[str]:
    return {pod["metadata"]["labels"][ATTEMPT_LABEL] for pod in kube.pods(job)}


async def started_gang(kube, name: str, nodes: int = 2, **run_policy) -> None:
    await kube.create_job(name, unscheduled_job_spec(nodes, **run_policy))
    await wait_for(lambda: len(kube.pods(name)) == nodes, what=f"{nodes} pods of {name}")
    await kube.set_gang(name, "Running")
    await wait_for(phase_is(kube, name, "Running"), what=f"{name} Running")


async def test_creates_every_child_with_owner_labels_and_attempt(kube, operator):
    created = await kube.create_job("train", unscheduled_job_spec(nodes=3))
    uid = created["metadata"]["uid"]
    await wait_for(lambda: len(kube.pods("train")) == 3, what="3 pods")

    owner = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": "train", "uid": uid}
    service = kube.get("v1/services", "train")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    config_map = kube.get("v1/configmaps", "train-config")
    assert '"localSteps": 2' in config_map["data"]["config.json"]
    for pod in kube.pods("train"):
        labels = pod["metadata"]["labels"]
        rank = int(labels[NODE_RANK_LABEL])
        assert pod["metadata"]["name"] == f"train-node-{rank}"
        assert labels[JOB_NAME_LABEL] == "train" and labels[ATTEMPT_LABEL] == "0"
        assert pod["spec"]["restartPolicy"] == "Never"
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["PET_NODE_RANK"] == str(rank) and env["PET_NNODES"] == "3"
        assert env["PET_MASTER_ADDR"] == "train-node-0.train"
    for obj in (service, config_map, *kube.pods("train")):
        assert obj["metadata"]["ownerReferences"][0].items() >= owner.items()
        assert obj["metadata"]["namespace"] == kube.namespace
    # Nothing gang-scheduled was asked for: the default scheduler.
    assert {p["spec"].get("schedulerName") for p in kube.pods("train")} == {"default-scheduler"}

    status = await wait_for(lambda: kube.status("train").get("workers"), what="workers")
    assert status == {"pending": 3, "running": 0, "succeeded": 0, "failed": 0}
    assert kube.condition("train", "Created")["status"] == "True"
    assert kube.pods_created() == 3
    await wait_for(lambda: "Created" in kube.event_reasons("train"), what="Created event")


@pytest.mark.parametrize(
    ("scheduler", "resource", "pod_scheduler"),
    [
        ("volcano", "scheduling.volcano.sh/v1beta1/podgroups", "volcano"),
        (
            "scheduler-plugins",
            "scheduling.x-k8s.io/v1alpha1/podgroups",
            "scheduler-plugins-scheduler",
        ),
    ],
)
async def test_gang_scheduler_gets_a_pod_group(
    kube, kube_api, operator, scheduler, resource, pod_scheduler
):
    group, version, plural = resource.split("/")
    with installed_crd(kube_api, group, version, "PodGroup", plural):
        await gang_scheduled_job(kube, scheduler, resource, pod_scheduler)


async def gang_scheduled_job(kube, scheduler, resource, pod_scheduler) -> None:
    spec = unscheduled_job_spec(nodes=4)
    spec["scheduling"] = {"schedulerName": scheduler, "queue": "research"}
    await kube.create_job("gang", spec)
    await wait_for(lambda: len(kube.pods("gang")) == 4, what="4 pods")
    pod_group = kube.get(resource, "gang")
    assert pod_group["spec"]["minMember"] == 4
    assert {p["spec"]["schedulerName"] for p in kube.pods("gang")} == {pod_scheduler}


async def test_status_follows_pod_phases_to_success(kube, operator):
    await kube.create_job("ok", unscheduled_job_spec(), generation=1)
    await wait_for(lambda: len(kube.pods("ok")) == 2, what="pods")
    await wait_for(phase_is(kube, "ok", "Pending"), what="Pending")
    await kube.set_pod("ok-node-0", "Running")
    await wait_for(lambda: kube.status("ok").get("workers", {}).get("running") == 1)
    assert kube.status("ok")["phase"] == "Pending"  # the gang is not complete yet
    assert kube.condition("ok", "Running")["reason"] == "PodsPending"
    await kube.set_pod("ok-node-1", "Running")
    await wait_for(phase_is(kube, "ok", "Running"), what="Running")
    assert kube.condition("ok", "Running")["status"] == "True"
    assert kube.status("ok")["startTime"]

    await kube.set_pod("ok-node-1", "Succeeded", exit_code=0)
    await asyncio.sleep(0.3)
    assert kube.status("ok")["phase"] == "Running"  # node 0 still works
    await kube.set_pod("ok-node-0", "Succeeded", exit_code=0)
    await wait_for(phase_is(kube, "ok", "Succeeded"), what="Succeeded")
    status = kube.status("ok")
    assert status["completionTime"] >= status["startTime"]
    assert status["workers"] == {"pending": 0, "running": 0, "succeeded": 2, "failed": 0}
    assert status["restarts"] == 0
    for kind in ("Created", "Succeeded"):
        condition = kube.condition("ok", kind)
        assert condition["status"] == "True" and condition["observedGeneration"] == 1
        assert condition["lastTransitionTime"].endswith("Z")
    assert kube.condition("ok", "Running")["status"] == "False"
    await wait_for(
        lambda: {"Created", "Running", "AllPodsSucceeded"} <= set(kube.event_reasons("ok")),
        what="transition events",
    )
    # Succeeded pods stay (cleanPodPolicy Running deletes only unfinished ones).
    assert len(kube.pods("ok")) == 2


async def test_failed_worker_restarts_the_whole_gang_until_the_backoff_limit(kube, operator):
    await started_gang(kube, "flaky", backoffLimit=1)
    restarts_before = metrics.GANG_RESTARTS._value.get()
    failures_before = metrics.JOB_FAILURES.labels(reason="BackoffLimitExceeded")._value.get()

    failed_at = time.monotonic()  # before: the operator may see it before the call returns
    await kube.set_pod("flaky-node-1", "Failed", exit_code=1)
    await wait_for(phase_is(kube, "flaky", "Restarting"), what="Restarting")
    restarting = kube.condition("flaky", "Restarting")
    assert restarting["status"] == "True" and restarting["reason"] == "ExitCode1"
    assert "flaky-node-1 exited with code 1" in restarting["message"]
    assert kube.status("flaky")["restarts"] == 1
    # The whole gang goes, including the healthy node 0; then attempt 1 comes back.
    await wait_for(
        lambda: attempts(kube, "flaky") == {"1"} and len(kube.pods("flaky")) == 2,
        what="gang attempt 1",
    )
    assert time.monotonic() - failed_at >= FAST_OPTIONS.restart_backoff_seconds * 0.9
    assert kube.pods_created() == 4
    await wait_for(lambda: "GangRestart" in kube.event_reasons("flaky"), what="event")
    assert metrics.GANG_RESTARTS._value.get() == restarts_before + 1

    await kube.set_gang("flaky", "Running")
    await wait_for(phase_is(kube, "flaky", "Running"), what="Running again")
    assert kube.condition("flaky", "Restarting")["status"] == "False"
    await kube.set_pod("flaky-node-0", "Failed", exit_code=137, reason="OOMKilled")
    await wait_for(phase_is(kube, "flaky", "Failed"), what="Failed")
    failed = kube.condition("flaky", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "OOMKilled" in failed["message"]
    assert kube.status("flaky")["restarts"] == 1
    # cleanPodPolicy Running: the still-running node 1 is deleted, the failed pod kept.
    await wait_for(lambda: pod_names(kube, "flaky") == ["flaky-node-0"], what="cleanup")
    assert kube.pods_created() == 4
    await wait_for(lambda: "OOMKilled" in kube.event_reasons("flaky"), what="OOM event")
    after = metrics.JOB_FAILURES.labels(reason="BackoffLimitExceeded")._value.get()
    assert after == failures_before + 1


async def test_non_retryable_exit_code_fails_at_once(kube, operator):
    await started_gang(kube, "badcfg", backoffLimit=5)
    await kube.set_pod("badcfg-node-0", "Failed", exit_code=64)
    await wait_for(phase_is(kube, "badcfg", "Failed"), what="Failed")
    failed = kube.condition("badcfg", "Failed")
    assert failed["reason"] == "InvalidConfig"
    assert "not retryable" in failed["message"]
    assert kube.status("badcfg")["restarts"] == 0
    await asyncio.sleep(FAST_OPTIONS.restart_backoff_seconds * 2)
    assert kube.pods_created() == 2
    assert kube.condition("badcfg", "Restarting") is None


@pytest.mark.parametrize("how", ["deleted", "evicted"])
async def test_deleted_or_evicted_pod_counts_as_a_failure(kube, operator, how):
    await started_gang(kube, "lost")
    if how == "deleted":
        await kube.delete_pod("lost-node-1")
    else:
        await kube.set_pod(
            "lost-node-1",
            "Failed",
            reason="Evicted",
            message="The node was low on resource: memory.",
        )
    await wait_for(lambda: kube.status("lost").get("restarts") == 1, what="a restart")
    reason = kube.condition("lost", "Restarting")["reason"]
    assert reason == ("PodDeleted" if how == "deleted" else "Evicted")
    await wait_for(
        lambda: attempts(kube, "lost") == {"1"} and len(kube.pods("lost")) == 2,
        what="recreated gang",
    )


async def test_suspend_deletes_pods_and_resume_recreates_them(kube, operator):
    await started_gang(kube, "pausable")
    await kube.patch_job("pausable", {"spec": {"runPolicy": {"suspend": True}}})
    await wait_for(phase_is(kube, "pausable", "Suspended"), what="Suspended")
    await wait_for(lambda: not kube.pods("pausable"), what="pods deleted")
    assert kube.condition("pausable", "Suspended")["status"] == "True"
    assert kube.job("pausable") is not None

    await kube.patch_job("pausable", {"spec": {"runPolicy": {"suspend": False}}})
    await wait_for(lambda: len(kube.pods("pausable")) == 2, what="pods recreated")
    await wait_for(phase_is(kube, "pausable", "Pending"), what="Pending")
    assert kube.condition("pausable", "Suspended")["status"] == "False"
    assert kube.status("pausable")["restarts"] == 0  # suspension is not a failure
    await wait_for(lambda: {"Suspended", "Resumed"} <= set(kube.event_reasons("pausable")))


@pytest.mark.parametrize(
    ("policy", "left"),
    [("All", []), ("Running", ["clean-node-0"]), ("None", ["clean-node-0", "clean-node-1"])],
)
async def test_clean_pod_policy_on_failure(kube, operator, policy, left):
    await started_gang(kube, "clean", backoffLimit=0, cleanPodPolicy=policy)
    await kube.set_pod("clean-node-0", "Failed", exit_code=2)
    await wait_for(phase_is(kube, "clean", "Failed"), what="Failed")
    await wait_for(lambda: pod_names(kube, "clean") == left, what=f"pods left: {left}")
    await asyncio.sleep(0.3)
    assert pod_names(kube, "clean") == left


async def test_ttl_after_finished_deletes_the_job(kube, operator):
    await started_gang(kube, "shortlived", ttlSecondsAfterFinished=1, cleanPodPolicy="None")
    await kube.set_gang("shortlived", "Succeeded", exit_code=0)
    await wait_for(phase_is(kube, "shortlived", "Succeeded"), what="Succeeded")
    finished = time.monotonic()
    await wait_for(lambda: kube.job("shortlived") is None, what="job deleted after its TTL")
    assert time.monotonic() - finished >= 0.5
    # The pods go with the job, through the garbage collector and their owner references.
    await wait_for(lambda: not kube.pods("shortlived"), what="pods collected")


async def test_active_deadline_fails_the_job_and_cleans_up(kube, operator):
    await started_gang(kube, "slow", activeDeadlineSeconds=1)
    await wait_for(phase_is(kube, "slow", "Failed"), timeout=10, what="deadline")
    assert kube.condition("slow", "Failed")["reason"] == "DeadlineExceeded"
    await wait_for(lambda: not kube.pods("slow"), what="running pods deleted")


async def test_pods_pending_too_long_and_abnormal_pods_are_reported(kube):
    options = Operator(operator_options(kube.namespace, pending_timeout_seconds=0.5))
    await options.start()
    try:
        await kube.create_job("stuck", unscheduled_job_spec())
        await wait_for(lambda: len(kube.pods("stuck")) == 2, what="pods")
        await kube.set_pod("stuck-node-0", "Pending", waiting="ImagePullBackOff")
        pending = await wait_for(
            lambda: kube.condition("stuck", "PendingTooLong"), what="PendingTooLong"
        )
        assert pending["status"] == "True" and "2 of 2 pods Pending" in pending["message"]
        await wait_for(
            lambda: {"ImagePullBackOff", "PendingTooLong"} <= set(kube.event_reasons("stuck")),
            what="warning events",
        )
        warning = next(e for e in kube.events("stuck") if e["reason"] == "ImagePullBackOff")
        assert warning["type"] == "Warning" and "stuck-node-0" in warning["message"]
        await kube.set_gang("stuck", "Running")
        await wait_for(phase_is(kube, "stuck", "Running"), what="Running")
        assert kube.condition("stuck", "PendingTooLong")["status"] == "False"
        # Each abnormal pod is reported once, not on every pass.
        assert kube.event_reasons("stuck").count("ImagePullBackOff") == 1
    finally:
        await options.stop()
