"""Local SGD (Lin et al., Algorithm 1), optionally with sign / EF-sign compression (Alg. 3/4).

Every rank takes H = algorithm.localSteps optimizer steps on its own batches
without communicating (momentum buffers stay local), then all ranks average
parameters and floating buffers. Schedule: after global step s when
(s + 1) mod H = 0, i.e. after H, 2H, … steps, so S steps make ⌊S/H⌋ global
rounds. (PyTorch's PeriodicModelAverager with warmup_steps=0 also averages
after the very first step; the test aligns the two by starting its counter at 1.)

Bytes per round: dense, Σ numel × element size of the averaged tensors;
compressed, the packed payload (see compression.py) plus the dense buffers.

At step 0 rank 0's parameters and buffers are broadcast so that the replicas
start identical, as DDP does at construction; this one-time initialization is
not counted. Doing it at step 0 rather than at construction keeps it harmless
when the loop loads a per-rank checkpoint before building the algorithm.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import GLOBAL
from torch import nn

from .averaging import averaged_copy, make_replicas_identical_
from .base import Algorithm
from .context import DistContext
from .model_sync import make_global_sync


class LocalSGD(Algorithm):
    """Periodic global model averaging every H local steps."""

    name = "local-sgd"

    def __init__(
        self, model: nn.Module, config: TrainingConfig, ctx: DistContext, steps_per_epoch: int
    ) -> None:
        super().__init__(model, config, ctx, steps_per_epoch)
        self.local_steps = config.algorithm.local_steps
        self._global_sync = make_global_sync(config.algorithm.compression)
        #: The first step of local SGD; the H-cycle counts from here (post-local: the switch).
        self.local_phase_start = 0
        #: The step being run, or the next one after after_optimizer_step.
        self._step = 0
        #: Whether all ranks now hold identical parameters and floating buffers.
        self._synced = False

    def training_model(self) -> nn.Module:
        return self.model

    def step_context(self, step: int) -> AbstractContextManager[None]:
        if step == 0 and self._step == 0:
            self._start_local_phase()
        self._step = step
        return nullcontext()

    def after_optimizer_step(self, step: int) -> None:
        self._step = step + 1
        if (step + 1 - self.local_phase_start) % self.local_steps == 0:
            self._synchronize_globally()
        else:
            self._synced = False

    def synchronize_for_evaluation(self) -> nn.Module:
        """The model itself right after a global averaging, else a globally averaged deep copy.

        The copy is a plain (uncompressed) average of the replicas, also with compression.
        """
        return self.model if self._synced else averaged_copy(self.model)

    def _start_local_phase(self) -> None:
        """Make replicas identical (uncounted) and start the compression reference x_sync."""
        make_replicas_identical_(self.model)
        self._global_sync.reset(self.model)
        self._synced = True

    def _synchronize_globally(self) -> None:
        with self.counters.timed(self.ctx.device):
            nbytes = self._global_sync.synchronize(self.model)
        self.counters.record(GLOBAL, nbytes)
        self._synced = True

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "step": self._step,
            "synced": self._synced,
            "global_sync": self._global_sync.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._step = int(state["step"])
        self._synced = bool(state["synced"])
        self._global_sync.load_state_dict(state["global_sync"])
