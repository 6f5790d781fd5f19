"""One optimizer step of the training loop: what `train.py` runs per batch (and the overhead
benchmark times against plain PyTorch loops).

Per step, beyond what a plain PyTorch loop does (index the batch, augment,
forward, loss, backward, optimizer step, zero_grad), only:

- the learning rate, written into the optimizer's groups when it changes
  (the schedule is pure arithmetic on the step);
- the algorithm's hooks (`step_context`, `training_model`, `after_optimizer_step`);
- keeping the batch's loss, logits and targets for the training statistics
  (evaluation.RunningStats folds them into on-device sums every 16 steps with a
  handful of ops for all of them; no host sync).

Everything else the loop reports (metrics, records, the divergence check) is
read from those sums at publish and evaluation time. Held out of the step on
purpose: `torch.autocast(enabled=False)` (distributed.autocast hands out a
nullcontext instead), the CUDA sync debugger unless asked for (decided once),
and any per-step walk over the model (the algorithms' traffic is computed once).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F

from dsgd_trainer.algorithms import Algorithm
from dsgd_trainer.data import TensorDataset
from dsgd_trainer.data.bundle import Augment
from dsgd_trainer.distributed import autocast, step_sync_debug
from dsgd_trainer.evaluation import RunningStats


class TrainStep:
    """`step(s, indices)` trains global step s on the samples `indices` of `data`; returns the
    batch size. The caller counts steps, samples and time."""

    def __init__(
        self,
        algorithm: Algorithm,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float],
        data: TensorDataset,
        augment: Augment | None,
        augment_generator: torch.Generator,
        stats: RunningStats,
        device: torch.device,
        use_bf16: bool,
    ) -> None:
        self.algorithm, self.optimizer, self.schedule = algorithm, optimizer, schedule
        self.data, self.augment, self.augment_generator = data, augment, augment_generator
        self.stats, self.device, self.use_bf16 = stats, device, use_bf16
        #: The lr last written into the optimizer (None: not yet; the loop may have resumed).
        self.lr: float | None = None
        self._guard: Callable[[], AbstractContextManager[None]] | None = step_sync_debug(device)

    def __call__(self, step: int, indices: torch.Tensor) -> int:
        if self._guard is None:
            return self._step(step, indices)
        with self._guard():
            return self._step(step, indices)

    def _step(self, step: int, indices: torch.Tensor) -> int:
        lr = self.schedule(step)
        if lr != self.lr:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.lr = lr
        inputs, targets = self.data.inputs[indices], self.data.targets[indices]
        if self.augment is not None:
            inputs = self.augment(inputs, self.augment_generator)
        algorithm = self.algorithm
        with algorithm.step_context(step):
            with autocast(self.device, self.use_bf16):
                outputs = algorithm.training_model()(inputs)
            loss = F.cross_entropy(outputs.float(), targets)
            loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        algorithm.after_optimizer_step(step)
        self.stats.add(loss, outputs, targets)  # keeps them detached: no autograd context needed
        return len(targets)
