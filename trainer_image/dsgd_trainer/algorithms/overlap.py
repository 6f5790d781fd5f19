"""Overlapped global averaging (algorithm.overlapSteps τ ≥ 1): the all-reduce runs behind τ steps.

The rule, per rank k, for a global averaging the schedule (sync_schedule.py)
puts after local step s:

    after step s:       y_k ← x_k (a snapshot); start the all-reduce of y_k (async_op=True)
    steps s+1 … s+τ:    local steps as usual, while the all-reduce runs
    after step s+τ:     x_k ← ȳ + (x_k − y_k),   ȳ = mean_k y_k

so the average arrives τ steps late and the local progress made meanwhile is
kept. It is applied as x_k + (ȳ − y_k) (the same sum in another order: the
pending state is then one flat correction per rank). With an outer optimizer
(outer.py), ȳ is replaced by the outer step's new x_sync computed from ȳ, so
the outer step is delayed by τ steps too. Parameters and floating buffers
follow the same rule; the consensus distance is ‖y_k − ȳ‖ / ‖ȳ‖.

τ ≤ H (the config refuses more), so an averaging finishes before the next one
starts; at τ = H both happen after the same step, the finish first. An averaging
whose τ steps would run past the end of training finishes after the last step.
τ = 0 is not this module: local_sgd.LocalSGD runs its blocking synchronisers.

What it follows and where it differs:

- Wang, Liang and Joshi 2020, "Overlap Local-SGD" (ICASSP): the averaging
  of the models runs while the next local steps compute. There, each rank
  keeps an anchor z (the last finished average) and pulls its model towards
  it, x_k ← x_k − α(x_k − z), every τ steps; here the finished average
  replaces the snapshot's part of the model outright (their α = 1 on the
  snapshot, no pull on the local progress since).
- Streaming DiLoCo (Douillard et al. 2025): the outer step is applied τ inner
  steps late while communication overlaps. They merge with a mixing factor,
  x ← α·x_local + (1 − α)·x_global, and send the model in fragments at staggered
  times, quantized; here the whole model travels at once in full precision
  and the merge keeps all local progress (no mixing factor).

Counting: a started averaging is one global round with the bytes of the
blocking one (a ring all-reduce of the same payload, traffic.py), recorded
when it starts. The time the loop spends in `start` and waiting in `finish`
is what the counters' communication seconds see: the part not hidden.

Stop ballots (dsgd_trainer.stop_vote) ride on the all-reduce and are counted
when it is waited for, at the same step on every rank.

Checkpoints finish the communication, not the averaging: `state_dict` waits
for the pending all-reduce and saves the correction ȳ − y_k with the step
after which it applies, so a resumed run applies it at the same step as an
uninterrupted one, and both end with the same parameters (checkpoint cadence
does not change the trajectory). Evaluation likewise waits, and evaluates the
average of the models x_k + (ȳ − y_k) the ranks will hold.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _unflatten_dense_tensors

from dsgd_trainer.stop_vote import StopVote

from . import traffic
from .averaging import (
    average_,
    averaged_tensors,
    by_dtype,
    flat_copy,
    payload_bytes,
    trainable_parameters,
)
from .consensus_distance import ConsensusDistance
from .model_sync import ModelSync
from .outer import OuterSGD
from .traffic import Traffic


@dataclass
class _Pending:
    """One averaging in flight (works set) or arrived (corrections set)."""

    due: int  # applied after this step
    model: nn.Module | None  # whose tensors were snapshot (None: loaded from a checkpoint)
    snapshots: list[torch.Tensor]  # y_k, flat per dtype group (dropped once resolved)
    sums: list[torch.Tensor]  # the all-reduce buffers; the first ends with the stop ballot
    works: list[dist.Work]
    corrections: list[torch.Tensor] | None = None  # ȳ − y_k, flat per dtype group


class OverlappedAveraging(ModelSync):
    """The global averaging of the local variants with τ = `steps` ≥ 1 (see the module doc).

    A ModelSync for `reset`, `consensus_now` and the state; the loop's
    averaging goes through `start` and `finish_due` instead of `synchronize`.
    """

    def __init__(self, steps: int, outer: OuterSGD | None, vote: StopVote | None) -> None:
        if steps < 1:
            raise ValueError(f"overlapped averaging needs overlapSteps ≥ 1, got {steps}")
        self.steps, self.outer, self.vote = steps, outer, vote
        self._pending: _Pending | None = None

    @property
    def pending_due(self) -> int | None:
        """The step after which the pending averaging applies; None when none is pending."""
        return None if self._pending is None else self._pending.due

    def reset(self, model: nn.Module) -> None:
        self._pending = None
        if self.outer is not None:
            self.outer.reset(trainable_parameters(model))

    @torch.no_grad()
    def start(self, model: nn.Module, due: int) -> Traffic:
        """Snapshot the model and start the all-reduce of the snapshot; applied after step `due`."""
        if self._pending is not None:
            raise RuntimeError("an overlapped averaging is still pending (overlapSteps > H?)")
        tensors = averaged_tensors(model)
        snapshots, sums, works = [], [], []
        for index, group in enumerate(by_dtype(tensors)):
            parts = list(group)
            if index == 0 and self.vote is not None:
                parts.append(self.vote.ballot(group[0].dtype))
            flat = flat_copy(parts)
            snapshots.append(flat[: sum(t.numel() for t in group)].clone())
            sums.append(flat)
            works.append(dist.all_reduce(flat, async_op=True))
        self._pending = _Pending(due, model, snapshots, sums, works)
        return traffic.all_reduce(payload_bytes(tensors), dist.get_world_size())

    @torch.no_grad()
    def finish_due(self, model: nn.Module, step: int, *, last: bool = False) -> bool:
        """After step `step`: apply the pending averaging if due (or `last`); whether it was."""
        pending = self._pending
        if pending is None or (step < pending.due and not last):
            return False
        _add_corrections(model, self._resolve())
        self._pending = None
        return True

    @torch.no_grad()
    def _resolve(self) -> list[torch.Tensor]:
        """Wait for the pending all-reduce; ȳ − y_k per dtype group (taking the outer step)."""
        pending = self._pending
        assert pending is not None
        if pending.corrections is not None:
            return pending.corrections
        assert pending.model is not None
        size = dist.get_world_size()
        means = []
        for index, (work, flat, snapshot) in enumerate(
            zip(pending.works, pending.sums, pending.snapshots, strict=True)
        ):
            work.wait()
            if index == 0 and self.vote is not None:
                self.vote.count(flat[-1:])
            means.append(flat[: snapshot.numel()].div_(size))
        groups = by_dtype(averaged_tensors(pending.model))
        params = trainable_parameters(pending.model)
        # The distance overwrites y_k's views: copies, as the snapshots still make the corrections.
        copies = [snapshot.clone() for snapshot in pending.snapshots]
        mean_views, own_views = _parameter_views(params, groups, means, copies)
        self.consensus_distance = ConsensusDistance().add_(own_views, mean_views)
        if self.outer is not None:
            self.outer.step_(mean_views)  # ȳ's parameters become the new x_sync, in place
        pending.corrections = [m.sub_(s) for m, s in zip(means, pending.snapshots, strict=True)]
        pending.model, pending.snapshots, pending.sums, pending.works = None, [], [], []
        return pending.corrections

    def synchronize(self, model: nn.Module) -> Traffic:
        """Blocking: start and apply at once."""
        sent = self.start(model, due=0)
        self.finish_due(model, 0, last=True)
        return sent

    @torch.no_grad()
    def consensus_now(self, model: nn.Module) -> nn.Module:
        """A copy holding the average of the models the ranks hold with the pending
        averaging applied (waited for, not applied to `model`). Collective.

        No outer-step preview: the ranks' models already carry the outer steps taken.
        """
        replica = copy.deepcopy(model)
        if self._pending is not None:
            _add_corrections(replica, self._resolve())
        average_(averaged_tensors(replica))
        return replica

    def state_dict(self) -> dict:
        """The outer optimizer's state and the pending averaging, waited for (module doc)."""
        pending = None
        if self._pending is not None:
            corrections = self._resolve()
            pending = {"due": self._pending.due, "corrections": [c.clone() for c in corrections]}
        return {
            "outer": None if self.outer is None else self.outer.state_dict(),
            "pending": pending,
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["outer"] is None) != (self.outer is None):
            raise ValueError("the checkpoint's outer optimizer state does not match this config")
        if self.outer is not None:
            self.outer.load_state_dict(state["outer"])
        pending = state["pending"]
        self._pending = None
        if pending is None:
            return
        corrections = pending["corrections"]
        if not isinstance(corrections, list) or not all(
            isinstance(c, torch.Tensor) for c in corrections
        ):
            raise ValueError("the checkpoint's pending averaging is not a list of flat tensors")
        self._pending = _Pending(
            int(pending["due"]), None, [], [], [], corrections=[c.clone() for c in corrections]
        )


def _add_corrections(model: nn.Module, corrections: list[torch.Tensor]) -> None:
    """x_k ← x_k + (ȳ − y_k), per dtype group of the averaged tensors."""
    groups = by_dtype(averaged_tensors(model))
    if [sum(t.numel() for t in g) for g in groups] != [c.numel() for c in corrections]:
        raise ValueError("the pending averaging does not fit the model (another model's state?)")
    for group, correction in zip(groups, corrections, strict=True):
        torch._foreach_add_(group, _unflatten_dense_tensors(correction.to(group[0].device), group))


def _parameter_views(
    params: list[torch.Tensor],
    groups: list[list[torch.Tensor]],
    means: list[torch.Tensor],
    snapshots: list[torch.Tensor],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Views of ȳ and y_k shaped like `params`, found in the per-dtype flats by identity."""
    where: dict[int, tuple[int, int]] = {}
    for index, group in enumerate(groups):
        offset = 0
        for tensor in group:
            where[id(tensor)] = (index, offset)
            offset += tensor.numel()
    mean_views, own_views = [], []
    for param in params:
        index, offset = where[id(param)]
        span = slice(offset, offset + param.numel())
        mean_views.append(means[index][span].view_as(param))
        own_views.append(snapshots[index][span].view_as(param))
    return mean_views, own_views
