"""What an installation adds to GPU jobs' pods (issue 17): runtime class, RDMA + IPC_LOCK, NCCL env.

From the Helm values (`helm template`, the real CLI) through the operator's
environment (OperatorOptions.from_env) to the pods the builders make, checked
against the Kubernetes schema; bad settings are refused with the setting named.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
from dsgd_operator.builders import BuildSettings, GpuPodSettings, build_pod
from dsgd_operator.builders.pod_defaults import PodDefaults
from dsgd_operator.manifest import parse_job
from dsgd_operator.reconcile.options import OperatorOptions
from kubernetes_validate.utils import latest_version

from tests._helm_chart import HelmError, objects_of_kind, render

K8S_VERSION = latest_version()


def manifest(name: str, **spec: object) -> dict:
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name},
        "spec": spec,
    }


def cpu_job():
    return parse_job(manifest("cpu-job", topology={"nodes": 2}))


def gpu_job():
    return parse_job(manifest("gpu-job", topology={"nodes": 8, "processesPerNode": 2, "gpu": True}))


def container(pod: dict) -> dict:
    (only,) = pod["spec"]["containers"]
    return only


def env_of(pod: dict) -> list[tuple[str, str | None]]:
    return [(var["name"], var.get("value")) for var in container(pod)["env"]]


def _only(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    (obj,) = objects_of_kind(kind, values)
    return obj


#: No per-rank cpu/memory defaults (tests/test_pod_defaults.py has those): the resources
#: seen here are the GPU settings' alone.
NO_POD_DEFAULTS = PodDefaults(requests_per_process={}, limits_per_process={})
RDMA_SETTINGS = BuildSettings(
    pod_defaults=NO_POD_DEFAULTS,
    gpu_pods=GpuPodSettings.from_json(
        "nvidia",
        '{"rdma/rdma_shared_device_a": 1}',
        '{"NCCL_DEBUG": "WARN", "NCCL_IB_HCA": "mlx5_0,mlx5_1"}',
    ),
)


def test_gpu_pods_get_the_runtime_class_rdma_devices_ipc_lock_and_nccl_env() -> None:
    job = parse_job(
        manifest(
            "rdma",
            topology={"nodes": 2, "processesPerNode": 4, "gpu": True},
            template={"env": [{"name": "NCCL_DEBUG", "value": "INFO"}]},
        )
    )
    pod = build_pod(job, 1, RDMA_SETTINGS)
    assert pod["spec"]["runtimeClassName"] == "nvidia"
    trainer = container(pod)
    for section in ("limits", "requests"):
        assert trainer["resources"][section] == {
            "nvidia.com/gpu": "4",
            "rdma/rdma_shared_device_a": "1",
        }
    security = trainer["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert security["allowPrivilegeEscalation"] is False and security["privileged"] is False
    env = env_of(pod)
    # The job's own NCCL_DEBUG wins (once, its value); the installation's other defaults apply.
    assert [value for name, value in env if name == "NCCL_DEBUG"] == ["INFO"]
    assert ("NCCL_IB_HCA", "mlx5_0,mlx5_1") in env
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_cpu_pods_get_nothing_of_the_gpu_settings() -> None:
    pod = build_pod(cpu_job(), 0, RDMA_SETTINGS)
    assert "runtimeClassName" not in pod["spec"]
    assert "resources" not in container(pod)
    assert container(pod)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert not [name for name, _ in env_of(pod) if name.startswith("NCCL_")]


def test_without_rdma_resources_gpu_pods_keep_every_capability_dropped() -> None:
    pod = build_pod(
        gpu_job(),
        0,
        BuildSettings(
            pod_defaults=NO_POD_DEFAULTS, gpu_pods=GpuPodSettings(runtime_class_name="nvidia")
        ),
    )
    assert container(pod)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert set(container(pod)["resources"]["limits"]) == {"nvidia.com/gpu"}


@pytest.mark.parametrize(
    ("runtime_class", "rdma", "nccl", "complaint"),
    [
        ("NVIDIA", "", "", "runtimeClassName 'NVIDIA' is not a RuntimeClass name"),
        ("", '{"hca": 1}', "", "rdmaResources: 'hca' is not an extended resource name"),
        ("", '{"rdma/hca": 0}', "", "rdmaResources.rdma/hca: '0' is not a positive whole number"),
        ("", '{"rdma/hca": "1.5"}', "", "is not a positive whole number"),
        ("", "[1]", "", "rdmaResources: expected a JSON object"),
        ("", "", "{bad", "ncclEnv: not a JSON object"),
        ("", "", '{"NCCL DEBUG": "WARN"}', "ncclEnv: 'NCCL DEBUG' is not an environment variable"),
        ("", "", '{"NCCL_DEBUG": null}', "ncclEnv.NCCL_DEBUG: expected a string or a number"),
    ],
)
def test_bad_gpu_pod_settings_are_refused_naming_the_setting(
    runtime_class: str, rdma: str, nccl: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        GpuPodSettings.from_json(runtime_class, rdma, nccl)


def test_gpu_pod_defaults_of_the_chart_are_the_operators() -> None:
    deployment = _only("Deployment", {})
    env = {
        var["name"]: var["value"]
        for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        if "value" in var
    }
    gpu_env = {name: value for name, value in env.items() if name.startswith("DSGD_GPU_")}
    options = OperatorOptions.from_env(gpu_env)
    assert options.build_settings.gpu_pods == GpuPodSettings()


@pytest.mark.parametrize(
    "gpu_pods",
    [{"rdmaResources": {"rdma/hca": 0}}, {"runtimeClassName": "Nvidia"}, {"typo": 1}],
)
def test_chart_refuses_bad_gpu_pod_values(gpu_pods: dict[str, Any]) -> None:
    with pytest.raises(HelmError, match="gpuPods"):
        render({"gpuPods": gpu_pods})


def test_gpu_pod_options_from_env_reach_the_builders_and_bad_ones_stop_the_start():
    options = OperatorOptions.from_env(
        {
            "DSGD_GPU_RUNTIME_CLASS_NAME": "nvidia",
            "DSGD_GPU_RDMA_RESOURCES": '{"nvidia.com/hostdev": 2}',
            "DSGD_GPU_NCCL_ENV": '{"NCCL_DEBUG": "INFO", "NCCL_SOCKET_IFNAME": "eth0"}',
        }
    )
    gpu_pods = options.build_settings.gpu_pods
    assert gpu_pods.runtime_class_name == "nvidia"
    assert gpu_pods.rdma_resources == (("nvidia.com/hostdev", "2"),)
    assert gpu_pods.ipc_lock
    assert gpu_pods.nccl_env == (("NCCL_DEBUG", "INFO"), ("NCCL_SOCKET_IFNAME", "eth0"))
    # Nothing set: no runtime class, no RDMA, NCCL_DEBUG=WARN.
    defaults = OperatorOptions.from_env({}).build_settings.gpu_pods
    assert (defaults.runtime_class_name, defaults.rdma_resources) == ("", ())
    assert defaults.nccl_env == (("NCCL_DEBUG", "WARN"),) and not defaults.ipc_lock
    with pytest.raises(ValueError, match=r"DSGD_GPU_\* settings: rdmaResources: not a JSON"):
        OperatorOptions.from_env({"DSGD_GPU_RDMA_RESOURCES": "rdma/hca=1"})
