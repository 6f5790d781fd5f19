"""Post-local SGD (Lin et al., Algorithm 2): mini-batch SGD, then local SGD.

Steps s < T = switchEpoch × steps_per_epoch run mini-batch SGD through a DDP
wrapper (gradient all-reduce every step, counted as in mini_batch.py); from
step T on, local SGD with H = localSteps (optionally compressed), averaging
after steps T + H − 1, T + 2H − 1, …. For S ≥ T steps:
T + ⌊(S − T)/H⌋ global rounds.

The switch: after step T − 1 the replicas have identical parameters (same
averaged gradients) but each rank's BatchNorm statistics came from its own
last batch, so rank 0's buffers are broadcast (what DDP's next forward would
have done; its bytes are counted in the global scope, as no round). That
identical model is the compression reference x_sync. The local phase runs on
the bare model instead of DDP + no_sync(): no_sync would still broadcast
buffers in the first forward after a synced step, and the DDP wrapper is
dropped to free its gradient buckets.

The DDP wrapper is created lazily in the first mini-batch step, so a run
resumed in the local phase never broadcasts rank 0's model over the others.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import GLOBAL
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .averaging import broadcast_
from .context import DistContext
from .local_sgd import LocalSGD
from .mini_batch import ddp_step_bytes, rank0_buffers_, wrap_in_ddp


class PostLocalSGD(LocalSGD):
    """Mini-batch SGD before the switch step, local SGD (maybe compressed) after it."""

    name = "post-local-sgd"

    def __init__(
        self, model: nn.Module, config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
    ) -> None:
        super().__init__(model, config, ctx, steps_per_epoch)
        if config.switch_epoch is None:
            raise ValueError("post-local-sgd needs algorithm.switchEpoch or optimizer.milestones")
        #: T: the first step of the local phase.
        self.switch_step = config.switch_epoch * steps_per_epoch
        self.local_phase_start = self.switch_step
        self._ddp: DistributedDataParallel | None = None

    def in_local_phase(self) -> bool:
        return self._step >= self.switch_step

    def training_model(self) -> nn.Module:
        if self.in_local_phase():
            return self.model
        if self._ddp is None:
            self._ddp = wrap_in_ddp(self.model, self.ctx)
        return self._ddp

    def step_context(self, step: int) -> AbstractContextManager[None]:
        self._step = step
        if not self.in_local_phase():
            self.training_model()  # wrap now (a collective), not inside the loop's forward
        return nullcontext()

    def after_optimizer_step(self, step: int) -> None:
        if step >= self.switch_step:
            super().after_optimizer_step(step)
            return
        self._step = step + 1
        self.counters.record(GLOBAL, ddp_step_bytes(self.model))
        if step + 1 == self.switch_step:
            self._switch_to_local()

    def synchronize_for_evaluation(self) -> nn.Module:
        if self.in_local_phase():
            return super().synchronize_for_evaluation()
        self.training_model()  # before step 0 the DDP wrap is what makes replicas identical
        rank0_buffers_(self.model)  # as mini-batch SGD: parameters are identical already
        return self.model

    def _switch_to_local(self) -> None:
        buffers = list(self.model.buffers())
        if buffers:
            with self.counters.timed(self.ctx.device):
                nbytes = broadcast_(buffers, src=0)
            self.counters.record(GLOBAL, nbytes, rounds=0)
        self._ddp = None
        self._global_sync.reset(self.model)
        self._synced = True
