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


class RunningStats:
    """Σ loss·n and Σ correct on the device (no step waits for the GPU), n on the host."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        self.count = 0
        self.since = time.perf_counter()

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        correct = (outputs.argmax(dim=1) == targets).sum()
        self.sums += torch.stack([loss.double() * len(targets), correct.double()])
        self.count += len(targets)

    def totals(self) -> torch.Tensor:
        """[Σ loss·n, Σ correct, n] as one float64 tensor (for an all-reduce)."""
        return torch.cat([self.sums, self.sums.new_tensor([self.count])])


class EvaluationWindow:
    """The training since the last evaluation: its statistics and its training seconds
    (evaluation and start-up excluded, so time-to-accuracy counts training only)."""

    def __init__(self, device: torch.device) -> None:
        self.stats = RunningStats(device)
        self.train_seconds = 0.0


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
