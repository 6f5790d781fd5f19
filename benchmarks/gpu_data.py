"""CIFAR-10-shaped synthetic data, as a dsgd dataset plug-in (`gpu_data:cifar_shaped`).

3×32×32 images in 10 classes, 50 000 for training and 10 000 for testing:
CIFAR-10's shapes and sizes, so a ResNet-20 does CIFAR's work per step,
without the files. Each class is a smooth random prototype plus pixel noise
(learnable, not trivially). The augmentation is the one `load_cifar` builds:
crop with 4 pixels of padding and a per-channel fill, and a horizontal flip.
`cifar_shaped_small` is the same at 1/100 of the size (the CPU dry run).

Used by benchmarks/gpu_check.py with `benchmarks/` on PYTHONPATH.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from dsgd_trainer.data import DataBundle, TensorDataset
from dsgd_trainer.data.augment import CropAndFlip

NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
#: The normalised value of a black pixel in each channel, as load_cifar pads with.
FILL = torch.tensor([-1.99, -1.98, -1.71]).view(3, 1, 1)
NOISE = 1.5


def make(train_samples: int, test_samples: int, seed: int) -> DataBundle:
    """The data set at the given sizes; the same for the same seed on every rank."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(NUM_CLASSES, 3, 8, 8, generator=generator)
    prototypes = F.interpolate(coarse, size=IMAGE_SHAPE[1:], mode="bilinear", align_corners=True)

    def split(count: int) -> TensorDataset:
        labels = torch.arange(count) % NUM_CLASSES
        labels = labels[torch.randperm(count, generator=generator)]
        images = prototypes[labels] + NOISE * torch.randn(count, *IMAGE_SHAPE, generator=generator)
        return TensorDataset(images / (1 + NOISE**2) ** 0.5, labels)

    return DataBundle(
        split(train_samples),
        split(test_samples),
        NUM_CLASSES,
        IMAGE_SHAPE,
        augment=CropAndFlip(padding=4, fill=FILL),
    )


def cifar_shaped(path: str | None, seed: int) -> DataBundle:
    """CIFAR-10's sizes: 50 000 training and 10 000 test images."""
    return make(50_000, 10_000, seed)


def cifar_shaped_small(path: str | None, seed: int) -> DataBundle:
    """1/100 of it, for the dry run on CPUs."""
    return make(500, 100, seed)
