"""How the local variants synchronize models: dense averaging, or sign-compressed deltas.

The synchroniser decides how; the schedule (sync_schedule.py) decides when and
at which scope. `DenseSync` averages parameters and floating buffers with one
coalesced all-reduce, over all ranks or over one node's group. `SignSync`
implements Lin et al.'s compressed local SGD as their code runs it (epfml
`pcode/optim/local_sign_sgd.py`, `local_ef_sign_sgd.py`), per tensor:

    Δ_k = x_sync − x_k                      x_sync: the last synchronized model, kept per rank
    sign:     p_k = Δ_k
    ef-sign:  p_k = Δ_k + e_k,  e_k ← p_k − scale(p_k)·sign(p_k)
    x_sync ← x_sync − mean_k(scale(p_k)) · mean_k(sign(p_k));  x_k ← x_sync   (every rank)

with scale(p) = ‖p‖₁/d and sign(0) = 0. The two means travel as two
all-reduces (compression.py). What differs between `sign` and `ef-sign` apart
from the memory is the local step: sign steps for `sign` (dsgd_trainer.sign_sgd),
ordinary SGD steps for `ef-sign`; the optimizer is chosen by dsgd_trainer.optim.
Buffers (BatchNorm statistics) are not deltas of an optimization and are tiny:
they are averaged uncompressed in the same sync (the authors' code does not
synchronise them at all).

Evaluation (`consensus_now`): dense, the average of the ranks' models now;
compressed, the consensus a compressed sync would produce now (x_sync moved by
the ranks' current compressed deltas), which is the model the algorithm holds
after its next sync, with the training state left untouched.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import torch
import torch.distributed as dist
from torch import nn

from dsgd_trainer.stop_vote import StopVote

from . import compression
from .averaging import (
    average_,
    averaged_copy,
    averaged_tensors,
    floating_buffers,
    trainable_parameters,
)
from .consensus_distance import ConsensusDistance
from .traffic import Traffic


class ModelSync(ABC):
    """One synchronization of the ranks' models; returns this rank's traffic.

    `consensus_distance`: after a sync by a synchroniser that measures it, this
    rank's ‖x_k − x̄‖ / ‖x̄‖ (consensus_distance.py), x̄ the consensus the sync
    produced; None otherwise.
    """

    consensus_distance: ConsensusDistance | None = None

    def reset(self, model: nn.Module) -> None:  # noqa: B027 - optional hook, default: nothing
        """Called when the replicas are identical at the start of a local phase."""

    @abstractmethod
    def synchronize(self, model: nn.Module) -> Traffic: ...

    def consensus_now(self, model: nn.Module) -> nn.Module:
        """A copy of the model this sync would produce now; collective; state untouched."""
        return averaged_copy(model)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - stateless by default
        pass


class DenseSync(ModelSync):
    """Average trainable parameters and floating buffers over `group` (None: all ranks).

    `vote`: the stop ballot rides on each averaging (global ones; see dsgd_trainer.stop_vote).
    `measure`: also measure the consensus distance (two flat copies of the
    parameters and two float32 norms per sync: small next to the all-reduce itself).
    """

    def __init__(
        self,
        group: dist.ProcessGroup | None = None,
        vote: StopVote | None = None,
        measure: bool = False,
    ) -> None:
        self.group = group
        self.vote = vote
        self.measure = measure

    def synchronize(self, model: nn.Module) -> Traffic:
        tensors = averaged_tensors(model)
        if not self.measure:
            return average_(tensors, group=self.group, vote=self.vote)
        distance = ConsensusDistance()

        def measure(own: list[torch.Tensor], means: list[torch.Tensor]) -> None:
            # The trainable parameters (averaging's own rule: requires_grad), not the buffers.
            pairs = [(t, m) for t, m in zip(own, means, strict=True) if t.requires_grad]
            # The parameters still hold x_k and are overwritten with x̄ next: the
            # difference can take their place.
            distance.add_([t for t, _ in pairs], [m for _, m in pairs])

        sent = average_(tensors, group=self.group, vote=self.vote, before_overwrite=measure)
        self.consensus_distance = distance
        return sent


class SignSync(ModelSync):
    """Lin et al.'s compressed global sync (module doc); `error_feedback` makes it EF-sign.

    State per rank: x_sync (flat, identical on all ranks) and, for EF-sign,
    the error memory e_k (flat, this rank's own).
    """

    def __init__(self, error_feedback: bool, vote: StopVote | None = None) -> None:
        self.error_feedback = error_feedback
        self.vote = vote  # the stop ballot rides on the scales' all-reduce
        self.reference: torch.Tensor | None = None  # x_sync, flat
        self.error: torch.Tensor | None = None  # e_k (ef-sign only), flat
        self._layout: compression.SegmentLayout | None = None  # made once, on the device

    def _layout_of(self, params: list[torch.Tensor]) -> compression.SegmentLayout:
        if self._layout is None or self._layout.lengths.device != params[0].device:
            self._layout = compression.SegmentLayout.of(params)
        return self._layout

    def reset(self, model: nn.Module) -> None:
        self.reference = compression.flatten(trainable_parameters(model))
        self.error = torch.zeros_like(self.reference) if self.error_feedback else None

    def _to_send(self, params: list[torch.Tensor]) -> torch.Tensor:
        """p_k = Δ_k (+ e_k), Δ_k = x_sync − x_k, flat."""
        if self.reference is None:
            raise RuntimeError("sign compression has no synchronized model x_sync (no reset)")
        device = params[0].device
        # A state loaded with map_location="cpu" may live on another device than the model.
        self.reference = self.reference.to(device)
        to_send = self.reference - compression.flatten(params)
        if self.error is not None:
            self.error = self.error.to(device)
            to_send.add_(self.error)
        return to_send

    @torch.no_grad()
    def synchronize(self, model: nn.Module) -> Traffic:
        params = trainable_parameters(model)
        layout = self._layout_of(params)
        to_send = self._to_send(params)
        compressed = compression.Compressed.of(to_send, layout)
        if self.error is not None:
            # e_k ← p_k − scale(p_k)·sign(p_k): what this rank's message left out.
            self.error = to_send.sub_(compressed.decompressed(layout))
        own = compression.flatten(params)
        update, sent = compression.mean_of_ranks(compressed, layout, vote=self.vote)
        self.reference.sub_(update)
        self.consensus_distance = ConsensusDistance().add_([own], [self.reference])
        compression.copy_flat_(params, self.reference)
        buffers = floating_buffers(model)
        if buffers:
            sent += average_(buffers)
        return sent

    @torch.no_grad()
    def consensus_now(self, model: nn.Module) -> nn.Module:
        """A copy holding what a sync at this step would make x_sync, state untouched.

        Collective. Floating buffers are averaged (dense) in the copy, as a sync would.
        """
        replica = copy.deepcopy(model)
        params = trainable_parameters(replica)
        layout = self._layout_of(params)
        to_send = self._to_send(params)
        update, _ = compression.mean_of_ranks(compression.Compressed.of(to_send, layout), layout)
        compression.copy_flat_(params, self.reference - update)
        buffers = floating_buffers(replica)
        if buffers:
            average_(buffers)
        return replica

    def state_dict(self) -> dict:
        def cloned(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.detach().clone()

        return {"reference": cloned(self.reference), "error": cloned(self.error)}

    def load_state_dict(self, state: dict) -> None:
        reference, error = state["reference"], state["error"]
        for name, value in (("reference", reference), ("error", error)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise ValueError(f"the checkpoint's sign-compression {name} is not a flat tensor")
        self.reference = None if reference is None else reference.clone()
        self.error = None if error is None else error.clone()
        if self.error_feedback and self.reference is not None and self.error is None:
            raise ValueError("the checkpoint has no error-feedback memory but ef-sign needs one")
