"""The pods of a job: one per node, running torchrun (the pod contract)."""

from __future__ import annotations

import copy

from dsgd_contract.pod import (
    ARGS,
    COMMAND,
    CONTAINER_NAME,
    METRICS_PORT,
    METRICS_PORT_NAME,
    RENDEZVOUS_PORT,
    RENDEZVOUS_PORT_NAME,
    TERMINATION_MESSAGE_PATH,
    pod_labels,
    pod_name,
    service_name,
)

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.build_settings import DEFAULT_SETTINGS, BuildSettings
from dsgd_operator.builders.env import container_env
from dsgd_operator.builders.gpu_pods import add_gpu_pod_settings
from dsgd_operator.builders.metadata import inherited_labels, object_meta
from dsgd_operator.builders.pod_defaults import image_pull_policy
from dsgd_operator.builders.pod_group import (
    gang_pod_annotations,
    gang_pod_labels,
    pod_scheduler_name,
)
from dsgd_operator.builders.resources import container_resources
from dsgd_operator.builders.security import container_security_context, pod_security_context
from dsgd_operator.builders.volumes import container_mounts, pod_volumes
from dsgd_operator.pod_layout import GPU_RESOURCE

#: GPU nodes are commonly tainted so that only GPU work lands there.
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}


def _tolerations(job: DistributedSGDJob) -> list[dict]:
    tolerations = copy.deepcopy(job.spec.template.tolerations)
    if job.spec.topology.gpu and all(t.get("key") != GPU_RESOURCE for t in tolerations):
        tolerations.append(dict(GPU_TOLERATION))
    return tolerations


def _port(name: str, number: int) -> dict:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def _container(job: DistributedSGDJob, node_rank: int, settings: BuildSettings) -> dict:
    image = job.spec.image or settings.default_image
    container: dict = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy(image, settings.pod_defaults.image_pull_policy),
        "command": list(COMMAND),
        "args": list(ARGS),
        "env": container_env(job, node_rank),
        # On every node, although only node 0 listens on it: the pods stay alike.
        "ports": [
            _port(RENDEZVOUS_PORT_NAME, RENDEZVOUS_PORT),
            _port(METRICS_PORT_NAME, METRICS_PORT),
        ],
    }
    resources = container_resources(job, settings)
    if resources:
        container["resources"] = resources
    container["volumeMounts"] = container_mounts(job)
    # Rank 0 writes the run's results there (RESULTS_MESSAGE_ENV); the operator reads them
    # from the finished pod's status. Stated, not left to the defaults: the env names it.
    container["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
    container["terminationMessagePolicy"] = "File"
    container["securityContext"] = container_security_context()
    return container


def build_pod(
    job: DistributedSGDJob,
    node_rank: int,
    settings: BuildSettings = DEFAULT_SETTINGS,
    attempt: int = 0,
) -> dict:
    """Pod `<job>-node-<node_rank>` of gang attempt `attempt` (the job's status.restarts).

    restartPolicy Never: a failed worker fails the pod, and the operator
    recreates the whole gang (torch.distributed cannot take back a lone rank).
    """
    nodes = job.spec.topology.nodes
    if not 0 <= node_rank < nodes:
        raise ValueError(f"node_rank {node_rank} is outside the job's {nodes} nodes")
    if attempt < 0:
        raise ValueError(f"attempt {attempt} is negative")
    template = job.spec.template
    labels = {
        **template.labels,
        **inherited_labels(job),
        **gang_pod_labels(job),
        **pod_labels(job.name, node_rank, attempt),
    }
    annotations = {**template.annotations, **gang_pod_annotations(job)}
    spec: dict = {
        "hostname": pod_name(job.name, node_rank),
        "subdomain": service_name(job.name),
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [_container(job, node_rank, settings)],
        "volumes": pod_volumes(job, settings),
    }
    optional = {
        "schedulerName": pod_scheduler_name(job),
        "priorityClassName": job.spec.scheduling.priority_class_name,
        "serviceAccountName": template.service_account_name,
        "nodeSelector": dict(template.node_selector),
        "affinity": copy.deepcopy(template.affinity),
        "tolerations": _tolerations(job),
        "imagePullSecrets": copy.deepcopy(template.image_pull_secrets),
    }
    spec.update({key: value for key, value in optional.items() if value})
    if job.spec.topology.gpu:
        add_gpu_pod_settings(spec, settings.gpu_pods)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": object_meta(job, pod_name(job.name, node_rank), labels, annotations),
        "spec": spec,
    }


def build_pods(
    job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS, attempt: int = 0
) -> list[dict]:
    """All pods of the gang, node 0 (the rendezvous host) first."""
    return [
        build_pod(job, node_rank, settings, attempt) for node_rank in range(job.spec.topology.nodes)
    ]
