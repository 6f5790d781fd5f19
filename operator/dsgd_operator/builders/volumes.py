"""The pod's volumes and the trainer's mounts: ours, then the user's.

The root filesystem is read-only, so everything the trainer writes goes to a
mounted directory: /tmp (scratch, Prometheus multiprocess files), /dev/shm
(NCCL and DataLoader workers share tensors through it), and the checkpoint and
output directories unless a user volume (a PVC) already covers them.
"""

from __future__ import annotations

import copy
from decimal import Decimal

from dsgd_contract.pod import CONFIG_DIR, SHM_DIR, TMP_DIR, config_map_name

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.build_settings import DEFAULT_SETTINGS, BuildSettings
from dsgd_operator.builders.resources import format_quantity
from dsgd_operator.pod_layout import (
    CHECKPOINT_VOLUME,
    CONFIG_VOLUME,
    OUTPUT_VOLUME,
    SHM_VOLUME,
    TMP_VOLUME,
    is_within,
)

#: Shared memory per rank: NCCL's intra-node buffers need far more than DataLoader workers.
SHM_MI_PER_GPU_PROCESS = 2048
SHM_MI_PER_CPU_PROCESS = 512


def shm_size_limit(job: DistributedSGDJob) -> str:
    """The /dev/shm sizeLimit; it counts against the container's memory limit when used."""
    topology = job.spec.topology
    per_process = SHM_MI_PER_GPU_PROCESS if topology.gpu else SHM_MI_PER_CPU_PROCESS
    return format_quantity(Decimal(per_process * topology.processes_per_node * 2**20))


def _writable_dirs(job: DistributedSGDJob) -> list[tuple[str, str]]:
    """(volume name, path) of the training directories that need an emptyDir of their own."""
    training = job.spec.training
    covered = [TMP_DIR, *(mount["mountPath"] for mount in job.spec.template.volume_mounts)]
    dirs = []
    for volume, path in (
        (CHECKPOINT_VOLUME, training.checkpoint_dir),
        (OUTPUT_VOLUME, training.resolved_output_dir),
    ):
        if not any(is_within(path, root) for root in covered):
            dirs.append((volume, path))
            covered.append(path)
    return dirs


def _empty_dir(size_limit: str | None) -> dict:
    return {"sizeLimit": size_limit} if size_limit else {}


def pod_volumes(job: DistributedSGDJob, settings: BuildSettings = DEFAULT_SETTINGS) -> list[dict]:
    """Ours, then the template's. The emptyDirs get the installation's size limits
    (BuildSettings.pod_defaults): a pod that writes more is evicted, not the node's disk
    filled; checkpoints below /tmp count against the /tmp limit."""
    defaults = settings.pod_defaults
    volumes = [
        {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(job.name)}},
        {"name": TMP_VOLUME, "emptyDir": _empty_dir(defaults.tmp_size_limit)},
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size_limit(job)}},
    ]
    volumes += [
        {"name": name, "emptyDir": _empty_dir(defaults.scratch_size_limit)}
        for name, _ in _writable_dirs(job)
    ]
    return volumes + copy.deepcopy(job.spec.template.volumes)


def container_mounts(job: DistributedSGDJob) -> list[dict]:
    mounts = [
        {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": TMP_DIR},
        {"name": SHM_VOLUME, "mountPath": SHM_DIR},
    ]
    mounts += [{"name": name, "mountPath": path} for name, path in _writable_dirs(job)]
    return mounts + copy.deepcopy(job.spec.template.volume_mounts)
