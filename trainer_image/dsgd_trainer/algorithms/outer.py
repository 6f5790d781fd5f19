"""The outer optimizer of the local variants: SGD with momentum on the averaged pseudo-gradient.

At a global sync the inner averaging turns the ranks' models x_k into their
mean x̄. With the last synchronized model x_sync (kept here, identical on
every rank), the pseudo-gradient is Δ = x_sync − x̄ and the outer step is
torch.optim.SGD's rule applied to it:

    buf ← momentum · buf + Δ          (buf = Δ at the first sync)
    x_sync ← x_sync − lr · (Δ + momentum · buf  if nesterov  else  buf)

and every rank continues from the new x_sync. This is SlowMo (Wang et al.
2020, with its pseudo-gradient taken in parameter units rather than divided by
the inner lr: equal while the inner lr is constant) and DiLoCo (Douillard et
al. 2023: outer Nesterov, lr 0.7, momentum 0.9). Only trainable parameters
take the outer step; floating buffers keep their plain average. lr 1 with
momentum 0 would be x̄ up to rounding, so the algorithm skips this class then
and plain averaging runs bit for bit.
"""

from __future__ import annotations

import torch
from dsgd_contract.outer_optimizer import OuterOptimizer as OuterOptimizerConfig
from torch import nn

from .averaging import trainable_parameters
from .compression import copy_flat_, flatten
from .model_sync import ModelSync
from .traffic import Traffic


class OuterSGD:
    """The outer optimizer's state (x_sync, momentum buffer, flat) and its step."""

    def __init__(self, config: OuterOptimizerConfig) -> None:
        self.lr, self.momentum, self.nesterov = (
            config.learning_rate,
            config.momentum,
            config.nesterov,
        )
        self.anchor: torch.Tensor | None = None  # x_sync
        self.buffer: torch.Tensor | None = None

    def reset(self, params: list[torch.Tensor]) -> None:
        """The replicas are identical at the start of a local phase: that is x_sync."""
        self.anchor = flatten(params)
        self.buffer = None

    def _new_anchor(self, params: list[torch.Tensor], update_buffer: bool) -> torch.Tensor:
        if self.anchor is None:
            raise RuntimeError("the outer optimizer has no synchronized model x_sync (no reset)")
        self.anchor = self.anchor.to(params[0].device)
        delta = self.anchor - flatten(params)
        if self.momentum:
            previous = None if self.buffer is None else self.buffer.to(delta.device)
            buffer = delta.clone() if previous is None else previous * self.momentum + delta
            if update_buffer:
                self.buffer = buffer
            delta = delta + self.momentum * buffer if self.nesterov else buffer
        return self.anchor - self.lr * delta

    @torch.no_grad()
    def step_(self, params: list[torch.Tensor]) -> None:
        """`params` hold the average x̄ (identical on all ranks): replace them by the new x_sync."""
        self.anchor = self._new_anchor(params, update_buffer=True)
        copy_flat_(params, self.anchor)

    @torch.no_grad()
    def preview_(self, params: list[torch.Tensor]) -> None:
        """Like step_ on a copy's `params`, leaving this state untouched (for evaluation)."""
        copy_flat_(params, self._new_anchor(params, update_buffer=False))

    def state_dict(self) -> dict:
        def cloned(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.detach().clone()

        return {"anchor": cloned(self.anchor), "buffer": cloned(self.buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.anchor = None if state["anchor"] is None else state["anchor"].clone()
        self.buffer = None if state["buffer"] is None else state["buffer"].clone()


class OuterOptimizedSync(ModelSync):
    """A global sync followed by the outer step: `inner` averages, OuterSGD moves x_sync."""

    def __init__(self, inner: ModelSync, outer: OuterSGD) -> None:
        self.inner, self.outer = inner, outer

    def reset(self, model: nn.Module) -> None:
        self.inner.reset(model)
        self.outer.reset(trainable_parameters(model))

    def synchronize(self, model: nn.Module) -> Traffic:
        sent = self.inner.synchronize(model)
        self.consensus_distance = self.inner.consensus_distance  # to x̄, before the outer step
        self.outer.step_(trainable_parameters(model))
        return sent

    def consensus_now(self, model: nn.Module) -> nn.Module:
        replica = self.inner.consensus_now(model)
        self.outer.preview_(trainable_parameters(replica))
        return replica

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "outer": self.outer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.outer.load_state_dict(state["outer"])
