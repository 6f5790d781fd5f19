"""Hierarchical local SGD (Lin et al., Algorithm 5).

Every H local steps a rank averages with the ranks of its own node (one pod);
every H_b such intra-node averagings, i.e. every H·H_b steps, all ranks average
globally instead. The global averaging replaces the intra-node one due at the
same step: a global average already makes the node's ranks identical, so an
intra-node round on top would move nothing. For S steps this makes
⌊S/(H·H_b)⌋ global rounds and ⌊S/H⌋ − ⌊S/(H·H_b)⌋ intra-node rounds, each with
Σ numel × element size of the parameters and floating buffers.
"""

from __future__ import annotations

from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import INTRA_NODE
from torch import nn

from .averaging import average_, averaged_tensors
from .context import DistContext
from .local_sgd import LocalSGD


class HierarchicalLocalSGD(LocalSGD):
    """Intra-node averaging every H steps, global averaging every H·H_b steps."""

    name = "hierarchical-local-sgd"

    def __init__(
        self, model: nn.Module, config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
    ) -> None:
        super().__init__(model, config, ctx, steps_per_epoch)
        if ctx.intra_node_group is None or ctx.nodes < 2:
            raise ValueError(
                f"{self.name} needs several nodes with several processes each, got "
                f"{ctx.nodes} node(s) × {ctx.local_world_size} process(es)"
            )
        self.block_steps = config.algorithm.block_steps

    def after_optimizer_step(self, step: int) -> None:
        self._step = step + 1
        done = step + 1
        if done % (self.local_steps * self.block_steps) == 0:
            self._synchronize_globally()
            return
        self._synced = False
        if done % self.local_steps == 0:
            with self.counters.timed(self.ctx.device):
                nbytes = average_(averaged_tensors(self.model), group=self.ctx.intra_node_group)
            self.counters.record(INTRA_NODE, nbytes)
