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


class RunningStats:
    """Σ loss·n and Σ correct of the training batches in `windows` windows at once.

    The sums live on the device as one (windows × 2) float64 tensor, so one step
    adds its pair to every window with one broadcast addition (no host sync, one
    accumulation whatever the number of windows); the sample counts are host
    integers. A window restarts on its own (`restart`), and each window's sum is
    exactly what a fresh accumulator over its steps would hold.
    """

    def __init__(self, device: torch.device, windows: int = 1) -> None:
        self.sums = torch.zeros(windows, 2, dtype=torch.float64, device=device)
        self._count = 0  # samples since construction
        self._count_at_start = [0] * windows
        self.started = [time.perf_counter()] * windows

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """One training batch: its mean `loss`, the `outputs` (logits) and `targets`."""
        n = len(targets)
        correct = (outputs.argmax(dim=1) == targets).sum()
        self.sums.add_(torch.stack((loss.detach() * n, correct)))
        self._count += n

    def totals(self, window: int = 0) -> torch.Tensor:
        """[Σ loss·n, Σ correct, n] of `window` as one float64 tensor (for an all-reduce)."""
        count = self._count - self._count_at_start[window]
        return torch.cat([self.sums[window], self.sums.new_tensor([count])])

    def since(self, window: int = 0) -> float:
        """When `window` (re)started, on time.perf_counter's clock."""
        return self.started[window]

    def restart(self, window: int = 0) -> None:
        """Empty `window` (the others keep counting)."""
        self.sums[window].zero_()
        self._count_at_start[window] = self._count
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
