"""MNIST and Fashion-MNIST from their IDX files.

A directory holds the dataset when it contains `train-images-idx3-ubyte`,
`train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`,
each either plain or gzipped (`.gz`). Directories are searched as
`dsgd_trainer.data.locations` describes, plus torchvision's layout
(`MNIST/raw`, `FashionMNIST/raw`) inside each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dsgd_trainer.data.bundle import DataBundle, DataLoadError, TensorDataset
from dsgd_trainer.data.idx import read_idx
from dsgd_trainer.data.locations import find_dir
from dsgd_trainer.data.normalisation import normalise_pixels

NUM_CLASSES = 10
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
TORCHVISION_DIRS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw"}


def existing(directory: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz` in `directory`, whichever exists (plain first)."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist_like(name: str, path: str | None) -> DataBundle:
    """Dataset `name` ("mnist" or "fashion-mnist"), normalised, on the CPU."""
    directory = find_dir(
        name,
        path,
        lambda candidate: existing(candidate, FILES["train"][0]) is not None,
        expected=f"{FILES['train'][0]}[.gz]",
        subdirs=(TORCHVISION_DIRS[name],),
    )
    missing = [
        f"{stem}[.gz]"
        for stems in FILES.values()
        for stem in stems
        if existing(directory, stem) is None
    ]
    if missing:
        raise DataLoadError(f"dataset {name!r} in {directory} is incomplete: missing {missing}")
    train, test = (read_split(name, directory, *FILES[split]) for split in ("train", "test"))
    return DataBundle(train, test, NUM_CLASSES, tuple(train.inputs.shape[1:]))


def read_split(name: str, directory: Path, images_stem: str, labels_stem: str) -> TensorDataset:
    images_path, labels_path = existing(directory, images_stem), existing(directory, labels_stem)
    assert images_path is not None and labels_path is not None  # checked by the caller
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataLoadError(
            f"{images_path}: expected uint8 images of shape N×H×W, "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataLoadError(
            f"{labels_path}: expected {len(images)} labels to match {images_path}, "
            f"got shape {labels.shape}"
        )
    targets = torch.from_numpy(labels.astype(np.int64))
    if len(targets) and not 0 <= int(targets.min()) <= int(targets.max()) < NUM_CLASSES:
        raise DataLoadError(
            f"{labels_path}: labels must lie in 0..{NUM_CLASSES - 1}, got "
            f"{int(targets.min())}..{int(targets.max())}"
        )
    return TensorDataset(normalise_pixels(images[:, None], name), targets)
