"""Plug-in datasets: `training.dataset.name: package.module:function`.

The contract. The function is called with keyword arguments

    fn(path=<training.dataset.path or None>, seed=<training.seed>)

on every rank, and must be deterministic in them (every rank must see the same
data). It returns either

- a `dsgd_trainer.data.DataBundle` (full control: num_classes, input_shape,
  a batched augmentation), or
- a pair `(train, test)`, each a pair `(inputs, targets)` of tensors (or a
  `dsgd_trainer.data.TensorDataset`): inputs float (N×C×H×W images or N×D
  features), already normalised; targets integer class indices 0..C−1 (N).
  num_classes is then 1 + the largest target of both splits, input_shape the
  inputs' per-sample shape, and there is no augmentation.

Tensors may be on any device; the trainer moves them. training.dataset's
trainSamples/testSamples apply afterwards, as for built-in sets. Problems
(unresolvable reference, an exception inside the function, a wrong return
value) raise `DataLoadError` naming the reference.
"""

from __future__ import annotations

from typing import Any

import torch

from dsgd_trainer.data.bundle import DataBundle, DataLoadError, TensorDataset
from dsgd_trainer.plugins import PluginError, resolve_plugin


def load_plugin_dataset(reference: str, path: str | None, seed: int) -> DataBundle:
    """Call the plug-in `reference` and check what it returns (see the module docstring)."""
    try:
        function = resolve_plugin(reference, "dataset")
    except PluginError as error:
        raise DataLoadError(str(error)) from error
    try:
        result = function(path=path, seed=seed)
    except DataLoadError:
        raise
    except Exception as error:  # user code: report any failure against the reference
        raise DataLoadError(
            f"dataset plug-in {reference!r} raised {type(error).__name__}: {error}"
        ) from error
    try:
        return as_bundle(result)
    except (TypeError, ValueError) as error:
        raise DataLoadError(f"dataset plug-in {reference!r} returned {error}") from error


def as_bundle(result: Any) -> DataBundle:
    if isinstance(result, DataBundle):
        return result
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise TypeError(f"a {type(result).__name__}; expected a DataBundle or a (train, test) pair")
    train, test = (
        as_split(split, name) for split, name in zip(result, ("train", "test"), strict=True)
    )
    if not len(train) or not len(test):
        raise ValueError(f"an empty split ({len(train)} train, {len(test)} test samples)")
    targets = torch.cat([train.targets.cpu(), test.targets.cpu()])
    if int(targets.min()) < 0:
        raise ValueError("negative targets; classes must be numbered 0..C−1")
    return DataBundle(train, test, int(targets.max()) + 1, tuple(train.inputs.shape[1:]))


def as_split(split: Any, name: str) -> TensorDataset:
    if isinstance(split, TensorDataset):
        return split
    if not (isinstance(split, tuple | list) and len(split) == 2):
        raise TypeError(f"a {name} split that is not an (inputs, targets) pair")
    inputs, targets = split
    if not (isinstance(inputs, torch.Tensor) and isinstance(targets, torch.Tensor)):
        raise TypeError(f"{name} (inputs, targets) that are not both tensors")
    if not inputs.is_floating_point() or targets.is_floating_point() or targets.is_complex():
        raise TypeError(
            f"{name} inputs of dtype {inputs.dtype} and targets of dtype {targets.dtype}; "
            "expected float inputs and integer targets"
        )
    return TensorDataset(inputs.to(torch.float32), targets.to(torch.int64))
