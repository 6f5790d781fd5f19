"""Which training samples each rank uses in each epoch, agreed without communication.

Every epoch, all ranks draw the same global permutation of the training set
from a CPU `torch.Generator` seeded from `SeedSequence([seed, epoch])` (same
seed on every rank, so no messages are exchanged). Hashing the pair keeps
replicates independent: with `seed + epoch`, seed s at epoch e would replay
seed s + 1 at epoch e − 1. The first S·K·B indices of it are used,
where K is the world size, B the per-rank batch size and S = ⌊N / (K·B)⌋ the
number of steps per epoch; rank k takes every K-th of them, starting at k.

Consequences the trainer and tests rely on:

- the ranks' samples are disjoint, and together cover all but the
  N mod (K·B) samples dropped this epoch (different ones each epoch);
- every rank gets exactly S batches of exactly B samples, so all ranks step
  in lockstep (no rank waits on a collective another rank never reaches);
- the union of the ranks' t-th batches is `permutation[t·K·B:(t+1)·K·B]`,
  whatever K is: K ranks with batch B see the same global batches as one
  process with batch K·B (this is what makes mini-batch SGD comparable
  across world sizes).

To resume mid-epoch, recompute the epoch's batches and skip the steps done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsgd_trainer.data.bundle import DataLoadError


def epoch_seed(seed: int, epoch: int) -> int:
    """The 64-bit generator seed of (seed, epoch): numpy's SeedSequence hash of the pair."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0])


def epoch_permutation(num_samples: int, epoch: int, seed: int) -> torch.Tensor:
    """The global order of the training set in `epoch` (identical on every rank)."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_samples, generator=generator)


@dataclass(frozen=True)
class EpochSampler:
    """Rank `rank`'s share of a training set of `num_samples`, epoch by epoch (see module doc)."""

    num_samples: int
    seed: int
    rank: int
    world_size: int
    batch_size: int

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in a world of size {self.world_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if len(self) == 0:
            raise DataLoadError(
                f"the training set has {self.num_samples} samples, fewer than one global batch "
                f"of {self.world_size * self.batch_size} (world size {self.world_size} × "
                f"batchSizePerProcess {self.batch_size}); use a smaller batch or more data"
            )

    def __len__(self) -> int:
        """Batches (= steps) per epoch, the same on every rank."""
        return self.num_samples // (self.world_size * self.batch_size)

    def batches(self, epoch: int) -> list[torch.Tensor]:
        """This rank's index batches for `epoch`: len(self) CPU int64 tensors of batch_size."""
        return list(self._table(epoch).unbind(0))

    def batches_on(self, epoch: int, device: torch.device) -> list[torch.Tensor]:
        """`batches(epoch)` as views of one tensor on `device`: one copy per epoch, none per step.

        On a GPU the table goes through pinned memory with a non-blocking copy,
        so not even that one copy makes the host wait for the device.
        """
        table = self._table(epoch)
        if device.type == "cuda":
            table = table.pin_memory().to(device, non_blocking=True)
        else:
            table = table.to(device)
        return list(table.unbind(0))

    def _table(self, epoch: int) -> torch.Tensor:
        """steps × batch_size: row t is this rank's batch of step t (contiguous, CPU)."""
        steps, ranks, size = len(self), self.world_size, self.batch_size
        used = epoch_permutation(self.num_samples, epoch, self.seed)[: steps * size * ranks]
        # [t, j, k] = permutation[t·B·K + j·K + k]: rank k's j-th sample of step t.
        return used.view(steps, size, ranks)[:, :, self.rank].contiguous()


def rank_batches(
    num_samples: int, epoch: int, seed: int, rank: int, world_size: int, batch_size: int
) -> list[torch.Tensor]:
    """Index batches of `rank` for `epoch`: a shortcut for `EpochSampler(...).batches(epoch)`."""
    return EpochSampler(num_samples, seed, rank, world_size, batch_size).batches(epoch)
