"""Malformed and hostile jobs submitted through the API are refused and create nothing.

On a cluster the CRD's schema and CEL rules refuse most of these first; the
operator must refuse them too (a CRD applied without validation, an older CRD,
an API server that prunes differently), with a message naming the field.
"""

from __future__ import annotations

import pytest

from tests._kmock_cluster import (  # noqa: F401  (fixtures)
    cluster_fixture,
    job_spec,
    operator_fixture,
    wait_for,
)


def spec_with(**changes) -> dict:
    spec = job_spec()
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return spec


HOSTILE = {
    "huge": (spec_with(topology__nodes=100_000), "spec.topology.nodes"),
    "negative-backoff": (spec_with(runPolicy__backoffLimit=-1), "spec.runPolicy.backoffLimit"),
    "negative-lr": (spec_with(optimizer__learningRate=-0.1), "spec.optimizer.learningRate"),
    "unknown-algorithm": (spec_with(algorithm__name="easgd"), "spec.algorithm.name"),
    "privileged": (
        spec_with(template__securityContext={"privileged": True}),
        "spec.template.securityContext: unknown field",
    ),
    "rewire-rendezvous": (
        spec_with(template__env=[{"name": "PET_MASTER_ADDR", "value": "evil.example.com"}]),
        "spec.template.env",
    ),
    "gpu-on-cpu-job": (
        spec_with(template__resources={"limits": {"nvidia.com/gpu": 8}}),
        "nvidia.com/gpu",
    ),
    "not-a-mapping": ("rm -rf /", "spec"),
    # What the default template policy does not allow (dsgd_operator.template_policy).
    "service-account": (
        spec_with(template__serviceAccountName="namespace-admin"),
        "spec.template.serviceAccountName: 'namespace-admin' is not allowed",
    ),
    "nfs-volume": (
        spec_with(template__volumes=[{"name": "n", "nfs": {"server": "s", "path": "/"}}]),
        "spec.template.volumes[0].nfs: nfs volumes are not allowed",
    ),
    "every-taint": (
        spec_with(template__tolerations=[{"operator": "Exists"}]),
        "spec.template.tolerations[0]",
    ),
    "system-priority": (
        spec_with(scheduling__priorityClassName="system-node-critical"),
        "spec.scheduling.priorityClassName: 'system-node-critical' is not allowed",
    ),
}


async def test_hostile_specs_are_refused_with_the_field_named(cluster, operator):
    for name, (spec, _) in HOSTILE.items():
        await cluster.create_job(name, spec)
    too_long = "x" * 70
    await cluster.create_job(too_long, job_spec())
    expectations = {
        **{name: expected for name, (_, expected) in HOSTILE.items()},
        too_long: "metadata.name",
    }

    for name, expected in expectations.items():
        invalid = await wait_for(
            lambda name=name: cluster.condition(name, "Invalid"), what=f"Invalid on {name}"
        )
        assert invalid["status"] == "True" and invalid["reason"] == "InvalidSpec"
        assert expected in invalid["message"], (name, invalid["message"])
        await wait_for(
            lambda name=name: "InvalidSpec" in cluster.event_reasons(name),
            what=f"an InvalidSpec event on {name}",
        )
        warning = next(e for e in cluster.events(name) if e["reason"] == "InvalidSpec")
        assert warning["type"] == "Warning" and expected in warning["message"]
        assert cluster.status(name)["phase"] == "Pending"
        assert cluster.pods(name) == []

    # Nothing at all was created for any of them.
    for resource in ("/pods", "/services", "/configmaps", "/podgroups"):
        assert cluster.count("POST", resource) == 0, resource


@pytest.mark.parametrize("nodes", [0, 513])
async def test_node_count_bounds(cluster, operator, nodes):
    await cluster.create_job("bounds", spec_with(topology__nodes=nodes))
    invalid = await wait_for(lambda: cluster.condition("bounds", "Invalid"), what="Invalid")
    assert "spec.topology.nodes" in invalid["message"]
    assert cluster.count("POST", "/pods") == 0
