"""Batched CIFAR augmentation: torchvision's crop + flip, reproducible from a generator."""

from __future__ import annotations

import itertools

import torch
from dsgd_trainer.data.augment import crop_and_flip


def windows(image: torch.Tensor, padding: int, fill: torch.Tensor) -> list[torch.Tensor]:
    """Every crop (and its mirror) of `image` padded with `fill`: the outputs allowed."""
    channels, height, width = image.shape
    padded = fill.expand(channels, height + 2 * padding, width + 2 * padding).clone()
    padded[:, padding : padding + height, padding : padding + width] = image
    spread = range(2 * padding + 1)
    crops = [padded[:, y : y + height, x : x + width] for y, x in itertools.product(spread, spread)]
    return crops + [crop.flip(-1) for crop in crops]


def test_each_image_becomes_a_padded_crop_or_its_mirror_with_the_fill_value() -> None:
    batch = torch.randn(32, 3, 8, 8)
    fill = torch.tensor([-1.0, -2.0, -3.0]).view(3, 1, 1)
    out = crop_and_flip(batch, torch.Generator().manual_seed(0), padding=2, fill=fill)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    for image, augmented in zip(batch, out, strict=True):
        assert any(torch.equal(augmented, window) for window in windows(image, 2, fill))


def test_offsets_and_flips_are_uniform_over_their_range() -> None:
    # Pixels that hold their own coordinates reveal the offset and the flip each image got.
    side, padding, count = 16, 4, 4000
    coordinates = torch.arange(1, side * side + 1, dtype=torch.float32).view(1, 1, side, side)
    out = crop_and_flip(coordinates.expand(count, 1, side, side), torch.Generator().manual_seed(3))
    centre, right = out[:, 0, side // 2, side // 2], out[:, 0, side // 2, side // 2 + 1]
    flipped = right < centre  # mirrored rows read right to left
    source_row, source_column = (
        torch.div(centre - 1, side, rounding_mode="floor"),
        (centre - 1) % side,
    )
    dy = source_row - side // 2 + padding
    # Output column c of a mirrored crop is crop column side − 1 − c.
    dx = torch.where(flipped, source_column - (side // 2 - 1), source_column - side // 2) + padding
    assert 0.45 < flipped.float().mean() < 0.55
    pairs = {(int(y), int(x)) for y, x in zip(dy, dx, strict=True)}
    spread = range(2 * padding + 1)
    assert pairs == set(itertools.product(spread, spread))


def test_same_generator_state_gives_the_same_batch_so_checkpoints_resume_it() -> None:
    batch = torch.randn(16, 3, 32, 32)
    generator = torch.Generator().manual_seed(42)
    crop_and_flip(batch, generator)  # advance the stream, as a training run would
    saved = generator.get_state()
    first = crop_and_flip(batch, generator)
    generator.set_state(saved)
    assert torch.equal(crop_and_flip(batch, generator), first)
    assert not torch.equal(crop_and_flip(batch, generator), first)  # the stream moves on


def test_global_random_state_does_not_matter() -> None:
    batch = torch.randn(16, 3, 32, 32)
    torch.manual_seed(0)
    first = crop_and_flip(batch, torch.Generator().manual_seed(7))
    torch.manual_seed(1)
    assert torch.equal(crop_and_flip(batch, torch.Generator().manual_seed(7)), first)
