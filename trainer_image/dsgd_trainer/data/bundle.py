"""The in-memory form of a dataset that the trainer consumes.

Whole splits live as two tensors on the training device, so a batch is one
indexing operation (`inputs[indices]`): no per-sample Python, no DataLoader
workers, nothing to keep in step across ranks but the index lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: A batched augmentation: (inputs of one batch, generator) → augmented batch of the same shape.
#: It must draw all its randomness from the generator, so that saving the
#: generator's state in a checkpoint makes the augmentation resumable. One that
#: holds tensors (constants) may define `to(device)` returning itself with them
#: on `device`: `DataBundle.to` calls it, so that no step copies them to the GPU.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def augment_on(augment: Augment | None, device: torch.device) -> Augment | None:
    """`augment` with its constants on `device` where it knows how (a `to` method)."""
    move = getattr(augment, "to", None)
    return move(device) if callable(move) else augment


class DataLoadError(Exception):
    """The dataset is missing, malformed or unusable. Non-retryable: exit code 65."""


@dataclass(frozen=True)
class TensorDataset:
    """One split: float32 inputs (N×C×H×W images, normalised; or N×D) and int64 targets (N)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        if self.inputs.dtype != torch.float32:
            raise ValueError(f"inputs must be float32, got {self.inputs.dtype}")
        if self.targets.dtype != torch.int64 or self.targets.dim() != 1:
            raise ValueError(
                f"targets must be a 1-D int64 tensor, got {self.targets.dtype} "
                f"of shape {tuple(self.targets.shape)}"
            )
        if self.inputs.dim() < 2 or len(self.inputs) != len(self.targets):
            raise ValueError(
                f"inputs of shape {tuple(self.inputs.shape)} do not match "
                f"{len(self.targets)} targets"
            )

    def __len__(self) -> int:
        return len(self.targets)

    def to(self, device: torch.device) -> TensorDataset:
        return TensorDataset(self.inputs.to(device), self.targets.to(device))

    def subset(self, indices: torch.Tensor) -> TensorDataset:
        return TensorDataset(self.inputs[indices], self.targets[indices])


@dataclass(frozen=True)
class DataBundle:
    """Everything the trainer needs from a dataset.

    `input_shape` is the shape of one sample: (C, H, W) for images, (D,) for
    flat features. `augment`, when set, is applied by the trainer to each
    training batch (never to the test set).
    """

    train: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]
    augment: Augment | None = None

    def __post_init__(self) -> None:
        for split, data in (("train", self.train), ("test", self.test)):
            if tuple(data.inputs.shape[1:]) != tuple(self.input_shape):
                raise ValueError(
                    f"{split} inputs have sample shape {tuple(data.inputs.shape[1:])}, "
                    f"expected {tuple(self.input_shape)}"
                )
        if self.num_classes < 2:
            raise ValueError(f"classification needs 2 or more classes, got {self.num_classes}")

    def to(self, device: torch.device) -> DataBundle:
        return DataBundle(
            self.train.to(device),
            self.test.to(device),
            self.num_classes,
            tuple(self.input_shape),
            augment_on(self.augment, device),
        )


def first_after_permutation(
    data: TensorDataset, count: int | None, seed: int, what: str
) -> TensorDataset:
    """The first `count` samples after a permutation seeded with `seed` (all when None).

    A random subset rather than a prefix, because files are often sorted by
    class; with the same seed every rank picks the same subset. `what` names
    the split and field in the error when `count` is larger than the split.
    """
    if count is None:
        return data
    if count > len(data):
        raise DataLoadError(f"{what} is {count}, but the split has only {len(data)} samples")
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(data), generator=generator)[:count]
    return data.subset(indices.to(data.targets.device))
