"""The learning-rate schedule of the large-batch recipe (Goyal et al. 2017), per iteration.

1. Linear scaling: the peak lr is `learningRate × globalBatch / baseBatchSize`
   (`scaling: linear`), or `learningRate` as given (`scaling: none`). For
   downpour-sgd the batch of one update is one replica's (each push is applied
   on its own, Dean et al.): batchSizePerProcess, whatever the world size.
2. Gradual warm-up: over the first `warmupEpochs` the lr rises linearly, every
   iteration, from `learningRate` to the peak (a large peak lr from step 0 is
   what makes large batches diverge early). Unset: 5 epochs, or half of training
   when shorter (dsgd_contract.config.resolve_warmup_epochs).
3. Step decay (`schedule: step`): × `gamma` at each milestone, a fraction of all
   training steps (`round(fraction × epochs × steps_per_epoch)`); or polynomial
   decay (`schedule: poly`, You et al.'s LARS recipe): after the warm-up,
   peak × (1 − (step − warmup) / (total − warmup))^power, reaching 0 at the end.

The schedule is a pure function of the global step, so a checkpoint only needs
the step to restore it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from dsgd_contract.config import TrainingConfig
from dsgd_contract.downpour import DOWNPOUR
from dsgd_contract.training_steps import milestone_step


@dataclass(frozen=True)
class LearningRateSchedule:
    """lr(step) for global optimizer step `step` (0-based, counted across epochs)."""

    base_lr: float
    peak_lr: float
    warmup_steps: int
    milestone_steps: tuple[int, ...]
    gamma: float
    #: 0 for the step schedule; the total number of steps for the poly schedule.
    poly_total_steps: int = 0
    poly_power: float = 2.0

    @classmethod
    def from_config(
        cls, config: TrainingConfig, world_size: int, steps_per_epoch: int
    ) -> LearningRateSchedule:
        """The schedule for `world_size` ranks taking `steps_per_epoch` steps per epoch."""
        opt = config.optimizer
        replicas_per_update = 1 if config.algorithm.name == DOWNPOUR else world_size
        global_batch = config.training.batch_size_per_process * replicas_per_update
        scale = global_batch / opt.base_batch_size if opt.scaling == "linear" else 1.0
        return cls(
            base_lr=opt.learning_rate,
            peak_lr=opt.learning_rate * scale,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            milestone_steps=tuple(
                milestone_step(m, config.training.epochs, steps_per_epoch) for m in opt.milestones
            ),
            gamma=opt.gamma,
            poly_total_steps=config.training.epochs * steps_per_epoch
            if opt.schedule == "poly"
            else 0,
            poly_power=opt.poly_power,
        )

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            lr = self.base_lr + (self.peak_lr - self.base_lr) * step / self.warmup_steps
        elif self.poly_total_steps:
            decay_steps = max(1, self.poly_total_steps - self.warmup_steps)
            remaining = max(0.0, 1 - (step - self.warmup_steps) / decay_steps)
            return self.peak_lr * remaining**self.poly_power
        else:
            lr = self.peak_lr
        # A milestone at step m applies from step m on (bisect_right counts m <= step).
        decays = bisect.bisect_right(self.milestone_steps, step)
        return lr * self.gamma**decays
