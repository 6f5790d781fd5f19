"""The trainer container's environment, in the pod contract's order."""

from __future__ import annotations

import copy

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.build.names import master_address
from dsgd_operator.build.resources import cpu_threads_per_process
from dsgd_operator.build.settings import BuildSettings
from dsgd_operator.pod_layout import CONFIG_PATH, METRICS_DIR


def contract_env(job: DistributedSGDJob, node_rank: int, settings: BuildSettings) -> list[dict]:
    """Our variables (torchrun's PET_* flags, then the trainer's), before the user's.

    `dsgd run` rewrites some of them for local processes; see the pod contract.
    """
    topology = job.spec.topology
    values = {
        "PET_NNODES": topology.nodes,
        "PET_NPROC_PER_NODE": topology.processes_per_node,
        "PET_NODE_RANK": node_rank,
        "PET_MASTER_ADDR": master_address(job.name),
        "PET_MASTER_PORT": settings.master_port,
        "DSGD_CONFIG": CONFIG_PATH,
        "DSGD_METRICS_PORT": settings.metrics_port,
        "DSGD_JOB_NAME": job.name,
        "PROMETHEUS_MULTIPROC_DIR": METRICS_DIR,
        "PYTHONUNBUFFERED": 1,
    }
    return [{"name": name, "value": str(value)} for name, value in values.items()]


def container_env(job: DistributedSGDJob, node_rank: int, settings: BuildSettings) -> list[dict]:
    """The whole env: the contract's, OMP_NUM_THREADS for CPU jobs with a CPU request, the user's.

    torchrun would otherwise set OMP_NUM_THREADS=1 for every rank of a
    multi-process pod, leaving most of the requested cores idle. A user value wins.
    """
    env = contract_env(job, node_rank, settings)
    user_env = copy.deepcopy(job.spec.template.env)
    threads = cpu_threads_per_process(job)
    if threads is not None and all(var.get("name") != "OMP_NUM_THREADS" for var in user_env):
        env.append({"name": "OMP_NUM_THREADS", "value": str(threads)})
    return env + user_env
