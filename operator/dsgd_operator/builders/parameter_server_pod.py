"""A downpour-sgd job's parameter-server pods `<job>-ps-<i>` (the pod contract).

Gang member nodes + i of the same attempt, under the job's headless Service
(server 0 hosts the RPC store at `<job>-ps-0.<job>`), with the job's image,
volumes (the checkpoint volume: servers checkpoint their shards there) and the
same secure defaults as the trainer pods. They are CPU pods whatever
topology.gpu says: no GPU resources, no GPU toleration, no GPU runtime.
Resources: template.parameterServerResources, and the installation's per-rank
defaults for what it leaves out (resources.parameter_server_resources).
"""

from __future__ import annotations

import copy

from dsgd_contract.pod import (
    METRICS_PORT,
    METRICS_PORT_NAME,
    PARAMETER_SERVER,
    PS_COMMAND,
    PS_PORT,
    PS_PORT_NAME,
    parameter_server_address,
    parameter_server_env,
    parameter_server_pod_name,
    pod_labels,
)

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.build_settings import DEFAULT_SETTINGS, BuildSettings
from dsgd_operator.builders.pod import member_container, member_pod, port
from dsgd_operator.builders.pod_group import gang_pod_labels
from dsgd_operator.builders.resources import parameter_server_resources


def build_parameter_server_pod(
    job: DistributedSGDJob,
    index: int,
    settings: BuildSettings = DEFAULT_SETTINGS,
    attempt: int = 0,
) -> dict:
    """Pod `<job>-ps-<index>` of gang attempt `attempt`."""
    topology = job.spec.topology
    if not 0 <= index < topology.parameter_servers:
        raise ValueError(
            f"parameter server {index} is outside the job's {topology.parameter_servers}"
        )
    if attempt < 0:
        raise ValueError(f"attempt {attempt} is negative")
    values = parameter_server_env(
        index=index,
        job_name=job.name,
        parameter_server_addr=parameter_server_address(job.name),
    )
    env = [{"name": name, "value": value} for name, value in values.items()]
    container = member_container(
        job,
        settings,
        command=list(PS_COMMAND),
        args=[],
        env=env + copy.deepcopy(job.spec.template.env),
        ports=[port(PS_PORT_NAME, PS_PORT), port(METRICS_PORT_NAME, METRICS_PORT)],
        resources=parameter_server_resources(job, settings),
    )
    member = topology.nodes + index
    return member_pod(
        job,
        settings,
        name=parameter_server_pod_name(job.name, index),
        labels={
            **gang_pod_labels(job),
            **pod_labels(job.name, member, attempt, role=PARAMETER_SERVER),
        },
        container=container,
        tolerations=copy.deepcopy(job.spec.template.tolerations),
    )
