"""The two plain-PyTorch contenders of benchmarks/gpu_check.py: images/s of ResNet-20 on one device.

- `bare_loop`: the model dsgd trains (dsgd_trainer.models resnet20), the same
  data and augmentation, resident on the device, in the shortest loop PyTorch
  allows: the bound dsgd should come within 5 % of. With `per_step_copies` it
  makes what the pre-issue-17 trainer made every step (batch indices and the
  augmentation's fill copied from the host), to show what such copies cost.
- `dataloader_loop`: what a typical CIFAR script does: a Dataset that crops
  and flips one image at a time on the CPU, a DataLoader with workers and
  pinned memory, a copy of every batch to the device.

Both time `steps` steps after `warmup` ones, between two device synchronisations.
"""

from __future__ import annotations

import os
import time

import gpu_data
import torch
import torch.nn.functional as F
from dsgd_trainer.data.augment import crop_and_flip
from dsgd_trainer.models import build_model
from torch import nn
from torch.utils.data import DataLoader, Dataset


def _training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    bf16: bool,
) -> None:
    with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = model(inputs)
    F.cross_entropy(outputs.float(), targets).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _model_and_optimizer(device: torch.device) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model("resnet20", gpu_data.IMAGE_SHAPE, gpu_data.NUM_CLASSES).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    return model, optimizer


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(
    device: torch.device,
    *,
    bf16: bool,
    batch: int,
    steps: int,
    warmup: int,
    small: bool,
    per_step_copies: bool = False,
) -> float:
    """Images/s of the bare loop on GPU-resident data (see the module docstring)."""
    bundle = (gpu_data.cifar_shaped_small if small else gpu_data.cifar_shaped)(None, 0).to(device)
    train = bundle.train
    model, optimizer = _model_and_optimizer(device)
    generator = torch.Generator(device).manual_seed(0)
    fill_on_host = gpu_data.FILL
    augment = bundle.augment
    assert augment is not None
    model.train()
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            _synchronize(device)
            started = time.perf_counter()
        if per_step_copies:
            indices = torch.randint(0, len(train), (batch,)).to(device, non_blocking=True)
            inputs = crop_and_flip(train.inputs[indices], generator, 4, fill_on_host)
        else:
            indices = torch.randint(0, len(train), (batch,), device=device, generator=generator)
            inputs = augment(train.inputs[indices], generator)
        _training_step(model, optimizer, inputs, train.targets[indices], bf16)
    _synchronize(device)
    return steps * batch / (time.perf_counter() - started)


class OneImageAtATime(Dataset):
    """A typical map-style Dataset: crop (padding 4) and flip each image on the CPU."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = F.pad(self.images[index], (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        image = image[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, self.labels[index]


def dataloader_loop(
    device: torch.device, *, bf16: bool, batch: int, steps: int, warmup: int, small: bool
) -> float:
    """Images/s of the DataLoader-based script (see the module docstring)."""
    bundle = (gpu_data.cifar_shaped_small if small else gpu_data.cifar_shaped)(None, 0)
    workers = 0 if small else min(4, os.cpu_count() or 1)
    loader = DataLoader(
        OneImageAtATime(bundle.train.inputs, bundle.train.targets),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    model, optimizer = _model_and_optimizer(device)
    model.train()
    done, started = 0, 0.0
    while done < warmup + steps:
        for inputs, targets in loader:
            if done == warmup:
                _synchronize(device)
                started = time.perf_counter()
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            _training_step(model, optimizer, inputs, targets, bf16)
            done += 1
            if done == warmup + steps:
                break
    _synchronize(device)
    return steps * batch / (time.perf_counter() - started)
