"""ResNet-20 as He et al. 2016 ("Deep Residual Learning", §4.2) built it for CIFAR.

A 3×3 convolution with 16 filters, then 3 stages of n = 3 basic blocks
(two 3×3 convolutions with BatchNorm and ReLU) with 16, 32 and 64 filters, the
2nd and 3rd stage starting with stride 2; global average pooling and a fully
connected layer: 6n + 2 = 20 weighted layers, 0.27M parameters for 3×32×32
inputs and 10 classes.

Shortcuts are the paper's option A, used for its CIFAR experiments: identity,
and where the shape changes, the input subsampled by 2 and zero-padded with
the missing channels (no parameters). Works for any C×H×W input with H, W ≥ 4
(28×28 MNIST → 7×7 in the last stage, 8×8 digits → 2×2) thanks to adaptive
average pooling. Initialisation: He (Kaiming) normal for convolutions and the
classifier, BatchNorm at weight 1 and bias 0; it draws from torch's global
generator, so seed it (torch.manual_seed) for identical replicas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STAGE_WIDTHS = (16, 32, 64)
BLOCKS_PER_STAGE = 3


class ZeroPadShortcut(nn.Module):
    """Option A: subsample spatially by `stride`, zero-pad channels up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # Pad the channel dimension symmetrically, as the reference implementations do.
        before = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut: nn.Module = (
            ZeroPadShortcut(in_channels, out_channels, stride) if changes_shape else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet family (6n + 2 layers); `resnet20` builds n = 3."""

    def __init__(self, in_channels: int, num_classes: int, blocks_per_stage: int) -> None:
        super().__init__()
        width = STAGE_WIDTHS[0]
        self.conv = nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        stages = []
        for index, stage_width in enumerate(STAGE_WIDTHS):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(width, stage_width, stride))
                width = stage_width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = self.stages(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet20(input_shape: tuple[int, ...], num_classes: int) -> ResNet:
    """ResNet-20 for C×H×W inputs."""
    return ResNet(input_shape[0], num_classes, BLOCKS_PER_STAGE)


def zero_init_residual_(model: nn.Module) -> int:
    """Set γ = 0 in the last BatchNorm of every residual block; returns how many.

    Each block then starts as the identity map, which eases the first steps
    at a large learning rate (Goyal et al. 2017 §5.1; torchvision's
    `zero_init_residual`).
    """
    blocks = [module for module in model.modules() if isinstance(module, BasicBlock)]
    with torch.no_grad():
        for block in blocks:
            block.bn2.weight.zero_()
    return len(blocks)
