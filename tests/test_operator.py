"""The operator (kopf, really running) against the emulated API server (kmock).

Kept for what the real control plane cannot produce on demand: pod phases, exit
codes and reasons set directly (OOMKilled, image pull back-off, a pod Pending
forever, non-retryable exit codes, deadlines) without running a trainer. The
end to end behaviour (success, gang restart and resume, operator restart
adoption, deletion through the garbage collector, evictions, API refusals) is
tested on the real server: tests/test_operator_cluster.py, _disruption.py,
_refusals.py.

The tests play the kubelet: they patch pod status through the API, and check
what the operator makes of it: children, status, events, restarts, cleanup.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from dsgd_contract.pod import ATTEMPT_LABEL, JOB_NAME_LABEL, NODE_RANK_LABEL
from dsgd_operator import api
from dsgd_operator.reconcile import metrics

from tests._kmock_cluster import (  # noqa: F401  (fixtures)
    FAST_OPTIONS,
    JOBS,
    Operator,
    cluster_fixture,
    job_spec,
    operator_fixture,
    wait_for,
)


def phase_is(cluster, job: str, phase: str):
    return lambda: cluster.status(job).get("phase") == phase


def pod_names(cluster, job: str) -> list[str]:
    return [pod["metadata"]["name"] for pod in cluster.pods(job)]


def attempts(cluster, job: str) -> set[str]:
    return {pod["metadata"]["labels"][ATTEMPT_LABEL] for pod in cluster.pods(job)}


async def started_gang(cluster, name: str, nodes: int = 2, **run_policy) -> None:
    await cluster.create_job(name, job_spec(nodes, **run_policy))
    await wait_for(lambda: len(cluster.pods(name)) == nodes, what=f"{nodes} pods of {name}")
    await cluster.set_gang(name, "Running")
    await wait_for(phase_is(cluster, name, "Running"), what=f"{name} Running")


async def test_creates_every_child_with_owner_labels_and_attempt(cluster, operator):
    created = await cluster.create_job("train", job_spec(nodes=3))
    uid = created["metadata"]["uid"]
    await wait_for(lambda: len(cluster.pods("train")) == 3, what="3 pods")

    owner = {"apiVersion": api.API_VERSION, "kind": api.KIND, "name": "train", "uid": uid}
    service = cluster.get("v1/services", "train")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    config_map = cluster.get("v1/configmaps", "train-config")
    assert '"localSteps": 2' in config_map["data"]["config.json"]
    for pod in cluster.pods("train"):
        labels = pod["metadata"]["labels"]
        rank = int(labels[NODE_RANK_LABEL])
        assert pod["metadata"]["name"] == f"train-node-{rank}"
        assert labels[JOB_NAME_LABEL] == "train" and labels[ATTEMPT_LABEL] == "0"
        assert pod["spec"]["restartPolicy"] == "Never"
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["PET_NODE_RANK"] == str(rank) and env["PET_NNODES"] == "3"
        assert env["PET_MASTER_ADDR"] == "train-node-0.train"
    for obj in (service, config_map, *cluster.pods("train")):
        assert obj["metadata"]["ownerReferences"][0].items() >= owner.items()
        assert obj["metadata"]["namespace"] == "default"
    # Nothing gang-scheduled was asked for: no PodGroup.
    assert not cluster.objects("scheduling.volcano.sh/v1beta1/podgroups")

    status = await wait_for(lambda: cluster.status("train").get("workers"), what="workers")
    assert status == {"pending": 3, "running": 0, "succeeded": 0, "failed": 0}
    assert cluster.condition("train", "Created")["status"] == "True"
    assert cluster.count("POST", "/pods") == 3
    await wait_for(lambda: "Created" in cluster.event_reasons("train"), what="Created event")


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
    cluster, operator, scheduler, resource, pod_scheduler
):
    spec = job_spec(nodes=4)
    spec["scheduling"] = {"schedulerName": scheduler, "queue": "research"}
    await cluster.create_job("gang", spec)
    await wait_for(lambda: len(cluster.pods("gang")) == 4, what="4 pods")
    pod_group = cluster.get(resource, "gang")
    assert pod_group["spec"]["minMember"] == 4
    assert {p["spec"]["schedulerName"] for p in cluster.pods("gang")} == {pod_scheduler}


async def test_status_follows_pod_phases_to_success(cluster, operator):
    await cluster.create_job("ok", job_spec(), generation=1)
    await wait_for(lambda: len(cluster.pods("ok")) == 2, what="pods")
    await wait_for(phase_is(cluster, "ok", "Pending"), what="Pending")
    await cluster.set_pod("ok-node-0", "Running")
    await wait_for(lambda: cluster.status("ok").get("workers", {}).get("running") == 1)
    assert cluster.status("ok")["phase"] == "Pending"  # the gang is not complete yet
    assert cluster.condition("ok", "Running")["reason"] == "PodsPending"
    await cluster.set_pod("ok-node-1", "Running")
    await wait_for(phase_is(cluster, "ok", "Running"), what="Running")
    assert cluster.condition("ok", "Running")["status"] == "True"
    assert cluster.status("ok")["startTime"]

    await cluster.set_pod("ok-node-1", "Succeeded", exit_code=0)
    await asyncio.sleep(0.3)
    assert cluster.status("ok")["phase"] == "Running"  # node 0 still works
    await cluster.set_pod("ok-node-0", "Succeeded", exit_code=0)
    await wait_for(phase_is(cluster, "ok", "Succeeded"), what="Succeeded")
    status = cluster.status("ok")
    assert status["completionTime"] >= status["startTime"]
    assert status["workers"] == {"pending": 0, "running": 0, "succeeded": 2, "failed": 0}
    assert status["restarts"] == 0
    for kind in ("Created", "Succeeded"):
        condition = cluster.condition("ok", kind)
        assert condition["status"] == "True" and condition["observedGeneration"] == 1
        assert condition["lastTransitionTime"].endswith("Z")
    assert cluster.condition("ok", "Running")["status"] == "False"
    await wait_for(
        lambda: {"Created", "Running", "AllPodsSucceeded"} <= set(cluster.event_reasons("ok")),
        what="transition events",
    )
    # Succeeded pods stay (cleanPodPolicy Running deletes only unfinished ones).
    assert len(cluster.pods("ok")) == 2


async def test_failed_worker_restarts_the_whole_gang_until_the_backoff_limit(cluster, operator):
    await started_gang(cluster, "flaky", backoffLimit=1)
    job = {"namespace": "default", "dsgd_job": "flaky"}
    failure = {**job, "reason": "BackoffLimitExceeded"}
    sample = metrics.REGISTRY.get_sample_value
    # Per-job series start at zero as soon as the operator sees the job (increase() in the
    # alerts needs the zero before the first restart or failure).
    assert sample("dsgd_gang_restarts_total", job) == 0
    assert sample("dsgd_job_failures_total", failure) == 0

    await cluster.set_pod("flaky-node-1", "Failed", exit_code=1)
    failed_at = time.monotonic()
    await wait_for(phase_is(cluster, "flaky", "Restarting"), what="Restarting")
    restarting = cluster.condition("flaky", "Restarting")
    assert restarting["status"] == "True" and restarting["reason"] == "ExitCode1"
    assert "flaky-node-1 exited with code 1" in restarting["message"]
    assert cluster.status("flaky")["restarts"] == 1
    # The whole gang goes, including the healthy node 0; then attempt 1 comes back.
    await wait_for(
        lambda: attempts(cluster, "flaky") == {"1"} and len(cluster.pods("flaky")) == 2,
        what="gang attempt 1",
    )
    assert time.monotonic() - failed_at >= FAST_OPTIONS.restart_backoff_seconds * 0.9
    assert cluster.count("POST", "/pods") == 4
    await wait_for(lambda: "GangRestart" in cluster.event_reasons("flaky"), what="event")
    assert sample("dsgd_gang_restarts_total", job) == 1
    assert sample("dsgd_job_running", job) is None  # Restarting: no series

    await cluster.set_gang("flaky", "Running")
    await wait_for(phase_is(cluster, "flaky", "Running"), what="Running again")
    assert cluster.condition("flaky", "Restarting")["status"] == "False"
    await wait_for(lambda: sample("dsgd_job_running", job) == 1, what="dsgd_job_running")
    await cluster.set_pod("flaky-node-0", "Failed", exit_code=137, reason="OOMKilled")
    await wait_for(phase_is(cluster, "flaky", "Failed"), what="Failed")
    failed = cluster.condition("flaky", "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert "OOMKilled" in failed["message"]
    assert cluster.status("flaky")["restarts"] == 1
    # cleanPodPolicy Running: the still-running node 1 is deleted, the failed pod kept.
    await wait_for(lambda: pod_names(cluster, "flaky") == ["flaky-node-0"], what="cleanup")
    assert cluster.count("POST", "/pods") == 4
    await wait_for(lambda: "OOMKilled" in cluster.event_reasons("flaky"), what="OOM event")
    assert sample("dsgd_job_failures_total", failure) == 1
    assert sample("dsgd_job_running", job) is None
    # Deleting the job drops its series: the count follows the jobs that exist.
    await cluster.delete_job("flaky")
    await wait_for(lambda: sample("dsgd_gang_restarts_total", job) is None, what="forgotten")
    assert sample("dsgd_job_failures_total", failure) is None


async def test_non_retryable_exit_code_fails_at_once(cluster, operator):
    await started_gang(cluster, "badcfg", backoffLimit=5)
    await cluster.set_pod("badcfg-node-0", "Failed", exit_code=64)
    await wait_for(phase_is(cluster, "badcfg", "Failed"), what="Failed")
    failed = cluster.condition("badcfg", "Failed")
    assert failed["reason"] == "InvalidConfig"
    assert "not retryable" in failed["message"]
    assert cluster.status("badcfg")["restarts"] == 0
    await asyncio.sleep(FAST_OPTIONS.restart_backoff_seconds * 2)
    assert cluster.count("POST", "/pods") == 2
    assert cluster.condition("badcfg", "Restarting") is None


@pytest.mark.parametrize("how", ["deleted", "evicted"])
async def test_deleted_or_evicted_pod_counts_as_a_failure(cluster, operator, how):
    await started_gang(cluster, "lost")
    if how == "deleted":
        await cluster.delete_pod("lost-node-1")
    else:
        await cluster.set_pod(
            "lost-node-1",
            "Failed",
            reason="Evicted",
            message="The node was low on resource: memory.",
        )
    await wait_for(lambda: cluster.status("lost").get("restarts") == 1, what="a restart")
    reason = cluster.condition("lost", "Restarting")["reason"]
    assert reason == ("PodDeleted" if how == "deleted" else "Evicted")
    await wait_for(
        lambda: attempts(cluster, "lost") == {"1"} and len(cluster.pods("lost")) == 2,
        what="recreated gang",
    )


async def test_suspend_deletes_pods_and_resume_recreates_them(cluster, operator):
    await started_gang(cluster, "pausable")
    await cluster.patch_job("pausable", {"spec": {"runPolicy": {"suspend": True}}})
    await wait_for(phase_is(cluster, "pausable", "Suspended"), what="Suspended")
    await wait_for(lambda: not cluster.pods("pausable"), what="pods deleted")
    assert cluster.condition("pausable", "Suspended")["status"] == "True"
    assert cluster.job("pausable") is not None

    await cluster.patch_job("pausable", {"spec": {"runPolicy": {"suspend": False}}})
    await wait_for(lambda: len(cluster.pods("pausable")) == 2, what="pods recreated")
    await wait_for(phase_is(cluster, "pausable", "Pending"), what="Pending")
    assert cluster.condition("pausable", "Suspended")["status"] == "False"
    assert cluster.status("pausable")["restarts"] == 0  # suspension is not a failure
    await wait_for(lambda: {"Suspended", "Resumed"} <= set(cluster.event_reasons("pausable")))


@pytest.mark.parametrize(
    ("policy", "left"),
    [("All", []), ("Running", ["clean-node-0"]), ("None", ["clean-node-0", "clean-node-1"])],
)
async def test_clean_pod_policy_on_failure(cluster, operator, policy, left):
    await started_gang(cluster, "clean", backoffLimit=0, cleanPodPolicy=policy)
    await cluster.set_pod("clean-node-0", "Failed", exit_code=2)
    await wait_for(phase_is(cluster, "clean", "Failed"), what="Failed")
    await wait_for(lambda: pod_names(cluster, "clean") == left, what=f"pods left: {left}")
    await asyncio.sleep(0.3)
    assert pod_names(cluster, "clean") == left


async def test_ttl_after_finished_deletes_the_job(cluster, operator):
    await started_gang(cluster, "shortlived", ttlSecondsAfterFinished=1, cleanPodPolicy="None")
    await cluster.set_gang("shortlived", "Succeeded", exit_code=0)
    await wait_for(phase_is(cluster, "shortlived", "Succeeded"), what="Succeeded")
    finished = time.monotonic()
    await wait_for(lambda: cluster.job("shortlived") is None, what="job deleted after its TTL")
    assert time.monotonic() - finished >= 0.5
    # The pods go with the job through the garbage collector, which kmock lacks:
    # tests/test_operator_cluster.py checks that on the real control plane.


async def test_active_deadline_fails_the_job_and_cleans_up(cluster, operator):
    await started_gang(cluster, "slow", activeDeadlineSeconds=1)
    await wait_for(phase_is(cluster, "slow", "Failed"), timeout=10, what="deadline")
    assert cluster.condition("slow", "Failed")["reason"] == "DeadlineExceeded"
    await wait_for(lambda: not cluster.pods("slow"), what="running pods deleted")


async def test_invalid_spec_gets_a_condition_an_event_and_nothing_else(cluster, operator):
    spec = job_spec()
    spec["algorithm"]["name"] = "downpour-sgd"
    await cluster.create_job("wrong", spec)
    invalid = await wait_for(lambda: cluster.condition("wrong", "Invalid"), what="Invalid")
    assert invalid["status"] == "True" and invalid["reason"] == "InvalidSpec"
    assert "spec.algorithm.name" in invalid["message"]
    await wait_for(lambda: "InvalidSpec" in cluster.event_reasons("wrong"), what="event")
    assert cluster.status("wrong")["phase"] == "Pending"
    assert not cluster.pods("wrong") and cluster.get("v1/services", "wrong") is None
    assert cluster.count("POST", "/pods") + cluster.count("POST", "/configmaps") == 0

    # Fixing the spec lets the job proceed.
    await cluster.patch_job("wrong", {"spec": {"algorithm": {"name": "local-sgd"}}})
    await wait_for(lambda: len(cluster.pods("wrong")) == 2, what="pods after the fix")
    await wait_for(
        lambda: cluster.condition("wrong", "Invalid")["status"] == "False", what="Invalid False"
    )


async def test_topology_change_while_running_is_refused_and_the_gang_kept(cluster, operator):
    await started_gang(cluster, "fixed")
    await cluster.patch_job("fixed", {"spec": {"topology": {"nodes": 4}}})
    invalid = await wait_for(lambda: cluster.condition("fixed", "Invalid"), what="Invalid")
    assert invalid["reason"] == "ImmutableField" and "spec.topology" in invalid["message"]
    assert invalid["observedGeneration"] == 2
    assert cluster.status("fixed")["phase"] == "Running"
    assert pod_names(cluster, "fixed") == ["fixed-node-0", "fixed-node-1"]
    # A restart still recreates the gang as it was applied: 2 nodes.
    await cluster.set_pod("fixed-node-0", "Failed", exit_code=1)
    await wait_for(lambda: attempts(cluster, "fixed") == {"1"} and len(cluster.pods("fixed")) == 2)
    await asyncio.sleep(0.3)
    assert len(cluster.pods("fixed")) == 2


async def test_pods_pending_too_long_and_abnormal_pods_are_reported(cluster):
    options = Operator(
        FAST_OPTIONS.__class__(**{**FAST_OPTIONS.__dict__, "pending_timeout_seconds": 0.5})
    )
    await options.start()
    try:
        await cluster.create_job("stuck", job_spec())
        await wait_for(lambda: len(cluster.pods("stuck")) == 2, what="pods")
        await cluster.set_pod("stuck-node-0", "Pending", waiting="ImagePullBackOff")
        pending = await wait_for(
            lambda: cluster.condition("stuck", "PendingTooLong"), what="PendingTooLong"
        )
        assert pending["status"] == "True" and "2 of 2 pods Pending" in pending["message"]
        await wait_for(
            lambda: {"ImagePullBackOff", "PendingTooLong"} <= set(cluster.event_reasons("stuck")),
            what="warning events",
        )
        warning = next(e for e in cluster.events("stuck") if e["reason"] == "ImagePullBackOff")
        assert warning["type"] == "Warning" and "stuck-node-0" in warning["message"]
        await cluster.set_gang("stuck", "Running")
        await wait_for(phase_is(cluster, "stuck", "Running"), what="Running")
        assert cluster.condition("stuck", "PendingTooLong")["status"] == "False"
        # Each abnormal pod is reported once, not on every pass.
        assert cluster.event_reasons("stuck").count("ImagePullBackOff") == 1
    finally:
        await options.stop()
