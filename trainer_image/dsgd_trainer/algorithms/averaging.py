"""Model averaging collectives: which tensors are synchronized, and coalesced all-reduce/broadcast.

What a model averaging synchronizes: the trainable parameters and the
floating-point buffers (BatchNorm running mean/var). Integer buffers such as
BatchNorm's `num_batches_tracked` are not averaged (a mean of counters is not a
counter; they are equal on all ranks anyway since every rank takes the same
number of steps). Frozen parameters (requires_grad False) never change, so
they are not sent, as DDP does not send them either.

Every collective here is coalesced: the tensors are flattened into one
contiguous buffer per dtype (normally one: float32), so one averaging is one
collective, not one per tensor. Results are copied back in place, so the
optimizer's and DDP's references to the parameters stay valid.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _unflatten_dense_tensors

from dsgd_trainer.stop_vote import StopVote

from . import traffic
from .traffic import Traffic


def trainable_parameters(model: nn.Module) -> list[torch.Tensor]:
    """The parameters an optimizer step changes (and DDP reduces gradients of)."""
    return [p for p in model.parameters() if p.requires_grad]


def floating_buffers(model: nn.Module) -> list[torch.Tensor]:
    """Buffers that are averaged with the parameters: the floating-point ones."""
    return [b for b in model.buffers() if b.is_floating_point()]


def averaged_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Everything a model averaging synchronizes: trainable parameters, then floating buffers."""
    return trainable_parameters(model) + floating_buffers(model)


def flat_copy(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors (one dtype) concatenated into one new flat buffer.

    Always a copy (torch.cat), unlike torch's `_flatten_dense_tensors`, which returns
    a view of a lone tensor: an all-reduce on that would write into the tensor itself
    (into a parameter still training, for an overlapped averaging).
    """
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def payload_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """Dense payload of `tensors`: Σ numel × element size."""
    return sum(t.numel() * t.element_size() for t in tensors)


def by_dtype(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    # Insertion order is the model's order, identical on every rank, so every
    # rank issues the same collectives in the same order.
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault(tensor.dtype, []).append(tensor)
    return list(groups.values())


@torch.no_grad()
def average_(
    tensors: Sequence[torch.Tensor],
    group: dist.ProcessGroup | None = None,
    vote: StopVote | None = None,
    before_overwrite: Callable[[list[torch.Tensor], list[torch.Tensor]], None] | None = None,
) -> Traffic:
    """Replace each tensor by its mean over the ranks of `group` (None: all ranks), in place.

    Sums with all-reduce and divides afterwards (gloo has no AVG op). Returns
    this rank's traffic (traffic.py: a ring all-reduce of the payload). With
    `vote` (global averagings only), the stop ballot rides at the end of the
    first buffer and its sum is counted (dsgd_trainer.stop_vote); its 4 bytes
    are not counted. `before_overwrite(tensors, means)` is called per dtype group
    while the tensors still hold this rank's values (the consensus distance is
    measured there without a copy of the model).
    """
    size = dist.get_world_size(group)
    for index, same_dtype in enumerate(by_dtype(tensors)):
        parts = list(same_dtype)
        ballot = vote is not None and index == 0
        if ballot:
            parts.append(vote.ballot(same_dtype[0].dtype))
        flat = flat_copy(parts)
        dist.all_reduce(flat, group=group)
        if ballot:
            vote.count(flat[-1:])
            flat = flat[:-1]
        flat.div_(size)
        means = _unflatten_dense_tensors(flat, same_dtype)
        if before_overwrite is not None:
            before_overwrite(same_dtype, list(means))
        torch._foreach_copy_(same_dtype, means)
    return traffic.all_reduce(payload_bytes(tensors), size)


@torch.no_grad()
def broadcast_(
    tensors: Sequence[torch.Tensor], src: int = 0, group: dist.ProcessGroup | None = None
) -> Traffic:
    """Overwrite each tensor with global rank `src`'s value, in place; returns the traffic."""
    for same_dtype in by_dtype(tensors):
        flat = flat_copy(same_dtype)
        dist.broadcast(flat, src=src, group=group)
        torch._foreach_copy_(same_dtype, _unflatten_dense_tensors(flat, same_dtype))
    return traffic.broadcast(payload_bytes(tensors), dist.get_world_size(group))


def make_replicas_identical_(model: nn.Module) -> None:
    """Give every rank rank 0's parameters and all buffers, as DDP does at construction."""
    broadcast_(list(model.parameters()) + list(model.buffers()), src=0)


def averaged_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` holding the global average of parameters and floating buffers.

    The model itself is left untouched. Integer buffers keep this rank's value.
    """
    replica = copy.deepcopy(model)
    average_(averaged_tensors(replica))
    return replica
