"""The optimizer a run uses: SGD (momentum, Nesterov, weight decay), or LARS when asked.

The learning rate in the param groups is a placeholder: the training loop sets
it from `dsgd_trainer.schedule` before every step.
"""

from __future__ import annotations

import torch
from dsgd_contract.config import Optimizer as OptimizerConfig
from torch import nn

from dsgd_trainer.lars import LARS
from dsgd_trainer.sign_sgd import SignSGD

#: Modules whose parameters are normalisation scales and shifts (excluded from LARS).
NORMALIZATION_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def build_optimizer(
    model: nn.Module, config: OptimizerConfig, *, sign_steps: bool = False
) -> torch.optim.Optimizer:
    """SGD over `model`'s parameters, or LARS with biases and norm parameters excluded.

    Weight decay (SGD and sign steps): not on normalisation parameters unless
    `weightDecayOnNormalization` (Goyal et al. 2017 §5.1; Lin et al.'s code
    leaves BatchNorm undecayed), not on biases if `weightDecayOnBiases` is off.
    With LARS, biases and normalisation parameters use the global lr and no
    weight decay (You et al.): their norms say nothing about a layer's scale.

    `sign_steps` (compression `sign`, dsgd_contract.config.Algorithm.local_sign_steps):
    SGD's direction applied as lr · sign(direction) (dsgd_trainer.sign_sgd);
    the config refuses it together with LARS.
    """
    if config.lars:
        if sign_steps:
            raise ValueError("sign steps and LARS exclude each other (optimizer.lars)")
        layers, excluded = split_lars_parameters(model)
        lars_groups = [
            {"params": layers},
            {"params": excluded, "lars": False, "weight_decay": 0.0},
        ]
        return LARS(
            [group for group in lars_groups if group["params"]],
            lr=config.learning_rate,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
            trust=config.lars_trust,
        )
    decayed, undecayed = split_weight_decay(model, config)
    groups = [
        group
        for group in ({"params": decayed}, {"params": undecayed, "weight_decay": 0.0})
        if group["params"]
    ]
    optimizer_class = SignSGD if sign_steps else torch.optim.SGD
    return optimizer_class(
        groups,
        lr=config.learning_rate,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def split_weight_decay(
    model: nn.Module, config: OptimizerConfig
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters with weight decay, parameters without), in model order (see build_optimizer)."""
    undecayed_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, NORMALIZATION_LAYERS):
                if not config.weight_decay_on_normalization:
                    undecayed_ids.add(id(param))
            elif name == "bias" and not config.weight_decay_on_biases:
                undecayed_ids.add(id(param))
    decayed, undecayed = [], []
    for param in model.parameters():
        (undecayed if id(param) in undecayed_ids else decayed).append(param)
    return decayed, undecayed


def split_lars_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters LARS scales, biases and normalisation parameters), in model order.

    A parameter is excluded when it belongs to a normalisation layer, is named
    `bias`, or is a vector (ndim ≤ 1: what biases and norm affine parameters of
    custom modules look like).
    """
    excluded_ids: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, NORMALIZATION_LAYERS) or name == "bias" or param.ndim <= 1:
                excluded_ids.add(id(param))
    layers, excluded = [], []
    for param in model.parameters():
        (excluded if id(param) in excluded_ids else layers).append(param)
    return layers, excluded
