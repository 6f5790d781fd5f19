"""Jobs and pod readers shared by the builder tests (test_build*.py)."""

from __future__ import annotations

import pytest
from dsgd_operator.manifest import ManifestError, parse_job
from kubernetes_validate.utils import latest_version

K8S_VERSION = latest_version()

CONTRACT_ENV_NAMES = [
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
    "DSGD_CONFIG",
    "DSGD_METRICS_PORT",
    "DSGD_JOB_NAME",
    "PROMETHEUS_MULTIPROC_DIR",
    "DSGD_RESULTS_MESSAGE_PATH",
    "PYTHONUNBUFFERED",
]


def manifest(name: str = "demo", metadata: dict | None = None, **spec: object) -> dict:
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name, **(metadata or {})},
        "spec": spec,
    }


def cpu_job():
    return parse_job(manifest("cpu-job", topology={"nodes": 2}))


def gpu_job():
    return parse_job(
        manifest(
            "gpu-job",
            {"namespace": "ml", "uid": "0b1c2d3e-0000-4000-8000-000000000001"},
            topology={"nodes": 8, "processesPerNode": 2, "gpu": True},
        )
    )


FULL_TEMPLATE = {
    "labels": {"team": "vision", "app.kubernetes.io/part-of": "sweeps"},
    "annotations": {"example.com/owner": "alice"},
    "nodeSelector": {"cloud.example.com/pool": "cpu-large"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                ]
            }
        }
    },
    "volumes": [
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "demo-ckpt"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
    ],
    "volumeMounts": [
        {"name": "checkpoints", "mountPath": "/checkpoints"},
        {"name": "data", "mountPath": "/data", "readOnly": True},
    ],
    "env": [
        {"name": "GLOO_SOCKET_IFNAME", "value": "eth0"},
        {
            "name": "WANDB_API_KEY",
            "valueFrom": {"secretKeyRef": {"name": "wandb", "key": "api-key"}},
        },
    ],
    "resources": {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}},
    "imagePullSecrets": [{"name": "registry-credentials"}],
    "serviceAccountName": "trainer",
}


def full_job():
    """A CPU job with every template override, gang-scheduled by Volcano."""
    return parse_job(
        manifest(
            "full-job",
            {"namespace": "research", "uid": "0b1c2d3e-0000-4000-8000-000000000002"},
            image="registry.example.com/dsgd-trainer:dev",
            topology={"nodes": 3, "processesPerNode": 2},
            training={"checkpointDir": "/checkpoints", "outputDir": "/results"},
            scheduling={
                "schedulerName": "volcano",
                "queue": "research",
                "priorityClassName": "low",
            },
            template=FULL_TEMPLATE,
        )
    )


JOBS = {"cpu": cpu_job, "gpu": gpu_job, "full": full_job}


def container(pod: dict) -> dict:
    (only,) = pod["spec"]["containers"]
    return only


def env_of(pod: dict) -> list[tuple[str, str | None]]:
    return [(var["name"], var.get("value")) for var in container(pod)["env"]]


def mounts_of(pod: dict) -> dict[str, str]:
    return {mount["mountPath"]: mount["name"] for mount in container(pod)["volumeMounts"]}


def volumes_of(pod: dict) -> dict[str, dict]:
    return {volume["name"]: volume for volume in pod["spec"]["volumes"]}


def problems_of(document: dict) -> tuple[str, ...]:
    with pytest.raises(ManifestError) as caught:
        parse_job(document)
    return caught.value.problems
