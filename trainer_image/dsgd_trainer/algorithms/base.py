"""The interface between the training loop and a distributed SGD algorithm."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager

from dsgd_contract.config import TrainingConfig
from torch import nn

from .consensus_distance import ConsensusDistance
from .context import DistContext
from .counters import SyncCounters


class Algorithm(ABC):
    """A distributed SGD algorithm driven by the training loop.

    The loop, for every global step `step` (0-based optimizer steps since the
    start of training, across epochs)::

        with algo.step_context(step):
            loss = loss_fn(algo.training_model()(x), y)
            loss.backward()
        optimizer.step(); optimizer.zero_grad(set_to_none=True)
        algo.after_optimizer_step(step)

    The optimizer is built on the bare model's parameters (a DDP wrapper shares
    them). Where the algorithm is in its communication cycle follows from
    `step`, so a resumed run continues the cycle from the step it resumes at.
    """

    name: str
    counters: SyncCounters
    #: This rank's ‖x_k − x̄‖ / ‖x̄‖ at the last global model averaging (`.value()`: a 0-d
    #: tensor on the device), x̄ the consensus it produced; None for mini-batch SGD and
    #: before the first.
    consensus_distance: ConsensusDistance | None = None

    def __init__(
        self, model: nn.Module, config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
    ) -> None:
        """`config` is validated (dsgd_contract.config); subclasses read their settings from it."""
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be at least 1, got {steps_per_epoch}")
        self.model = model
        self.ctx = ctx
        self.counters = SyncCounters()

    @abstractmethod
    def training_model(self) -> nn.Module:
        """What forward/backward runs on: a DDP wrapper for gradient averaging, else the model."""

    @abstractmethod
    def step_context(self, step: int) -> AbstractContextManager[None]:
        """Entered around forward + backward of global step `step`."""

    @abstractmethod
    def after_optimizer_step(self, step: int) -> None:
        """Called after optimizer.step() of global step `step`; synchronizes when due."""

    @abstractmethod
    def synchronize_for_evaluation(self) -> nn.Module:
        """A model with the globally synchronized parameters and buffers, on every rank.

        Collective: every rank must call it. It does not change the training
        trajectory, and its communication is not counted in `counters`.
        """

    def state_dict(self) -> dict:
        """This rank's state needed to resume exactly (the model and optimizer are the loop's)."""
        return {"algorithm": self.name, "counters": self.counters.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`; the model and optimizer state are restored by the loop."""
        if state.get("algorithm") != self.name:
            raise ValueError(
                f"the checkpoint was written by algorithm {state.get('algorithm')!r}, "
                f"this run uses {self.name!r}"
            )
        self.counters.load_state_dict(state["counters"])
