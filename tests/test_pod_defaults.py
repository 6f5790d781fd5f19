"""Trainer pods get the installation's defaults for what their job does not say.

The issue-14 probe found trainer pods BestEffort (first to be evicted) when
template.resources was unset, their emptyDirs unbounded, and imagePullPolicy
IfNotPresent even for `:latest`. Now: per-rank requests and limits × processes,
GPUs from the topology, size-limited emptyDirs, and the pull policy Kubernetes
itself would choose, checked against the real API server's defaulting.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from dsgd_operator.builders import BuildSettings, build_pod, build_pod_group
from dsgd_operator.builders.pod_defaults import PodDefaults, image_pull_policy
from dsgd_operator.manifest import parse_job
from dsgd_operator.reconcile.options import OperatorOptions
from kubernetes import client

from tests._crd_cases import job
from tests._helm_chart import objects_of_kind

K8S_VERSION = kubernetes_validate.latest_version()


def trainer(spec: dict[str, Any], settings: BuildSettings | None = None) -> dict[str, Any]:
    pod = build_pod(parse_job(job(spec)), 0, settings or BuildSettings())
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    return pod


def qos_class(resources: dict[str, Any]) -> str:
    """Kubernetes' QoS class of a one-container pod (pkg/apis/core/helper/qos, transcribed)."""
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    if not requests and not limits:
        return "BestEffort"
    cpu_mem = ("cpu", "memory")
    if all(limits.get(r) and requests.get(r, limits[r]) == limits[r] for r in cpu_mem):
        return "Guaranteed"
    return "Burstable"


def test_a_pod_without_resources_is_burstable_with_per_rank_defaults() -> None:
    pod = trainer({"topology": {"nodes": 2, "processesPerNode": 3}})
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "3", "memory": "6Gi"}, "limits": {"memory": "24Gi"}}
    assert qos_class(resources) == "Burstable"


def test_gpus_come_from_the_topology_next_to_the_defaults() -> None:
    pod = trainer({"topology": {"nodes": 1, "processesPerNode": 4, "gpu": True}})
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "4"}
    assert resources["limits"] == {"memory": "32Gi", "nvidia.com/gpu": "4"}


def test_a_resource_the_job_names_is_left_to_the_job() -> None:
    """A memory limit below the default request: no default request (Kubernetes makes the
    request equal to the limit), so the pod stays valid; cpu still gets its default."""
    spec = {"template": {"resources": {"limits": {"memory": "1Gi"}}}}
    resources = trainer(spec)["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}}


def test_installation_defaults_replace_the_chart_defaults() -> None:
    defaults = PodDefaults(
        requests_per_process={"cpu": "4", "memory": "16Gi"},
        limits_per_process={"cpu": "4", "memory": "16Gi"},
        tmp_size_limit=None,
        scratch_size_limit="1Ti",
    )
    settings = BuildSettings(pod_defaults=defaults)
    pod = trainer({"training": {"checkpointDir": "/ckpt"}}, settings)
    resources = pod["spec"]["containers"][0]["resources"]
    assert qos_class(resources) == "Guaranteed"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["dsgd-tmp"]["emptyDir"] == {}
    assert volumes["dsgd-checkpoints"]["emptyDir"] == {"sizeLimit": "1Ti"}
    gang = parse_job(job({"topology": {"nodes": 3}, "scheduling": {"schedulerName": "volcano"}}))
    group = build_pod_group(gang, settings)
    assert group["spec"]["minResources"] == {"cpu": "12", "memory": "48Gi"}


def test_emptydirs_are_size_limited_by_default() -> None:
    pod = trainer({"training": {"checkpointDir": "/ckpt", "outputDir": "/out"}})
    volumes = {v["name"]: v["emptyDir"] for v in pod["spec"]["volumes"] if "emptyDir" in v}
    assert volumes == {
        "dsgd-tmp": {"sizeLimit": "8Gi"},
        "dsgd-shm": {"medium": "Memory", "sizeLimit": "512Mi"},
        "dsgd-checkpoints": {"sizeLimit": "32Gi"},
        "dsgd-output": {"sizeLimit": "32Gi"},
    }


IMAGES = [
    "busybox",
    "busybox:latest",
    "busybox:1.36",
    "registry.example.com:5000/ml/trainer",
    "registry.example.com:5000/ml/trainer:2",
    "registry.example.com:5000/ml/trainer:latest",
    "busybox@sha256:" + "a" * 64,
    "busybox:latest@sha256:" + "b" * 64,
]


def test_the_default_pull_policy_is_what_the_api_server_defaults(kube_api, namespace) -> None:
    """Oracle: the real API server's defaulting of a pod without imagePullPolicy."""
    core = client.CoreV1Api(kube_api)
    for image in IMAGES:
        pod = trainer({"image": image})
        container = pod["spec"]["containers"][0]
        del container["imagePullPolicy"]
        pod["metadata"]["namespace"] = namespace
        created = core.create_namespaced_pod(namespace, pod, dry_run="All")
        defaulted = created.spec.containers[0].image_pull_policy
        assert image_pull_policy(image, "Default") == defaulted, image
        built = trainer({"image": image})["spec"]["containers"][0]["imagePullPolicy"]
        assert built == defaulted, image


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("busybox:1.36", "Always"),
        ("busybox", "Always"),
        ("busybox@sha256:" + "a" * 64, "IfNotPresent"),
    ],
)
def test_always_unless_digest_pulls_every_tag_again(image: str, expected: str) -> None:
    settings = BuildSettings(pod_defaults=PodDefaults(image_pull_policy="AlwaysUnlessDigest"))
    pod = trainer({"image": image}, settings)
    assert pod["spec"]["containers"][0]["imagePullPolicy"] == expected


VALUES = {
    "trainerPods": {
        "requestsPerProcess": {"cpu": "6", "memory": "30Gi"},
        "limitsPerProcess": {"memory": "60Gi"},
        "tmpSizeLimit": "",  # no limit (Helm would drop a null and keep the chart's 8Gi)
        "scratchSizeLimit": "100Gi",
        "imagePullPolicy": "AlwaysUnlessDigest",
    }
}


def test_helm_values_reach_the_operator_as_the_same_defaults() -> None:
    for values, expected in ((VALUES, PodDefaults.model_validate(VALUES["trainerPods"])),
                             ({}, PodDefaults())):  # fmt: skip
        (deployment,) = objects_of_kind("Deployment", values)
        env = {
            var["name"]: var["value"]
            for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            if "value" in var
        }
        options = OperatorOptions.from_env(env)
        assert options.pod_defaults == expected
        assert options.build_settings.pod_defaults == expected


def test_bad_defaults_stop_the_operator_with_one_line() -> None:
    with pytest.raises(ValueError) as refused:
        OperatorOptions.from_env({"DSGD_POD_DEFAULTS": '{"requestsPerProcess": {"gpu": "1"}}'})
    assert str(refused.value) == (
        "DSGD_POD_DEFAULTS: trainer pod defaults: requestsPerProcess: gpu: use cpu, memory, "
        "ephemeral-storage"
    )
