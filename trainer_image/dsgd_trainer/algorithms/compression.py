"""Scaled-sign compression of model deltas as Lin et al.'s code runs it, exchanged by all-reduce.

Per tensor of d elements, C(x) = (scale(x), sign(x)) with scale(x) = ‖x‖₁ / d
and sign(0) = 0 (torch.sign), as in epfml `pcode/optim/local_sign_sgd.py`.
The ranks' compressed deltas are combined the way the authors' aggregator
does: the signs are averaged, the scales are averaged apart, and the consensus
moves by mean_k(scale_k) · mean_k(sign_k). Only these two means are needed, so
the exchange is two all-reduces over all ranks:

- one of the signs as small integers (the sum over K ranks lies in [−K, K]):
  int8 up to K = 127 ranks; float16 up to K = 2048 (every integer of that size
  is exact in float16, so are all partial sums; neither gloo nor NCCL has an
  int16 all-reduce); int32 beyond;
- one of the float32 scales, one per tensor.

Traffic therefore scales like an all-reduce (≈ 2·(K−1)/K bytes per element on
a ring with int8), not like an all-gather of K payloads. Sums of integers are
exact and the scale sum is one collective's float sum, so every rank computes
the same consensus bit for bit.

Tensors are handled as one flat vector (their dtype, normally float32); `SegmentLayout` maps it back
to per-tensor scales on the device, so a sync launches a constant number of
kernels and copies nothing from the host.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dsgd_trainer.stop_vote import StopVote

from . import traffic
from .traffic import Traffic

_SCALE_DTYPE = torch.float32
#: The most ranks whose sign sums fit int8 (|Σ sign| ≤ K ≤ 127).
INT8_SIGN_SUM_MAX_RANKS = 127
#: The most ranks whose sign sums (and partial sums) float16 holds exactly: 2^11.
FLOAT16_SIGN_SUM_MAX_RANKS = 2048


def sign_sum_dtype(world_size: int) -> torch.dtype:
    """The type the ranks' sign sums travel in: the smallest that holds them exactly."""
    if world_size <= INT8_SIGN_SUM_MAX_RANKS:
        return torch.int8
    if world_size <= FLOAT16_SIGN_SUM_MAX_RANKS:
        return torch.float16
    return torch.int32


@dataclass(frozen=True)
class SegmentLayout:
    """Where each tensor lies in the flat vector: its length, kept on the device."""

    lengths: torch.Tensor  # int64, one per tensor, on the tensors' device
    numel: int

    @classmethod
    def of(cls, tensors: Sequence[torch.Tensor]) -> SegmentLayout:
        sizes = [t.numel() for t in tensors]
        device = tensors[0].device if tensors else torch.device("cpu")
        return cls(torch.tensor(sizes, dtype=torch.int64, device=device), sum(sizes))

    def per_element(self, per_tensor: torch.Tensor) -> torch.Tensor:
        """Spread one value per tensor over that tensor's elements (flat)."""
        return per_tensor.repeat_interleave(self.lengths, output_size=self.numel)


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors as one flat vector of their promoted dtype (a copy)."""
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    return torch.cat([t.detach().reshape(-1).to(dtype) for t in tensors])


def copy_flat_(tensors: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy consecutive pieces of `flat` into `tensors`, in place (dtype converted)."""
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def scales(flat: torch.Tensor, layout: SegmentLayout) -> torch.Tensor:
    """‖x‖₁ / d for each tensor x of the flat vector (0 for an empty tensor)."""
    sums = torch.segment_reduce(flat.abs(), "sum", lengths=layout.lengths)
    return (sums / layout.lengths.clamp(min=1).to(sums.dtype)).to(_SCALE_DTYPE)


@dataclass(frozen=True)
class Compressed:
    """This rank's C(x): per-tensor scales and per-element signs (−1, 0, +1) of a flat vector."""

    scale: torch.Tensor  # float32, one per tensor
    sign: torch.Tensor  # the flat vector's dtype, one per element

    @classmethod
    def of(cls, flat: torch.Tensor, layout: SegmentLayout) -> Compressed:
        return cls(scales(flat, layout), torch.sign(flat))

    def decompressed(self, layout: SegmentLayout) -> torch.Tensor:
        """scale · sign, element by element: what this rank's message stands for."""
        return layout.per_element(self.scale) * self.sign


def mean_of_ranks(
    compressed: Compressed,
    layout: SegmentLayout,
    group: dist.ProcessGroup | None = None,
    vote: StopVote | None = None,
) -> tuple[torch.Tensor, Traffic]:
    """mean_k(scale_k) · mean_k(sign_k) over the ranks of `group`, flat (collective).

    Returns the flat update and this rank's traffic (two ring all-reduces:
    the integer sign sums and the float32 scales). With `vote`, the stop
    ballot rides at the end of the scales and its sum is counted
    (dsgd_trainer.stop_vote); its 4 bytes are not counted.
    """
    world_size = dist.get_world_size(group)
    sign_sums = compressed.sign.to(sign_sum_dtype(world_size))
    parts = [compressed.scale] + ([vote.ballot(_SCALE_DTYPE)] if vote is not None else [])
    scale_sums = torch.cat(parts)
    dist.all_reduce(sign_sums, group=group)
    dist.all_reduce(scale_sums, group=group)
    if vote is not None:
        vote.count(scale_sums[-1:])
        scale_sums = scale_sums[:-1]
    mean_sign = sign_sums.to(compressed.sign.dtype).div_(world_size)
    mean_scale = scale_sums.div_(world_size)
    sent = traffic.all_reduce(sign_sums.numel() * sign_sums.element_size(), world_size)
    sent += traffic.all_reduce(scale_sums.numel() * scale_sums.element_size(), world_size)
    update = layout.per_element(mean_scale.to(compressed.sign.dtype)) * mean_sign
    return update, sent
