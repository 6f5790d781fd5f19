"""When the local SGD variants synchronize, and at which scope: one schedule per variant.

A schedule is pure arithmetic on the global step (0-based optimizer steps
since the start of training), so a resumed run continues the cycle from the
step it resumes at. How a due synchronization is carried out (dense or
compressed) is the synchroniser's business (model_sync.py); the algorithm that
runs both is local_sgd.LocalSGD.

Every schedule has a mini-batch phase, steps s < `switch_step`, run as
mini-batch SGD (DDP gradient averaging every step), and a local phase from
`switch_step` on, where `averaging_after(s)` names the scope of the model
averaging due after step s, if any. Only post-local SGD has a non-empty
mini-batch phase.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import GLOBAL, INTRA_NODE
from dsgd_contract.training_steps import post_local_switch_step

from .context import DistContext


class SyncSchedule(ABC):
    """When to average (after which steps) and at which scope (GLOBAL or INTRA_NODE)."""

    #: T: the first step of the local phase; steps before it are mini-batch SGD.
    switch_step: int

    def in_local_phase(self, step: int) -> bool:
        """Whether global step `step` is a local step (no gradient averaging)."""
        return step >= self.switch_step

    @abstractmethod
    def averaging_after(self, step: int) -> str | None:
        """The scope averaged after local step `step` (≥ switch_step), or None for no averaging."""


@dataclass(frozen=True)
class EveryHSteps(SyncSchedule):
    """Local SGD (Lin et al., Algorithm 1), and post-local SGD's local phase (Algorithm 2).

    Global averaging after steps T + H − 1, T + 2H − 1, …, i.e. when
    (s + 1 − T) mod H = 0. With T = 0 (local SGD), S steps make ⌊S/H⌋ global
    rounds. (PyTorch's PeriodicModelAverager with warmup_steps=0 also averages
    after the very first step; the test aligns the two by starting its counter
    at 1.) Post-local SGD, T = switchEpoch × steps_per_epoch: for S ≥ T steps,
    T mini-batch rounds + ⌊(S − T)/H⌋ global averaging rounds.
    """

    local_steps: int
    switch_step: int = 0

    def averaging_after(self, step: int) -> str | None:
        return GLOBAL if (step + 1 - self.switch_step) % self.local_steps == 0 else None


@dataclass(frozen=True)
class Hierarchical(SyncSchedule):
    """Hierarchical local SGD (Lin et al., Algorithm 5).

    Every H local steps a rank averages with the ranks of its own node (one
    pod); every H_b such intra-node averagings, i.e. every H·H_b steps, all
    ranks average globally instead. The global averaging replaces the
    intra-node one due at the same step: a global average already makes the
    node's ranks identical, so an intra-node round on top would move nothing.
    For S steps: ⌊S/(H·H_b)⌋ global rounds and ⌊S/H⌋ − ⌊S/(H·H_b)⌋ intra-node
    rounds.
    """

    local_steps: int
    block_steps: int
    switch_step: int = 0

    def averaging_after(self, step: int) -> str | None:
        done = step + 1
        if done % (self.local_steps * self.block_steps) == 0:
            return GLOBAL
        if done % self.local_steps == 0:
            return INTRA_NODE
        return None


def make_sync_schedule(
    config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
) -> SyncSchedule:
    """The named local variant's schedule; ValueError if this gang cannot run it."""
    algorithm = config.algorithm
    if algorithm.name == "local-sgd":
        return EveryHSteps(algorithm.local_steps)
    if algorithm.name == "post-local-sgd":
        switch_step = post_local_switch_step(config, steps_per_epoch)
        if switch_step is None:
            raise ValueError("post-local-sgd needs algorithm.switchEpoch or optimizer.milestones")
        return EveryHSteps(algorithm.local_steps, switch_step=switch_step)
    if algorithm.name == "hierarchical-local-sgd":
        # With one process per node it would only be local SGD with H·H_b (the spec refuses it).
        if ctx.intra_node_group is None or ctx.gang.nodes < 2:
            raise ValueError(
                f"{algorithm.name} needs several nodes with several processes each, got "
                f"{ctx.gang.nodes} node(s) × {ctx.gang.local_world_size} process(es)"
            )
        return Hierarchical(algorithm.local_steps, algorithm.block_steps)
    raise ValueError(f"{algorithm.name!r} is not a local SGD variant")
