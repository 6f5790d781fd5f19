"""The pure builders: DistributedSGDJob in, Kubernetes objects (the pod contract) out."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from dsgd_contract.config import TrainingConfig
from dsgd_contract.pod import ARGS, COMMAND, job_labels
from dsgd_operator.builders import (
    BuildSettings,
    build_children,
    build_config_map,
    build_pod,
    build_pods,
    build_service,
)
from dsgd_operator.manifest import parse_job

from tests._build_jobs import (
    CONTRACT_ENV_NAMES,
    FULL_TEMPLATE,
    JOBS,
    K8S_VERSION,
    container,
    cpu_job,
    env_of,
    full_job,
    gpu_job,
    manifest,
    mounts_of,
    volumes_of,
)

# --- every object is a valid Kubernetes object -------------------------------------------


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_every_core_object_validates_against_the_kubernetes_schema(kind: str) -> None:
    job = JOBS[kind]()
    objects = build_children(job)
    core = [obj for obj in objects if obj["apiVersion"] == "v1"]
    assert [obj["kind"] for obj in core] == ["Service", "ConfigMap"] + ["Pod"] * (
        job.spec.topology.nodes
    )
    for obj in core:
        # strict: an unknown or misspelt field is an error, not silently dropped.
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    pod = build_pod(cpu_job(), 0)
    container(pod)["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


# --- the pod contract --------------------------------------------------------------------


@pytest.mark.parametrize("node_rank", [0, 7])
def test_gpu_pod_follows_the_pod_contract(node_rank: int) -> None:
    pod = build_pod(gpu_job(), node_rank, attempt=3)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == f"gpu-job-node-{node_rank}"
    assert meta["namespace"] == "ml"
    assert meta["labels"] == {
        "dsgd.io/job-name": "gpu-job",
        "dsgd.io/node-rank": str(node_rank),
        "dsgd.io/attempt": "3",
        "dsgd.io/role": "worker",
    }
    assert spec["hostname"] == f"gpu-job-node-{node_rank}"
    assert spec["subdomain"] == "gpu-job"
    assert spec["restartPolicy"] == "Never"
    trainer = container(pod)
    assert trainer["name"] == "trainer"
    assert trainer["command"] == ["python", "-m", "dsgd_trainer.launch"] == list(COMMAND)
    assert trainer["args"] == ["--max-restarts=0", "--module", "dsgd_trainer"] == list(ARGS)
    assert env_of(pod) == [
        ("PET_NNODES", "8"),
        ("PET_NPROC_PER_NODE", "2"),
        ("PET_NODE_RANK", str(node_rank)),
        ("PET_MASTER_ADDR", "gpu-job-node-0.gpu-job"),
        ("PET_MASTER_PORT", "29500"),
        ("DSGD_CONFIG", "/etc/dsgd/config.json"),
        ("DSGD_METRICS_PORT", "9400"),
        ("DSGD_JOB_NAME", "gpu-job"),
        ("PROMETHEUS_MULTIPROC_DIR", "/tmp/dsgd-metrics"),
        ("DSGD_RESULTS_MESSAGE_PATH", "/dev/termination-log"),
        ("PYTHONUNBUFFERED", "1"),
        ("NCCL_DEBUG", "WARN"),  # the installation's NCCL default (BuildSettings.gpu_pods)
    ]
    assert {(p["name"], p["containerPort"]) for p in trainer["ports"]} == {
        ("rendezvous", 29500),
        ("metrics", 9400),
    }
    # The config the trainer reads at DSGD_CONFIG is the job's ConfigMap, read-only.
    assert mounts_of(pod)["/etc/dsgd"] == "dsgd-config"
    assert volumes_of(pod)["dsgd-config"]["configMap"] == {"name": "gpu-job-config"}
    config_mount = next(m for m in trainer["volumeMounts"] if m["mountPath"] == "/etc/dsgd")
    assert config_mount["readOnly"] is True
    # Rank 0's results message goes where Kubernetes reads the termination message.
    assert trainer["terminationMessagePath"] == "/dev/termination-log"
    assert trainer["terminationMessagePolicy"] == "File"


def test_a_trials_labels_reach_its_pods_and_no_other_job_label_does() -> None:
    """Trainer series are selected by experiment, cell and seed (PodMonitor podTargetLabels
    copy pod labels): the child job's trial labels are on its pods."""
    trial = {"dsgd.io/experiment": "lin", "dsgd.io/cell": "c3", "dsgd.io/seed": "1"}
    job = parse_job(
        manifest("lin-c3-s1", {"labels": {**trial, "team": "vision"}}, topology={"nodes": 2})
    )
    for pod in build_pods(job):
        labels = pod["metadata"]["labels"]
        assert trial.items() <= labels.items()
        assert "team" not in labels  # job labels are the job's; pod labels come from template


def test_build_pods_makes_one_pod_per_node_in_rank_order() -> None:
    pods = build_pods(gpu_job(), attempt=1)
    assert [pod["metadata"]["name"] for pod in pods] == [f"gpu-job-node-{i}" for i in range(8)]
    assert [dict(env_of(pod))["PET_NODE_RANK"] for pod in pods] == [str(i) for i in range(8)]
    assert {pod["metadata"]["labels"]["dsgd.io/attempt"] for pod in pods} == {"1"}


def test_node_rank_outside_the_gang_is_refused() -> None:
    with pytest.raises(ValueError, match="node_rank 2"):
        build_pod(cpu_job(), 2)


def test_service_is_headless_and_selects_the_pods() -> None:
    job = gpu_job()
    service = build_service(job)
    assert service["metadata"]["name"] == "gpu-job"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert {(p["name"], p["port"]) for p in service["spec"]["ports"]} == {
        ("rendezvous", 29500),
        ("metrics", 9400),
    }
    selector = service["spec"]["selector"]
    assert selector == job_labels("gpu-job") == {"dsgd.io/job-name": "gpu-job"}
    for pod in build_pods(job):
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["subdomain"] == service["metadata"]["name"]


def test_config_map_holds_exactly_the_training_config() -> None:
    job = full_job()
    config_map = build_config_map(job)
    assert config_map["metadata"]["name"] == "full-job-config"
    assert set(config_map["data"]) == {"config.json"}
    wire = json.loads(config_map["data"]["config.json"])
    assert wire == job.spec.training_config().to_wire()
    # The trainer can read it back, and only the training sections are in it.
    assert set(wire) == {"topology", "algorithm", "optimizer", "training"}
    assert TrainingConfig.model_validate(wire) == job.spec.training_config()


def test_pods_and_service_agree_on_the_contract_ports() -> None:
    job = cpu_job()
    service_ports = {(p["name"], p["port"]) for p in build_service(job)["spec"]["ports"]}
    for pod in build_pods(job):
        container_ports = {(p["name"], p["containerPort"]) for p in container(pod)["ports"]}
        assert container_ports == service_ports == {("rendezvous", 29500), ("metrics", 9400)}
        assert container(pod)["imagePullPolicy"] == "IfNotPresent"


def test_bad_build_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="default_image"):
        BuildSettings(default_image="")


def test_image_comes_from_the_spec_else_the_settings() -> None:
    assert container(build_pod(full_job(), 0))["image"] == "registry.example.com/dsgd-trainer:dev"
    settings = BuildSettings(default_image="example.com/trainer:1")
    assert container(build_pod(cpu_job(), 0, settings))["image"] == "example.com/trainer:1"


# --- GPUs and CPUs -----------------------------------------------------------------------


def test_gpu_pod_requests_one_gpu_per_rank_and_shared_memory() -> None:
    pod = build_pod(gpu_job(), 0)
    resources = container(pod)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2"
    assert resources["requests"]["nvidia.com/gpu"] == "2"
    shm = volumes_of(pod)[mounts_of(pod)["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert shm["sizeLimit"] == "4Gi"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    # GPU ranks use NCCL; OMP threads are left to torchrun.
    assert "OMP_NUM_THREADS" not in dict(env_of(pod))


def test_gpu_requests_merge_with_the_users_cpu_and_memory() -> None:
    job = parse_job(
        manifest(
            "gpu-res",
            topology={"nodes": 2, "processesPerNode": 4, "gpu": True},
            template={
                "resources": {
                    "requests": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": 4},
                    "limits": {"memory": "64Gi"},
                },
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "a100"}],
            },
        )
    )
    pod = build_pod(job, 0)
    assert container(pod)["resources"] == {
        "requests": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": "4"},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": "4"},
    }
    # The user's own GPU toleration replaces our default one.
    assert pod["spec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "a100"}
    ]
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_cpu_pod_has_small_shared_memory_no_gpu_and_no_guessed_threads() -> None:
    pod = build_pod(cpu_job(), 0)
    # Not BestEffort: the installation's per-rank defaults (one rank here), no GPU.
    assert container(pod)["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"memory": "8Gi"},
    }
    assert "tolerations" not in pod["spec"]
    shm = volumes_of(pod)["dsgd-shm"]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "512Mi"}
    assert [name for name, _ in env_of(pod)] == CONTRACT_ENV_NAMES


def test_cpu_pod_gets_omp_threads_from_its_cpu_request() -> None:
    # 4 CPUs requested for 2 ranks per pod: 2 threads each, after our env, before the user's.
    names = [name for name, _ in env_of(build_pod(full_job(), 0))]
    assert names == [*CONTRACT_ENV_NAMES, "OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME", "WANDB_API_KEY"]
    assert dict(env_of(build_pod(full_job(), 0)))["OMP_NUM_THREADS"] == "2"
    # A CPU limit alone counts as the request; fewer CPUs than ranks still gives 1 thread.
    job = parse_job(
        manifest(
            "small",
            topology={"processesPerNode": 4},
            template={"resources": {"limits": {"cpu": "1500m"}}},
        )
    )
    assert dict(env_of(build_pod(job, 0)))["OMP_NUM_THREADS"] == "1"


def test_users_omp_threads_wins() -> None:
    template = {**FULL_TEMPLATE, "env": [{"name": "OMP_NUM_THREADS", "value": "7"}]}
    job = parse_job(manifest("omp", topology={"processesPerNode": 2}, template=template))
    env = env_of(build_pod(job, 0))
    assert [value for name, value in env if name == "OMP_NUM_THREADS"] == ["7"]


# --- secure defaults ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(JOBS))
def test_pods_run_with_secure_defaults(kind: str) -> None:
    pod = build_pod(JOBS[kind](), 0)
    spec = pod["spec"]
    security = spec["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (1000,) * 3
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    trainer = container(pod)["securityContext"]
    assert trainer["allowPrivilegeEscalation"] is False
    assert trainer["privileged"] is False
    assert trainer["capabilities"] == {"drop": ["ALL"]}
    assert trainer["readOnlyRootFilesystem"] is True
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    # With a read-only root, every place the trainer writes is a mounted volume.
    mounts = mounts_of(pod)
    # Size-limited (the installation's trainerPods defaults): a runaway writer is evicted
    # rather than filling the node's disk.
    assert volumes_of(pod)[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": "8Gi"}
    for path in (
        JOBS[kind]().spec.training.checkpoint_dir,
        JOBS[kind]().spec.training.resolved_output_dir,
    ):
        assert path in mounts


def test_writable_dirs_get_an_empty_dir_unless_a_volume_covers_them() -> None:
    job = parse_job(manifest("dirs", training={"checkpointDir": "/ckpt", "outputDir": "/out"}))
    pod = build_pod(job, 0)
    mounts = mounts_of(pod)
    assert volumes_of(pod)[mounts["/ckpt"]]["emptyDir"] == {"sizeLimit": "32Gi"}
    assert volumes_of(pod)[mounts["/out"]]["emptyDir"] == {"sizeLimit": "32Gi"}
    # The user's PVC at /checkpoints covers it; /results still needs an emptyDir.
    full = build_pod(full_job(), 0)
    assert mounts_of(full)["/checkpoints"] == "checkpoints"
    assert "dsgd-checkpoints" not in volumes_of(full)
    assert volumes_of(full)[mounts_of(full)["/results"]]["emptyDir"] == {"sizeLimit": "32Gi"}
    # Below /tmp or below a covered directory nothing more is mounted.
    nested = parse_job(
        manifest("nested", training={"checkpointDir": "/tmp/ckpt", "outputDir": "/tmp/out"})
    )
    assert set(mounts_of(build_pod(nested, 0))) == {"/etc/dsgd", "/tmp", "/dev/shm"}
    inside = parse_job(manifest("inside", training={"checkpointDir": "/c", "outputDir": "/c/o"}))
    assert set(mounts_of(build_pod(inside, 0))) == {"/etc/dsgd", "/tmp", "/dev/shm", "/c"}
