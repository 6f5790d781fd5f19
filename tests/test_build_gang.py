"""The pure builders: gang scheduling (PodGroups, disruption budget), ownership and purity."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest
from dsgd_operator.builders import (
    build_children,
    build_pod,
    build_pod_disruption_budget,
    build_pod_group,
    build_pods,
)
from dsgd_operator.manifest import parse_job

from tests._build_jobs import (
    JOBS,
    K8S_VERSION,
    container,
    cpu_job,
    full_job,
    gpu_job,
    manifest,
)

# --- gang scheduling ---------------------------------------------------------------------


def test_volcano_gets_a_pod_group_and_annotated_pods() -> None:
    job = full_job()
    group = build_pod_group(job)
    assert group is not None
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert group["kind"] == "PodGroup"
    assert group["metadata"]["name"] == "full-job"
    assert group["metadata"]["namespace"] == "research"
    assert group["spec"]["minMember"] == 3
    assert group["spec"]["queue"] == "research"
    assert group["spec"]["priorityClassName"] == "low"
    # The whole gang's request: 3 pods × (4 CPUs, 8Gi requested).
    assert group["spec"]["minResources"] == {"cpu": "12", "memory": "24Gi"}
    for pod in build_pods(job):
        assert pod["spec"]["schedulerName"] == "volcano"
        assert pod["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == "full-job"


def test_scheduler_plugins_gets_a_pod_group_and_labelled_pods() -> None:
    job = parse_job(
        manifest(
            "coscheduled",
            topology={"nodes": 8, "processesPerNode": 2, "gpu": True},
            scheduling={"schedulerName": "scheduler-plugins", "priorityClassName": "high"},
        )
    )
    group = build_pod_group(job)
    assert group is not None
    assert group["apiVersion"] == "scheduling.x-k8s.io/v1alpha1"
    assert group["kind"] == "PodGroup"
    assert group["metadata"]["name"] == "coscheduled"
    # The whole gang's requests: 8 pods × 2 ranks × the default 1 CPU and 2Gi per rank.
    assert group["spec"] == {
        "minMember": 8,
        "minResources": {"cpu": "16", "memory": "32Gi", "nvidia.com/gpu": "16"},
    }
    for pod in build_pods(job):
        assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
        assert pod["spec"]["priorityClassName"] == "high"
        assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "coscheduled"
        assert "annotations" not in pod["metadata"]
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_other_schedulers_get_no_pod_group() -> None:
    job = parse_job(manifest("custom", scheduling={"schedulerName": "my-scheduler"}))
    assert build_pod_group(job) is None
    assert build_pod(job, 0)["spec"]["schedulerName"] == "my-scheduler"
    assert build_pod_group(cpu_job()) is None
    assert "schedulerName" not in build_pod(cpu_job(), 0)["spec"]


def test_children_come_in_creation_order() -> None:
    assert [o["kind"] for o in build_children(full_job())] == [
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "PodGroup",
        "Pod",
        "Pod",
        "Pod",
    ]
    assert [o["kind"] for o in build_children(cpu_job())] == [
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "Pod",
        "Pod",
    ]


def test_disruption_budget_keeps_the_whole_gang_of_the_job() -> None:
    job = gpu_job()
    budget = build_pod_disruption_budget(job)
    assert budget["metadata"]["name"] == job.name
    assert budget["spec"]["minAvailable"] == job.spec.topology.nodes
    # It selects exactly the job's pods, every attempt.
    labels = build_pod(job, 0, attempt=3)["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"] == {"dsgd.io/job-name": job.name}


# --- ownership ---------------------------------------------------------------------------


def test_children_are_owned_by_the_job_when_it_has_a_uid() -> None:
    job = gpu_job()
    for obj in build_children(job):
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "dsgd.io/v1alpha1",
                "kind": "DistributedSGDJob",
                "name": "gpu-job",
                "uid": "0b1c2d3e-0000-4000-8000-000000000001",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert obj["metadata"]["namespace"] == "ml"
        assert obj["metadata"]["labels"]["dsgd.io/job-name"] == "gpu-job"


def test_rendered_children_have_no_owner_or_namespace_without_them() -> None:
    for obj in build_children(cpu_job()):
        assert "ownerReferences" not in obj["metadata"]
        assert "namespace" not in obj["metadata"]


# --- purity ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_builders_are_pure(kind: str) -> None:
    job = JOBS[kind]()
    before = job.model_dump(mode="json", by_alias=True)
    first = build_children(job, attempt=2)
    snapshot = copy.deepcopy(first)
    # Scribble over everything the first result shares with the job's dicts.
    for obj in first:
        obj["metadata"]["labels"]["scribbled"] = "yes"
        if obj["kind"] == "Pod":
            spec = obj["spec"]
            for key in ("tolerations", "volumes", "imagePullSecrets"):
                for item in spec.get(key, []):
                    item["scribbled"] = "yes"
            spec.get("affinity", {})["scribbled"] = "yes"
            trainer = container(obj)
            for key in ("env", "volumeMounts"):
                for item in trainer[key]:
                    item["scribbled"] = "yes"
            for section in trainer.get("resources", {}).values():
                section["scribbled"] = "1"
    assert job.model_dump(mode="json", by_alias=True) == before
    assert build_children(job, attempt=2) == snapshot
