"""The pods of a job: one per node, running torchrun (the pod contract); for downpour-sgd
the parameter-server pods follow them (builders/parameter_server_pod.py)."""

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


def port(name: str, number: int) -> dict:
    return {"name": name, "containerPort": number, "protocol": "TCP"}


def member_container(
    job: DistributedSGDJob,
    settings: BuildSettings,
    *,
    command: list[str],
    args: list[str],
    env: list[dict],
    ports: list[dict],
    resources: dict | None,
) -> dict:
    """The one container of a gang member: the job's image and mounts, the secure defaults."""
    image = job.spec.image or settings.default_image
    container: dict = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": image_pull_policy(image, settings.pod_defaults.image_pull_policy),
        "command": command,
    }
    if args:
        container["args"] = args
    container["env"] = env
    container["ports"] = ports
    if resources:
        container["resources"] = resources
    container["volumeMounts"] = container_mounts(job)
    # Rank 0 writes the run's results there (RESULTS_MESSAGE_ENV); the operator reads them
    # from the finished pod's status. Stated, not left to the defaults: the env names it.
    container["terminationMessagePath"] = TERMINATION_MESSAGE_PATH
    container["terminationMessagePolicy"] = "File"
    container["securityContext"] = container_security_context()
    return container


def member_pod(
    job: DistributedSGDJob,
    settings: BuildSettings,
    *,
    name: str,
    labels: dict[str, str],
    container: dict,
    tolerations: list[dict],
) -> dict:
    """Gang member `name` (also its hostname under the job's headless Service).

    restartPolicy Never: a failed member fails the pod, and the operator
    recreates the whole gang (torch.distributed cannot take back a lone rank).
    """
    template = job.spec.template
    annotations = {**template.annotations, **gang_pod_annotations(job)}
    spec: dict = {
        "hostname": name,
        "subdomain": service_name(job.name),
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": pod_volumes(job, settings),
    }
    optional = {
        "schedulerName": pod_scheduler_name(job),
        "priorityClassName": job.spec.scheduling.priority_class_name,
        "serviceAccountName": template.service_account_name,
        "nodeSelector": dict(template.node_selector),
        "affinity": copy.deepcopy(template.affinity),
        "tolerations": tolerations,
        "imagePullSecrets": copy.deepcopy(template.image_pull_secrets),
    }
    spec.update({key: value for key, value in optional.items() if value})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        # A trial's pods carry its experiment labels: its metrics are told apart by trial.
        "metadata": object_meta(
            job, name, {**template.labels, **inherited_labels(job), **labels}, annotations
        ),
        "spec": spec,
    }


def build_pod(
    job: DistributedSGDJob,
    node_rank: int,
    settings: BuildSettings = DEFAULT_SETTINGS,
    attempt: int = 0,
) -> dict:
    """Pod `<job>-node-<node_rank>` of gang attempt `attempt` (the job's status.restarts)."""
    nodes = job.spec.topology.nodes
    if not 0 <= node_rank < nodes:
        raise ValueError(f"node_rank {node_rank} is outside the job's {nodes} nodes")
    if attempt < 0:
        raise ValueError(f"attempt {attempt} is negative")
    container = member_container(
        job,
        settings,
        command=list(COMMAND),
        args=list(ARGS),
        env=container_env(job, node_rank),
        # On every node, although only node 0 listens on it: the pods stay alike.
        ports=[port(RENDEZVOUS_PORT_NAME, RENDEZVOUS_PORT), port(METRICS_PORT_NAME, METRICS_PORT)],
        resources=container_resources(job, settings),
    )
    pod = member_pod(
        job,
        settings,
        name=pod_name(job.name, node_rank),
        labels={**gang_pod_labels(job), **pod_labels(job.name, node_rank, attempt)},
        container=container,
        tolerations=_tolerations(job),
    )
    if job.spec.topology.gpu:
        add_gpu_pod_settings(pod["spec"], settings.gpu_pods)
    return pod


def build_member_pod(
    job: DistributedSGDJob,
    member: int,
    settings: BuildSettings = DEFAULT_SETTINGS,
    attempt: int = 0,
) -> dict:
    """Gang member `member`: node `member`, or parameter server `member − nodes`."""
    # Imported here: parameter_server_pod builds on this module's helpers.
    from dsgd_operator.builders.parameter_server_pod import build_parameter_server_pod

    nodes = job.spec.topology.nodes
    if member < nodes:
        return build_pod(job, member, settings, attempt)
    return build_parameter_server_pod(job, member - nodes, settings, attempt)


def build_pods(
    job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS, attempt: int = 0
) -> list[dict]:
    """All pods of the gang by member: node 0 (the rendezvous host) first, then the other
    nodes, then a downpour-sgd job's parameter servers (members nodes … nodes + S − 1)."""
    return [
        build_member_pod(job, member, settings, attempt)
        for member in range(job.spec.topology.gang_members)
    ]
