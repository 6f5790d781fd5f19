"""Reconcile errors reach the user: what only a real API server refuses.

Each job below passes `dsgd validate` (pydantic and the CRD's schema accept it),
yet the API server refuses an object the operator creates for it: Pod Security
admission (403), a missing PodGroup API (404), pod validation (422), a
ResourceQuota (403). The job must then say so: condition ReconcileError with
the server's reason and message, and a Warning Event ApiRefused, instead of
`status: {}` and a job that silently never starts.
"""

from __future__ import annotations

import json

import pytest
from dsgd_operator.template_policy import RESTRICTED_VOLUME_TYPES
from kubernetes import client

from tests._operator_process import operator as operator
from tests._polling import wait_until
from tests._sgdjobs import Jobs, job_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NFS = {
    "volumes": [{"name": "share", "nfs": {"server": "nfs.example", "path": "/data"}}],
    "volumeMounts": [{"name": "share", "mountPath": "/share"}],
}
CASES = {
    # restricted allows only ephemeral and claim-like volume types
    "pod-security": ({"template": NFS}, 403, "Forbidden", 'violates PodSecurity "restricted'),
    "no-podgroup-api": (
        {"scheduling": {"schedulerName": "volcano"}},
        404,
        "NotFound",
        "the PodGroup API scheduling.volcano.sh/v1beta1 is not installed",
    ),
    # a container resource the downward API does not serve: only the server checks it
    "invalid-pod": (
        {
            "template": {
                "env": [{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.x"}}}]
            }
        },
        422,
        "Invalid",
        "valueFrom.resourceFieldRef.resource",
    ),
}


@pytest.fixture(autouse=True)
def installation_allowing_nfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installation whose template policy allows NFS volumes (the default policy refuses
    them up front: tests/test_template_policy.py): here the namespace's Pod Security
    admission is what refuses them. Set before the operator fixture starts the process."""
    policy = {"allowedVolumeTypes": [*RESTRICTED_VOLUME_TYPES, "nfs"]}
    monkeypatch.setenv("DSGD_TEMPLATE_POLICY", json.dumps(policy))


def refused(jobs: Jobs, name: str) -> dict:
    """The ReconcileError condition once it is True."""
    return wait_until(
        lambda: (c := jobs.condition(name, "ReconcileError")) and c["status"] == "True" and c,
        90,
        f"condition ReconcileError on {name}",
    )


def assert_reported(jobs: Jobs, name: str, code: int, reason: str, text: str) -> None:
    condition = refused(jobs, name)
    assert condition["reason"] == reason, condition
    assert condition["message"].startswith(f"{code} {reason}: "), condition
    assert text in condition["message"], condition
    events = wait_until(
        lambda: [e for e in jobs.events(name) if e.reason == "ApiRefused"], 30, "event"
    )
    assert events[0].type == "Warning" and events[0].message == condition["message"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_child_gives_a_condition_and_a_warning_event(kube_api, namespace, operator, case):
    sections, code, reason, text = CASES[case]
    jobs = Jobs(kube_api, namespace)
    jobs.create("refused", job_spec(**sections))
    assert_reported(jobs, "refused", code, reason, text)
    assert not [p for p in jobs.pods("refused") if p.metadata.name.startswith("refused-node")]


def test_quota_exceeded_is_reported_and_clears_once_the_quota_goes(kube_api, namespace, operator):
    core = client.CoreV1Api(kube_api)
    quota = {"metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}}}
    core.create_namespaced_resource_quota(namespace, quota)
    # Quota admission refuses everything until the quota controller has computed usage.
    wait_until(
        lambda: core.read_namespaced_resource_quota("one-pod", namespace).status.used or {},
        60,
        "the quota's usage computed",
    )
    jobs = Jobs(kube_api, namespace)
    jobs.create("quota", job_spec(epochs=1))
    assert_reported(jobs, "quota", 403, "Forbidden", "exceeded quota: one-pod")
    assert len(jobs.pods("quota")) == 1  # the first pod fit, the second did not
    assert jobs.phase("quota") in (None, "Pending")

    core.delete_namespaced_resource_quota("one-pod", namespace)
    status = jobs.wait_phase("quota", "Succeeded", 240)
    cleared = next(c for c in status["conditions"] if c["type"] == "ReconcileError")
    assert cleared["status"] == "False" and cleared["reason"] == "Reconciled"
    assert status["restarts"] == 0
