"""What the training loop measures of a model: running batch statistics and the test set.

Both keep their sums on the device and hand them over as one tensor, so that no
step waits for the GPU and ranks combine their figures with one all-reduce.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from dsgd_trainer.data import TensorDataset
from dsgd_trainer.distributed import autocast
from dsgd_trainer.gang import GangPosition

#: Test-set batch size: large, since evaluation keeps no activations for backward.
EVAL_BATCH_SIZE = 1024


#: The windows of the trainer's RunningStats: since the last metrics update, since the last
#: evaluation.
METRICS_WINDOW, EVALUATION_WINDOW = 0, 1


#: Training batches RunningStats holds before folding them into its totals.
FOLD_EVERY = 16


class RunningStats:
    """Σ loss·n and Σ correct of the training batches in `windows` windows at once.

    A step only keeps its (detached) loss, logits and targets; every FOLD_EVERY
    batches, and whenever totals are read, the kept batches are folded into two
    running totals on the device, a float64 Σ loss·n and an int64 Σ correct, with
    a handful of ops for all of them. Five small ops per step cost more than the
    rest of the loop's own work put together on a small model (each op ~10-20 µs
    on a CPU just after the optimizer step, a kernel launch on a GPU;
    benchmarks/overhead.py). Nothing waits for the device; the sample count is a
    host integer. The batches kept at once all have the same size (a different
    size folds first), so the loss sum is one weighted sum; what is held meanwhile is at
    most FOLD_EVERY batches of logits. A window is the
    difference between the totals now and a copy taken when it (re)started, so a
    window restarts on its own (`restart`) and each window's sum is what a fresh
    accumulator over its steps would hold (float64: exact enough over any run).
    """

    def __init__(self, device: torch.device, windows: int = 1) -> None:
        self._loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self._correct = torch.zeros((), dtype=torch.int64, device=device)
        self._count = 0  # samples since construction
        self._kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._kept_size = 0  # the batch size of every kept batch
        self._at_start = [self._totals() for _ in range(windows)]
        self.started = [time.perf_counter()] * windows

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """One training batch: its mean `loss`, the `outputs` (logits) and `targets`."""
        n = len(targets)
        if n != self._kept_size or len(self._kept) >= FOLD_EVERY:
            self._fold()
            self._kept_size = n
        self._kept.append((loss.detach(), outputs.detach(), targets))
        self._count += n

    def _fold(self) -> None:
        """Add the kept batches to the totals (on the device, no host sync)."""
        if not self._kept:
            return
        losses, outputs, targets = zip(*self._kept, strict=True)
        self._kept = []
        loss_sum = torch.stack(losses).sum(dtype=torch.float64)
        self._loss_sum.add_(loss_sum, alpha=self._kept_size)
        predicted = torch.cat(outputs).argmax(dim=1)
        self._correct.add_(predicted.eq_(torch.cat(targets)).sum())

    def _totals(self) -> torch.Tensor:
        """[Σ loss·n, Σ correct, n] since construction, as one new float64 tensor."""
        self._fold()
        count = self._loss_sum.new_tensor(self._count)
        return torch.stack((self._loss_sum, self._correct.to(torch.float64), count))

    def totals(self, window: int = 0) -> torch.Tensor:
        """[Σ loss·n, Σ correct, n] of `window` as one float64 tensor (for an all-reduce)."""
        return self._totals() - self._at_start[window]

    def since(self, window: int = 0) -> float:
        """When `window` (re)started, on time.perf_counter's clock."""
        return self.started[window]

    def restart(self, window: int = 0) -> None:
        """Empty `window` (the others keep counting)."""
        self._at_start[window] = self._totals()
        self.started[window] = time.perf_counter()


@torch.no_grad()
def evaluate(
    model: nn.Module, test: TensorDataset, gang: GangPosition, use_bf16: bool
) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` on the whole test set, identical on every rank.

    Each rank evaluates a contiguous 1/K of the test set and one all-reduce adds
    the sums up: K times faster than every rank doing all of it, same numbers.
    """
    model.eval()
    device = test.inputs.device
    # Indices made on the device: no host→device copy (a blocking one, from pageable
    # memory) per evaluation batch.
    shard = torch.tensor_split(torch.arange(len(test), device=device), gang.world_size)[gang.rank]
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # Σ loss, Σ correct, n
    for indices in shard.split(EVAL_BATCH_SIZE):
        inputs, targets = test.inputs[indices], test.targets[indices]
        with autocast(device, use_bf16):
            outputs = model(inputs)
        sums[0] += F.cross_entropy(outputs.float(), targets, reduction="sum")
        sums[1] += (outputs.argmax(dim=1) == targets).sum()
        sums[2] += len(targets)
    dist.all_reduce(sums)
    loss_sum, correct_sum, count = sums.tolist()
    return loss_sum / count, correct_sum / count
