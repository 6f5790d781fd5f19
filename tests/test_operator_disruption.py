"""Evictions on the real control plane: the job's PodDisruptionBudget and the
disruption accounting.

Oracles: the API server's Eviction subresource (429 while the PDB holds; on
success it marks the pod with condition DisruptionTarget before deleting it),
the disruption controller (the PDB's status), and the job's status.
"""

from __future__ import annotations

import pytest
from dsgd_operator import api
from kubernetes import client

from tests._operator_process import operator as operator
from tests._polling import wait_until
from tests._sgdjobs import Jobs, job_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def evict(core: client.CoreV1Api, namespace: str, pod: str) -> int:
    """POST the pod's eviction; the HTTP status (201 evicted, 429 refused by a PDB)."""
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod}}
    try:
        core.create_namespaced_pod_eviction(pod, namespace, body)
    except client.ApiException as error:
        return error.status
    return 201


def test_running_gang_is_protected_and_an_eviction_is_a_disruption_not_a_failure(
    kube_api, namespace, operator
):
    core = client.CoreV1Api(kube_api)
    policy = client.PolicyV1Api(kube_api)
    jobs = Jobs(kube_api, namespace)
    # backoffLimit 0: one counted failure would fail the job.
    created = jobs.create("evict", job_spec(epochs=60, runPolicy={"backoffLimit": 0}))
    jobs.wait_phase("evict", "Running", 120)

    budget = policy.read_namespaced_pod_disruption_budget("evict", namespace)
    assert budget.spec.min_available == 2
    owner = budget.metadata.owner_references[0]
    assert (owner.kind, owner.uid) == (api.KIND, created["metadata"]["uid"])
    wait_until(
        lambda: (
            (s := policy.read_namespaced_pod_disruption_budget("evict", namespace).status)
            and s.current_healthy == 2
        ),
        60,
        "the disruption controller to count the gang healthy",
    )
    assert evict(core, namespace, "evict-node-1") == 429
    assert jobs.status("evict")["restarts"] == 0

    # An administrator who must drain now removes the budget; the eviction then goes through.
    policy.delete_namespaced_pod_disruption_budget("evict", namespace)
    assert evict(core, namespace, "evict-node-1") == 201
    wait_until(lambda: jobs.status("evict").get("restarts") == 1, 60, "a gang restart")
    status = jobs.status("evict")
    assert status.get("disruptions") == 1
    restarting = jobs.condition("evict", "Restarting")
    assert restarting["reason"] == "EvictionByEvictionAPI", restarting
    assert "does not count against backoffLimit" in restarting["message"]

    # The second attempt runs; the job did not fail although backoffLimit is 0.
    wait_until(
        lambda: (
            jobs.phase("evict") == "Running"
            and {p.metadata.labels[f"{api.GROUP}/attempt"] for p in jobs.pods("evict")} == {"1"}
        ),
        120,
        "attempt 1 running",
    )
    assert jobs.status("evict")["restarts"] == 1
    assert jobs.condition("evict", "Failed") is None
