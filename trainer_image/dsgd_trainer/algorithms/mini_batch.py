"""Mini-batch SGD: gradients averaged every step by PyTorch's DistributedDataParallel.

DDP all-reduces the gradients in buckets, overlapped with the backward pass;
bucketing groups tensors but does not change the payload, so one step's
payload is Σ numel × element size over the trainable parameters (a test checks
this against the buckets DDP actually hands to its communication hook), and
its wire bytes those of a ring all-reduce of it (traffic.py).

Buffers (BatchNorm running statistics): we keep DDP's default
(`forward_sync_buffers`): before each forward, rank 0's buffers are broadcast
to all ranks, so rank 0's statistics are the authoritative ones. That
broadcast (all buffers, integer ones included) is counted in the step's traffic.
Each step is one global round.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist
from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import GLOBAL
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from . import traffic
from .averaging import broadcast_, payload_bytes, trainable_parameters
from .base import Algorithm
from .context import DistContext
from .traffic import Traffic


def wrap_in_ddp(model: nn.Module, ctx: DistContext) -> DistributedDataParallel:
    """DDP over all ranks; creating it broadcasts rank 0's parameters and buffers (collective).

    With ctx.stop_vote, the stop ballot rides on the gradient all-reduce
    (allreduce_with_stop_ballot); without, DDP's built-in all-reduce runs.
    """
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=device_ids)
    if ctx.stop_vote is not None:
        ddp.register_comm_hook(ctx.stop_vote, allreduce_with_stop_ballot)
    return ddp


# Unannotated: DDP checks a hook's annotations, which `from __future__ import annotations`
# turns into strings it does not recognise.
def allreduce_with_stop_ballot(vote, bucket):
    """DDP's default all-reduce (divide by K, sum), with the stop ballot on bucket 0.

    Every rank reduces bucket 0 once per step, so its sum of ballots is a round
    every rank counts (dsgd_trainer.stop_vote). The other buckets are reduced
    exactly as DDP's default hook does.
    """
    if bucket.index() != 0:
        return allreduce_hook(None, bucket)
    gradients = bucket.buffer()
    packed = torch.cat([gradients / dist.get_world_size(), vote.ballot(gradients.dtype)])
    future = dist.all_reduce(packed, async_op=True).get_future()

    def unpack(done: torch.futures.Future) -> torch.Tensor:
        total = done.value()[0]
        vote.count(total[-1:])
        gradients.copy_(total[:-1])
        return gradients

    return future.then(unpack)


def ddp_step_traffic(model: nn.Module, ranks: int) -> Traffic:
    """One DDP step: the gradients' bucketed all-reduce plus the broadcast of all buffers."""
    gradients = traffic.all_reduce(payload_bytes(trainable_parameters(model)), ranks)
    buffers = payload_bytes(list(model.buffers()))
    return gradients + traffic.broadcast(buffers, ranks) if buffers else gradients


def rank0_buffers_(model: nn.Module) -> None:
    """Give every rank rank 0's buffers, which DDP's next forward would do anyway.

    Rank 0's buffers are unchanged and the others are overwritten by the next
    forward's broadcast regardless, so this does not change the trajectory.
    """
    buffers = list(model.buffers())
    if buffers:
        broadcast_(buffers, src=0)


class MiniBatchSGD(Algorithm):
    """Synchronous SGD: one gradient all-reduce (one global round) per step."""

    name = "mini-batch-sgd"

    def __init__(
        self, model: nn.Module, config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
    ) -> None:
        super().__init__(model, config, ctx, steps_per_epoch)
        self._ddp = wrap_in_ddp(model, ctx)
        # The same every step (the shapes never change): computed once, not walked per step.
        self._step_traffic = ddp_step_traffic(model, ctx.gang.world_size)

    def training_model(self) -> nn.Module:
        return self._ddp

    def step_context(self, step: int) -> AbstractContextManager[None]:
        return nullcontext()

    def after_optimizer_step(self, step: int) -> None:
        self.counters.record(GLOBAL, self._step_traffic)

    def synchronize_for_evaluation(self) -> nn.Module:
        """The model itself: parameters are identical on all ranks; buffers become rank 0's.

        Each rank's forward updated its own BatchNorm statistics from its local
        batch; DDP treats rank 0's as authoritative, so evaluation does too.
        """
        rank0_buffers_(self.model)
        return self.model
