"""A synthetic, learnable classification set generated from the seed: no files needed.

Ten classes of 1×8×8 "images": each class has a smooth random prototype
(a 4×4 Gaussian grid upsampled bilinearly, so convolutions find local
structure), and a sample is its class prototype plus independent Gaussian
pixel noise. The noise is set so that the classes overlap: a linear model
reaches roughly 85–90% test accuracy, not 100%, so learning curves mean
something. Every model (mlp, cnn, resnet20) accepts the shape.

Deterministic: the same seed gives the same prototypes and samples on every
rank and machine (torch's CPU generator). Train and test share the
prototypes and draw independent samples. Classes are balanced (round robin,
then shuffled).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsgd_trainer.data.bundle import DataBundle, TensorDataset

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
DEFAULT_TRAIN_SAMPLES = 2048
DEFAULT_TEST_SAMPLES = 512
#: Pixel noise relative to the prototypes' unit scale; chosen so that classes overlap.
NOISE = 2.5


def make_synthetic(
    seed: int, train_samples: int | None = None, test_samples: int | None = None
) -> DataBundle:
    """The synthetic set for `seed`, with the given split sizes (defaults 2048 / 512)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(NUM_CLASSES, 1, 4, 4, generator=generator)
    prototypes = F.interpolate(coarse, size=IMAGE_SHAPE[1:], mode="bilinear", align_corners=True)
    prototypes = prototypes / prototypes.std(dim=(1, 2, 3), keepdim=True)
    train = sample(prototypes, train_samples or DEFAULT_TRAIN_SAMPLES, generator)
    test = sample(prototypes, test_samples or DEFAULT_TEST_SAMPLES, generator)
    return DataBundle(train, test, NUM_CLASSES, IMAGE_SHAPE)


def sample(prototypes: torch.Tensor, count: int, generator: torch.Generator) -> TensorDataset:
    labels = torch.arange(count) % NUM_CLASSES
    labels = labels[torch.randperm(count, generator=generator)]
    noise = NOISE * torch.randn(count, *IMAGE_SHAPE, generator=generator)
    # Scale to unit variance overall, like the normalised real datasets.
    inputs = (prototypes[labels] + noise) / (1 + NOISE**2) ** 0.5
    return TensorDataset(inputs, labels)
