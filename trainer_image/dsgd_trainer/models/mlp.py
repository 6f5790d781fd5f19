"""A multilayer perceptron: flat features, or images flattened.

Two hidden layers of 256 ReLU units. The first layer flattens whatever
per-sample shape it gets, so the same model serves (D,) and (C, H, W) inputs.
"""

from __future__ import annotations

import math

from torch import nn

HIDDEN = (256, 256)


def mlp(input_shape: tuple[int, ...], num_classes: int) -> nn.Sequential:
    """The MLP for inputs of `input_shape` (any rank)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in HIDDEN:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
