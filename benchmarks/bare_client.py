"""The operator benchmark's job, and its anchor: a bare Kubernetes client doing the
operator's work for a job with no operator in between (the fastest the server goes)."""

from __future__ import annotations

from dsgd_operator.builders import build_children
from dsgd_operator.manifest import parse_job
from kubernetes import client

BARE_NAMESPACE = "dsgd-bench-bare"
GROUP, VERSION, PLURAL = "dsgd.io", "v1alpha1", "distributedsgdjobs"


def job_manifest(name: str, nodes: int) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name},
        "spec": {
            "topology": {"nodes": nodes},
            "algorithm": {"name": "local-sgd", "localSteps": 2},
            "optimizer": {"warmupEpochs": 0},
            "training": {"model": "mlp", "epochs": 2, "dataset": {"name": "synthetic"}},
        },
    }


def bare_client_job(api: client.ApiClient, name: str, nodes: int) -> None:
    """A bare client does the operator's work for job `name`: the job itself, then every
    child the builders make (with ownerReferences) and one status patch, in turn."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    policy = client.PolicyV1Api(api)
    creators = {
        "Service": core.create_namespaced_service,
        "ConfigMap": core.create_namespaced_config_map,
        "PodDisruptionBudget": policy.create_namespaced_pod_disruption_budget,
        "Pod": core.create_namespaced_pod,
    }
    manifest = job_manifest(name, nodes)
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, BARE_NAMESPACE, PLURAL, manifest
    )
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DistributedSGDJob",
        "name": name,
        "uid": created["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    job = parse_job({**manifest, "metadata": {"name": name, "namespace": BARE_NAMESPACE}})
    for child in build_children(job):
        child["metadata"]["ownerReferences"] = [owner]
        creators[child["kind"]](BARE_NAMESPACE, child)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, BARE_NAMESPACE, PLURAL, name, {"status": {"phase": "Pending"}}
    )
