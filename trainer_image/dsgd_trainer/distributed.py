"""Process-group lifecycle: torchrun's environment (checked against the config), the device,
init and teardown.

gloo on CPU; NCCL with one GPU per rank (`cuda:LOCAL_RANK`) when topology.gpu.
Without torchrun's variables (`python -m dsgd_trainer` by hand) the trainer
runs as a single rank with an in-memory store, which is handy for debugging.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from functools import partial

import torch
import torch.distributed as dist
from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from dsgd_contract.pod import COLLECTIVE_TIMEOUT_ENV, CUDA_SYNC_DEBUG_ENV
from torch.distributed.distributed_c10d import _abort_process_group

from dsgd_trainer.gang import GangPosition
from dsgd_trainer.stopping import TrainerExit

#: How long a collective may wait for its peers before the run fails. Long enough for
#: a slow checkpoint or evaluation on one rank; a dead peer is usually noticed much
#: earlier, when its connections close. Override with DSGD_COLLECTIVE_TIMEOUT_SECONDS.
DEFAULT_COLLECTIVE_TIMEOUT = timedelta(minutes=15)


class DeviceError(RuntimeError):
    """The topology asks for a device this machine does not have (exit code 64)."""


def select_device(gpu: bool, local_rank: int) -> torch.device:
    """`cuda:LOCAL_RANK` (made current) when `gpu`, else the CPU; DeviceError if it is missing."""
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            "topology.gpu is true but this machine has no usable CUDA device "
            "(torch.cuda.is_available() is False); set topology.gpu: false to train on CPUs"
        )
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(
            f"local rank {local_rank} needs GPU {local_rank}, but only "
            f"{torch.cuda.device_count()} are visible; topology.processesPerNode must not "
            "exceed the GPUs per pod"
        )
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[None]:
    """bfloat16 autocast of the forward pass on GPUs when enabled (the loss stays fp32).

    Disabled: a nullcontext, not torch.autocast(enabled=False), whose set-up and
    tear-down of the autocast state cost more host time per step than anything
    else the loop adds.
    """
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


#: The first compute capability with bfloat16 in hardware (Ampere). Older GPUs run bf16
#: through emulation, which torch.cuda.is_bf16_supported() counts as supported: slower
#: than fp32, with no warning.
NATIVE_BF16_CAPABILITY = (8, 0)


def bf16_autocast(
    precision: str, device: torch.device, capability: tuple[int, int] | None = None
) -> tuple[bool, str | None]:
    """Whether to autocast to bf16 for training.precision `precision` on `device`, and a note.

    bf16 only where the hardware has it: a GPU of compute capability ≥ 8.0
    (`capability`, default: the device's). Elsewhere fp32, with a note that says
    why (None when nothing was asked that is not done).
    """
    if precision != "bf16":
        return False, None
    if device.type != "cuda":
        return False, "training.precision bf16 applies on GPUs; training in fp32 on the CPU"
    if capability is None:
        capability = torch.cuda.get_device_capability(device)
    if tuple(capability) < NATIVE_BF16_CAPABILITY:
        return False, (
            f"training.precision bf16 needs compute capability "
            f"{'.'.join(map(str, NATIVE_BF16_CAPABILITY))} (Ampere) or newer; {device} has "
            f"{capability[0]}.{capability[1]} and would only emulate it, slower than fp32: "
            "training in fp32"
        )
    return True, None


def step_sync_debug(
    device: torch.device, env: Mapping[str, str] = os.environ
) -> Callable[[], AbstractContextManager[None]] | None:
    """What to wrap each training step in, decided once: None, or a context factory.

    DSGD_CUDA_SYNC_DEBUG=warn|error on a GPU: each step runs under torch's CUDA
    sync debugger, so every operation inside it that makes the host wait for the
    device warns (or raises). The publish and epoch-end reads, which synchronise
    on purpose, stay outside. Anything else: None (no context at all per step).
    """
    mode = env.get(CUDA_SYNC_DEBUG_ENV, "").strip()
    if device.type != "cuda" or mode not in ("warn", "error"):
        return None
    return partial(_sync_debug, mode)


@contextmanager
def _sync_debug(mode: str) -> Iterator[None]:
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def collective_timeout(env: Mapping[str, str] = os.environ) -> timedelta:
    seconds = env.get(COLLECTIVE_TIMEOUT_ENV)
    return timedelta(seconds=float(seconds)) if seconds else DEFAULT_COLLECTIVE_TIMEOUT


def init_process_group(gang: GangPosition, device: torch.device) -> None:
    """Join the gang: torchrun's env:// rendezvous, or a private store for a lone rank."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    # device_id binds NCCL's communicator to this rank's GPU eagerly (no guessing later).
    device_id = device if device.type == "cuda" else None
    if gang.under_torchrun:
        dist.init_process_group(
            backend, timeout=collective_timeout(), device_id=device_id, init_method="env://"
        )
    else:
        dist.init_process_group(
            backend,
            store=dist.HashStore(),
            rank=0,
            world_size=1,
            timeout=collective_timeout(),
            device_id=device_id,
        )


def leave_process_group(abort: bool) -> None:
    """Leave the gang (idempotent), so that NCCL/gloo resources are released before exit.

    `abort` on an abnormal exit (a crash, a dead peer, a stop not agreed): a
    destroy would wait for collectives that peers may never join, and with NCCL
    block in a CUDA synchronisation; an abort tears the communicators down
    without waiting. A clean or agreed exit destroys the group in order.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if abort:
        _abort_process_group()
    else:
        dist.destroy_process_group()


def check_topology(config: TrainingConfig, gang: GangPosition) -> None:
    """The gang torchrun started must be the one the config describes (algorithms depend on it)."""
    topology = config.topology
    if not gang.under_torchrun:
        if topology.world_size != 1:
            raise TrainerExit(
                exit_codes.INVALID_CONFIG,
                f"error: topology asks for {topology.world_size} ranks; start them with "
                "`python -m dsgd_trainer.launch` (torchrun), or set nodes and "
                "processesPerNode to 1",
            )
        return
    if (gang.world_size, gang.local_world_size) != (
        topology.world_size,
        topology.processes_per_node,
    ):
        raise TrainerExit(
            exit_codes.INVALID_CONFIG,
            f"error: topology says {topology.nodes} node(s) × {topology.processes_per_node} "
            f"process(es), but torchrun started {gang.world_size} rank(s), "
            f"{gang.local_world_size} per node (PET_NNODES / PET_NPROC_PER_NODE must match)",
        )
