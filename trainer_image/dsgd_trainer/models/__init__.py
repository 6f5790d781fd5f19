"""The trainer's models: a registry of built-ins, plus `package.module:function` plug-ins.

`build_model(name, input_shape, num_classes)` is the only entry point. Built-ins:
`resnet20` (He et al. 2016, CIFAR variant, option-A shortcuts), `cnn` (small,
fast on CPU), `mlp` (flattens any input). Plug-ins are called as
`fn(input_shape=(C, H, W) or (D,), num_classes=K)` and must return a
`torch.nn.Module` mapping a float32 N×`input_shape` batch to N×K logits.

Initialisation draws from torch's global generator: seed it with the run's
seed before building, and every rank builds the same replica.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dsgd_trainer.models.cnn import cnn
from dsgd_trainer.models.mlp import mlp
from dsgd_trainer.models.resnet import resnet20, zero_init_residual_
from dsgd_trainer.plugins import PluginError, is_plugin_reference, resolve_plugin

ModelFactory = Callable[[tuple[int, ...], int], nn.Module]

#: name → (factory, the smallest image side it takes; None: any input shape, flat included).
MODELS: dict[str, tuple[ModelFactory, int | None]] = {
    "resnet20": (resnet20, 1),
    "cnn": (cnn, 4),  # two 2×2 max-pools must leave at least one pixel
    "mlp": (mlp, None),
}


class ModelError(Exception):
    """An unknown model, a bad plug-in or an input it cannot take. Exit code 64 (invalid config)."""


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, *, zero_init_residual: bool = False
) -> nn.Module:
    """A fresh model `name` for samples of `input_shape` and `num_classes` classes.

    `zero_init_residual`: γ = 0 in each residual block's last BatchNorm
    (resnet.zero_init_residual_); a model without such blocks is a ModelError.

    Raises `ModelError` naming the model (or plug-in reference) when it is
    unknown, does not resolve, fails, returns something other than an
    nn.Module, or cannot take `input_shape`.
    """
    input_shape = tuple(input_shape)
    if name in MODELS:
        factory, min_side = MODELS[name]
        if min_side is not None and not (
            len(input_shape) == 3 and min(input_shape[1:]) >= min_side
        ):
            raise ModelError(
                f"model {name!r} needs C×H×W image inputs with H, W ≥ {min_side}, but the "
                f"dataset's samples have shape {input_shape}; use mlp for flat features"
            )
        model = factory(input_shape, num_classes)
        if zero_init_residual and zero_init_residual_(model) == 0:
            raise ModelError(f"model {name!r} has no residual blocks for zero-γ initialisation")
        return model
    if zero_init_residual:
        raise ModelError(
            f"zero-γ initialisation applies to the built-in residual models, not {name!r}"
        )
    if not is_plugin_reference(name):
        raise ModelError(
            f"unknown model {name!r}; use one of {', '.join(MODELS)} "
            "or a package.module:function plug-in"
        )
    return build_plugin_model(name, input_shape, num_classes)


def build_plugin_model(reference: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    try:
        factory = resolve_plugin(reference, "model")
    except PluginError as error:
        raise ModelError(str(error)) from error
    try:
        model = factory(input_shape=input_shape, num_classes=num_classes)
    except Exception as error:  # user code: report any failure against the reference
        raise ModelError(
            f"model plug-in {reference!r} failed when called as "
            f"{reference.split(':')[1]}(input_shape={input_shape}, num_classes={num_classes}): "
            f"{type(error).__name__}: {error}"
        ) from error
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model plug-in {reference!r} returned a {type(model).__name__}, not a torch.nn.Module"
        )
    return model


__all__ = ["MODELS", "ModelError", "build_model", "cnn", "mlp", "resnet20"]
