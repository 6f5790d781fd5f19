"""Which GPUs each node of a local gang gets, and whether this machine has them.

On a cluster every pod sees its own `processesPerNode` GPUs as ordinals 0 … P − 1
(the device plugin sets CUDA_VISIBLE_DEVICES per container). `dsgd run` runs all
pods on one machine, so node i is given its own slice of the machine's GPUs:
entries i·P … i·P + P − 1 of the list this process may use, that is of an
inherited CUDA_VISIBLE_DEVICES when the shell sets one (handing every node the
whole inherited list would give two nodes the same GPU, which NCCL refuses
with "Duplicate GPU detected"), else of the ordinals 0 … N − 1.

The pre-flight (`check_gpus_present`) runs before any process starts: without
it, a machine with too few GPUs shows up only after every rank of every node
started and failed on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

VISIBLE_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"
#: The NVIDIA driver's one directory per GPU (PCI address).
DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")


class GpuAssignmentError(Exception):
    """This machine cannot give every local node its GPUs; the message (one line) says why."""


def inherited_devices(environ: Mapping[str, str]) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES in `environ` (ordinals, GPU-/MIG- UUIDs); None if unset.

    Set but empty means no GPU at all, as CUDA reads it.
    """
    raw = environ.get(VISIBLE_DEVICES_ENV)
    if raw is None:
        return None
    return [entry.strip() for entry in raw.split(",") if entry.strip()]


def node_device_lists(
    nodes: int, processes_per_node: int, inherited: list[str] | None
) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each node: node i gets entries i·P … i·P + P − 1.

    Of `inherited` when given (see inherited_devices), else of the ordinals
    0 … nodes·P − 1. GpuAssignmentError when `inherited` is too short.
    """
    needed = nodes * processes_per_node
    pool = [str(ordinal) for ordinal in range(needed)] if inherited is None else inherited
    if len(pool) < needed:
        raise GpuAssignmentError(
            f"topology needs {needed} GPU(s) ({nodes} node(s) × {processes_per_node} "
            f"process(es)), but {VISIBLE_DEVICES_ENV}={','.join(pool)!s} lists {len(pool)}; "
            f"list more GPUs there, unset it, or lower topology.nodes / processesPerNode"
        )
    return [
        ",".join(pool[node * processes_per_node : (node + 1) * processes_per_node])
        for node in range(nodes)
    ]


def check_gpus_present(nodes: int, processes_per_node: int, present: int) -> None:
    """GpuAssignmentError unless `present` usable GPUs cover nodes × processes_per_node ranks.

    One GPU per rank: NCCL refuses two ranks of one communicator on the same GPU.
    """
    needed = nodes * processes_per_node
    if present < needed:
        raise GpuAssignmentError(
            f"topology.gpu: the job needs {needed} GPU(s) ({nodes} node(s) × "
            f"{processes_per_node} process(es), one GPU per rank), this machine has "
            f"{present} usable; lower topology.nodes / processesPerNode, or set "
            "topology.gpu: false to train on CPUs"
        )


def count_usable_gpus(environ: Mapping[str, str] | None = None) -> int:
    """How many CUDA devices a process started with `environ` (default: ours) may use.

    Read from the NVIDIA driver's /proc/driver/nvidia/gpus (one entry per GPU;
    in a container, the GPUs given to it), capped by CUDA_VISIBLE_DEVICES: no
    CUDA context, no torch in this process, milliseconds. Where the driver has
    no such directory (WSL, other platforms) a child interpreter asks
    torch.cuda.device_count(); 0 when that fails (no torch, no driver).
    """
    environ = os.environ if environ is None else environ
    inherited = inherited_devices(environ)
    if DRIVER_GPUS.is_dir():
        present = sum(1 for _ in DRIVER_GPUS.iterdir())
        return present if inherited is None else min(present, len(inherited))
    try:
        counted = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            env=dict(environ),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(counted.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0
