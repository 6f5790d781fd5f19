"""What a parameter server does with a pushed gradient: Adagrad or plain SGD, on one shard.

Both are written with the very tensor operations of torch.optim's single-tensor
implementations, so that a shard given the same gradients and learning rates
ends bit for bit where torch.optim.Adagrad / SGD (momentum 0, weight decay 0)
would (tests/test_downpour.py checks it against torch itself):

- sgd:     w ← w − η·g
- adagrad: G ← G + g²;  w ← w − η·g / (√G + ε), G starting at initialAccumulator
  (Duchi et al. 2011; Dean et al. 2012 §4.1 use it on the servers because it
  needs no state but the shard's own).

η comes with each push: the pushing worker's learning rate at that step
(dsgd_trainer.schedule), so warm-up and decay apply as in the other algorithms.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from dsgd_contract.config import Algorithm as AlgorithmConfig


class UpdateRule(ABC):
    """The state and the step of one shard's optimizer."""

    name: str

    @abstractmethod
    def apply_(self, params: torch.Tensor, gradient: torch.Tensor, lr: float) -> None:
        """One step on `params` (in place) with `gradient` and learning rate `lr`."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027
        """Restore `state_dict()` (nothing for stateless rules)."""


class SGDRule(UpdateRule):
    name = "sgd"

    def apply_(self, params: torch.Tensor, gradient: torch.Tensor, lr: float) -> None:
        params.add_(gradient, alpha=-lr)


class AdagradRule(UpdateRule):
    """Per-coordinate step η/(√G + ε); G, the sum of squared gradients, is its state."""

    name = "adagrad"

    def __init__(self, numel: int, epsilon: float, initial_accumulator: float) -> None:
        self.epsilon = epsilon
        self.accumulator = torch.full((numel,), initial_accumulator, dtype=torch.float32)

    def apply_(self, params: torch.Tensor, gradient: torch.Tensor, lr: float) -> None:
        self.accumulator.addcmul_(gradient, gradient, value=1)
        std = self.accumulator.sqrt().add_(self.epsilon)
        params.addcdiv_(gradient, std, value=-lr)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"accumulator": self.accumulator.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        accumulator = state["accumulator"]
        if accumulator.shape != self.accumulator.shape:
            raise ValueError(
                f"an Adagrad accumulator of {accumulator.numel()} numbers does not fit a shard "
                f"of {self.accumulator.numel()}"
            )
        self.accumulator.copy_(accumulator)


def make_update_rule(algorithm: AlgorithmConfig, numel: int) -> UpdateRule:
    """The rule `algorithm.serverOptimizer` names, for a shard of `numel` numbers."""
    if algorithm.server_optimizer == "sgd":
        return SGDRule()
    adagrad = algorithm.adagrad
    return AdagradRule(numel, adagrad.resolved_epsilon, adagrad.initial_accumulator)
