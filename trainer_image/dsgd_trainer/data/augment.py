"""Batched image augmentation on tensors, driven by an explicit torch.Generator.

The trainer augments whole batches on the training device (no per-sample
Python). All randomness comes from the generator passed in, drawn on the
generator's own device, so a run is reproducible and a checkpoint that saves
`generator.get_state()` resumes the exact same augmentation stream.

Nothing in the per-step path is made from host data: index ranges are created
on the device, a scalar fill is a fill kernel, and a per-channel fill lives on
the device once `CropAndFlip.to(device)` (called by `DataBundle.to`) put it
there. A host tensor used on a GPU would be a blocking host→device copy every
step, and the host could no longer queue work ahead of the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def crop_and_flip(
    batch: torch.Tensor,
    generator: torch.Generator,
    padding: int = 4,
    fill: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Random crop with `padding` and random horizontal flip (p=0.5) of each image.

    `batch` is N×C×H×W. Each image is padded by `padding` pixels on every side
    with `fill` (a scalar, or C×1×1 per channel: the normalised value of a
    black pixel keeps torchvision's semantics), an H×W window at a uniformly
    random offset is cut out, and it is mirrored left-right with probability
    1/2: torchvision's RandomCrop(H, padding) + RandomHorizontalFlip(), batched.
    """
    count, channels, height, width = batch.shape
    device = batch.device
    spread = 2 * padding + 1
    offsets = torch.randint(0, spread, (count, 2), generator=generator, device=generator.device).to(
        device
    )
    flips = torch.randint(0, 2, (count,), generator=generator, device=generator.device).to(device)

    padded_shape = (count, channels, height + 2 * padding, width + 2 * padding)
    if isinstance(fill, torch.Tensor):
        # A no-op when the fill already lives on the device with the batch's dtype.
        padded = fill.to(device=device, dtype=batch.dtype).expand(padded_shape).clone()
    else:
        padded = batch.new_full(padded_shape, fill)
    padded[:, :, padding : padding + height, padding : padding + width] = batch

    rows = offsets[:, :1] + torch.arange(height, device=device)  # N×H
    columns = offsets[:, 1:] + torch.arange(width, device=device)  # N×W
    # A flip of the crop is the crop's columns read right to left: one gather does both.
    columns = torch.where(flips[:, None].bool(), columns.flip(1), columns)
    image = torch.arange(count, device=device)[:, None, None, None]
    channel = torch.arange(channels, device=device)[None, :, None, None]
    return padded[image, channel, rows[:, None, :, None], columns[:, None, None, :]]


@dataclass(frozen=True)
class CropAndFlip:
    """`crop_and_flip` with fixed `padding` and `fill`, as a DataBundle's augmentation.

    `to(device)` returns it with its per-channel fill on `device`, so the step
    that calls it copies nothing to the device.
    """

    padding: int = 4
    fill: torch.Tensor | float = 0.0

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return crop_and_flip(batch, generator, self.padding, self.fill)

    def to(self, device: torch.device) -> CropAndFlip:
        if not isinstance(self.fill, torch.Tensor):
            return self
        return CropAndFlip(self.padding, self.fill.to(device))
