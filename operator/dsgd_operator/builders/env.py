"""The trainer container's environment: the pod contract's, then the user's."""

from __future__ import annotations

import copy

from dsgd_contract.pod import master_address, parameter_server_address, trainer_env

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.resources import cpu_threads_per_process


def container_env(job: DistributedSGDJob, node_rank: int) -> list[dict]:
    """The whole env: the contract's, OMP_NUM_THREADS for CPU jobs with a CPU request, the user's.

    torchrun would otherwise set OMP_NUM_THREADS=1 for every rank of a
    multi-process pod, leaving most of the requested cores idle. A user value wins.
    `dsgd run` rewrites some of the contract's variables for local processes
    (dsgd_operator.local_run.local_process).
    """
    topology = job.spec.topology
    values = trainer_env(
        nodes=topology.nodes,
        processes_per_node=topology.processes_per_node,
        node_rank=node_rank,
        master_addr=master_address(job.name),
        job_name=job.name,
        parameter_server_addr=(
            parameter_server_address(job.name) if topology.parameter_servers else None
        ),
    )
    env = [{"name": name, "value": value} for name, value in values.items()]
    user_env = copy.deepcopy(job.spec.template.env)
    threads = cpu_threads_per_process(job)
    if threads is not None and all(var.get("name") != "OMP_NUM_THREADS" for var in user_env):
        env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})
    return env + user_env
