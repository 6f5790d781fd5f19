"""How the local variants synchronize models: dense averaging, or sign-compressed deltas.

The synchroniser decides how; the schedule (sync_schedule.py) decides when and
at which scope. `DenseSync` averages parameters and floating buffers with one
coalesced all-reduce, over all ranks or over one node's group. `SignSync`
implements Lin et al.'s compressed local SGD (Algorithm 3, `sign`; Algorithm
4, `ef-sign`):

    Δ_k = x_k − x_sync                      x_sync: the last synchronized model, kept per rank
    sign:     send c_k = C(Δ_k)
    ef-sign:  p_k = Δ_k + e_k,  c_k = C(p_k),  e_k ← p_k − c_k,  send c_k
    x_sync ← x_sync + (1/K) Σ_k c_k;  x_k ← x_sync          (on every rank)

The packed payloads (see compression.py) are exchanged with one all-gather;
every rank decodes all K of them in rank order, so every rank computes the
same x_sync bit for bit. Buffers (BatchNorm statistics) are not deltas of an
optimization and are tiny: they are averaged uncompressed in the same sync.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.distributed as dist
from torch import nn

from dsgd_trainer.stop_vote import StopVote

from . import compression
from .averaging import (
    average_,
    averaged_tensors,
    floating_buffers,
    payload_bytes,
    trainable_parameters,
)


class ModelSync(ABC):
    """One synchronization of the ranks' models; returns the payload bytes this rank sent."""

    def reset(self, model: nn.Module) -> None:  # noqa: B027 - optional hook, default: nothing
        """Called when the replicas are identical at the start of a local phase."""

    @abstractmethod
    def synchronize(self, model: nn.Module) -> int: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - stateless by default
        pass


class DenseSync(ModelSync):
    """Average trainable parameters and floating buffers over `group` (None: all ranks).

    `vote`: the stop ballot rides on each averaging (global ones; see dsgd_trainer.stop_vote).
    """

    def __init__(
        self, group: dist.ProcessGroup | None = None, vote: StopVote | None = None
    ) -> None:
        self.group = group
        self.vote = vote

    def synchronize(self, model: nn.Module) -> int:
        return average_(averaged_tensors(model), group=self.group, vote=self.vote)


class SignSync(ModelSync):
    """Sign-compressed delta averaging; with `error_feedback`, EF-sign. State is per rank."""

    def __init__(self, error_feedback: bool) -> None:
        self.error_feedback = error_feedback
        self.reference: list[torch.Tensor] | None = None  # x_sync, one tensor per parameter
        self.error: list[torch.Tensor] | None = None  # e_k (ef-sign only)

    def reset(self, model: nn.Module) -> None:
        params = trainable_parameters(model)
        self.reference = [p.detach().clone() for p in params]
        self.error = [torch.zeros_like(p) for p in params] if self.error_feedback else None

    @torch.no_grad()
    def synchronize(self, model: nn.Module) -> int:
        params = trainable_parameters(model)
        if self.reference is None:
            raise RuntimeError("sign compression has no synchronized model x_sync (no reset)")
        # A state loaded with map_location="cpu" may live on another device than the model.
        self.reference = [r.to(p.device) for r, p in zip(self.reference, params, strict=True)]
        to_send = [p - r for p, r in zip(params, self.reference, strict=True)]
        if self.error is not None:
            # p = Δ + e is sent; e ← p − C(p), and C(p) is exactly what the others decode.
            steps = [
                compression.error_feedback_step(delta, error.to(delta.device))
                for delta, error in zip(to_send, self.error, strict=True)
            ]
            to_send = [corrected for corrected, _, _ in steps]
            self.error = [new_error for _, _, new_error in steps]
        payload = compression.encode(to_send)

        gathered = [torch.empty_like(payload) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, payload)
        total = compression.decode(gathered[0], params)
        for other in gathered[1:]:
            for acc, c in zip(total, compression.decode(other, params), strict=True):
                acc.add_(c)
        for reference, acc, param in zip(self.reference, total, params, strict=True):
            reference.add_(acc.div_(len(gathered)))
            param.copy_(reference)

        buffers = floating_buffers(model)
        if buffers:
            average_(buffers)
        return payload.numel() * payload.element_size() + payload_bytes(buffers)

    def state_dict(self) -> dict:
        def cloned(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if tensors is None else [t.detach().clone() for t in tensors]

        return {"reference": cloned(self.reference), "error": cloned(self.error)}

    def load_state_dict(self, state: dict) -> None:
        self.reference = [t.clone() for t in state["reference"]] if state["reference"] else None
        self.error = [t.clone() for t in state["error"]] if state["error"] else None
        if self.error_feedback and self.reference is not None and self.error is None:
            raise ValueError("the checkpoint has no error-feedback memory but ef-sign needs one")


def make_global_sync(compression_name: str, vote: StopVote | None = None) -> ModelSync:
    """The global synchronization for `algorithm.compression` (none | sign | ef-sign).

    `vote` rides on dense averagings (compressed ones carry no stop ballot yet).
    """
    if compression_name == "none":
        return DenseSync(vote=vote)
    if compression_name in ("sign", "ef-sign"):
        return SignSync(error_feedback=compression_name == "ef-sign")
    raise ValueError(f"unknown algorithm.compression {compression_name!r}")
