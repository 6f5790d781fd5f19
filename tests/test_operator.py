"""The operator (kopf, really running) against the emulated API server (kmock), for specs
the installed CRD would refuse.

On a real server with our CRD these never reach the operator: its schema and
transition rules refuse them first (tests/test_crd_server.py). They reach it
where the CRD is older, was applied without validation, or prunes differently,
which a real server with this CRD cannot produce; the operator must then refuse
them itself. Everything else the operator does is tested against the real API
server: tests/test_operator_lifecycle.py (the test playing the kubelet),
test_operator_cluster.py, _disruption.py and _refusals.py (real trainers).
"""

from __future__ import annotations

import asyncio

from dsgd_contract.pod import ATTEMPT_LABEL

from tests._kmock_cluster import (  # noqa: F401  (fixtures)
    cluster_fixture,
    job_spec,
    operator_fixture,
    wait_for,
)


def phase_is(cluster, job: str, phase: str):
    return lambda: cluster.status(job).get("phase") == phase


async def test_invalid_spec_gets_a_condition_an_event_and_nothing_else(cluster, operator):
    spec = job_spec()
    spec["algorithm"]["name"] = "elastic-averaging-sgd"  # not an algorithm dsgd has
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


async def started_gang(cluster, name: str, nodes: int = 2) -> None:
    await cluster.create_job(name, job_spec(nodes))
    await wait_for(lambda: len(cluster.pods(name)) == nodes, what=f"{nodes} pods of {name}")
    await cluster.set_gang(name, "Running")
    await wait_for(phase_is(cluster, name, "Running"), what=f"{name} Running")


def attempts(cluster, job: str) -> set[str]:
    return {pod["metadata"]["labels"][ATTEMPT_LABEL] for pod in cluster.pods(job)}


def pod_names(cluster, job: str) -> list[str]:
    return [pod["metadata"]["name"] for pod in cluster.pods(job)]


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
