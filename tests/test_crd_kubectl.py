"""What `kubectl` shows of the generated CRD, on the real API server and real kubectl.

No operator runs here: the tests write a job's status themselves (as the operator
would, through the status subresource) and read back what the API server keeps and
what kubectl prints: `kubectl explain` descriptions, the `all` category, the wide
printer columns, and the conditions list's map semantics and time format.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests._cluster import Kubectl
from tests._polling import wait_until
from tests._sgdjobs import job_spec

pytestmark = pytest.mark.slow

NOW = "2026-12-02T12:00:00.000Z"


def _condition(kind: str, status: str, reason: str, time: str = NOW) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": "m",
            "lastTransitionTime": time}  # fmt: skip


@pytest.fixture
def job(kubectl: Kubectl, crd_installed: None, namespace: str) -> str:
    manifest = {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": "shown", "namespace": namespace},
        "spec": job_spec(topology={"nodes": 2, "gpu": True, "processesPerNode": 8}),
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    return namespace


def _patch_status(kubectl: Kubectl, namespace: str, status: dict, check: bool = True):
    return kubectl(
        "patch", "-n", namespace, "sgdjob/shown", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}), check=check,
    )  # fmt: skip


def test_kubectl_explain_describes_the_status(kubectl: Kubectl, crd_installed: None) -> None:
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    wait_until(
        lambda: kubectl("explain", "distributedsgdjobs.status", check=False).returncode == 0,
        60, "the CRD's OpenAPI published",
    )  # fmt: skip
    explained = {
        field: kubectl("explain", f"distributedsgdjobs.status.{field}").stdout
        for field in ("phase", "restarts", "workers", "conditions", "startTime")
    }
    assert "Pending, Running, Restarting" in explained["phase"]
    assert "backoffLimit" in explained["restarts"]
    assert "Trainer pods of the current gang" in explained["workers"]
    assert "one per type" in explained["conditions"]
    assert "RFC 3339" in explained["startTime"]
    condition_type = kubectl("explain", "distributedsgdjobs.status.conditions.type").stdout
    assert "ReconcileError" in condition_type and "Failed" in condition_type


def test_jobs_are_in_the_all_category_and_wide_shows_gpus_and_the_failure_reason(
    kubectl: Kubectl, job: str
) -> None:
    assert "distributedsgdjob.dsgd.io/shown" in kubectl("get", "all", "-n", job, "-o=name").stdout
    assert "distributedsgdjob.dsgd.io/shown" in kubectl("get", "dsgd", "-n", job, "-o=name").stdout
    _patch_status(kubectl, job, {"phase": "Failed", "conditions": [
        _condition("Running", "False", "Failed"),
        _condition("Failed", "True", "BackoffLimitExceeded"),
    ]})  # fmt: skip
    narrow = kubectl("get", "sgdjob", "-n", job).stdout.splitlines()
    wide = kubectl("get", "sgdjob", "-n", job, "-o=wide").stdout.splitlines()
    assert "GPU" not in narrow[0].split() and "REASON" not in narrow[0].split()
    header, row = wide[0].split(), wide[1].split()
    assert header[-3:] == ["GPU", "PROCS/NODE", "REASON"], header
    assert row[-3:] == ["true", "8", "BackoffLimitExceeded"], row


def test_conditions_are_a_map_keyed_by_type_with_rfc3339_times(kubectl: Kubectl, job: str) -> None:
    duplicate = _patch_status(kubectl, job, {"conditions": [
        _condition("Running", "True", "A"), _condition("Running", "False", "B"),
    ]}, check=False)  # fmt: skip
    assert duplicate.returncode != 0 and "Duplicate value" in duplicate.stderr, duplicate.stderr
    bad_time = _patch_status(
        kubectl, job, {"conditions": [_condition("Running", "True", "A", time="yesterday")]},
        check=False,
    )  # fmt: skip
    assert bad_time.returncode != 0 and "lastTransitionTime" in bad_time.stderr, bad_time.stderr
    assert "date-time" in bad_time.stderr, bad_time.stderr
    _patch_status(kubectl, job, {"conditions": [_condition("Running", "True", "A")]})
