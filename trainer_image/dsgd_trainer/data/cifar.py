"""CIFAR-10 and CIFAR-100 from the "python version" pickle batches.

CIFAR-10: `data_batch_1` … `data_batch_5` and `test_batch` (dicts with `data`,
uint8 N×3072 in channel-major order, and `labels`), in `cifar-10-batches-py`.
CIFAR-100: `train` and `test` (with `fine_labels`: the 100 fine classes are
used; `meta` and the coarse labels are not needed), in `cifar-100-python`.
The directory may be that folder itself or contain it; see
`dsgd_trainer.data.locations` for the search order.

The batches are pickles, as the dataset is distributed: only load files you
trust (unpickling runs code).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsgd_trainer.data.augment import CropAndFlip
from dsgd_trainer.data.bundle import DataBundle, DataLoadError, TensorDataset
from dsgd_trainer.data.locations import find_dir
from dsgd_trainer.data.normalisation import channel_statistics, normalise_pixels

IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    labels_key: str
    num_classes: int


LAYOUTS = {
    "cifar10": CifarLayout(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "labels",
        10,
    ),
    "cifar100": CifarLayout("cifar-100-python", ("train",), ("test",), "fine_labels", 100),
}


def load_cifar(name: str, path: str | None) -> DataBundle:
    """Dataset `name` ("cifar10" or "cifar100"), normalised, on the CPU, with crop+flip."""
    layout = LAYOUTS[name]
    files = (*layout.train_files, *layout.test_files)
    directory = find_dir(
        name,
        path,
        lambda candidate: all((candidate / file).is_file() for file in files),
        expected=", ".join(files),
        subdirs=(layout.folder,),
    )
    train = read_batches(name, [directory / file for file in layout.train_files], layout)
    test = read_batches(name, [directory / file for file in layout.test_files], layout)
    mean, std = channel_statistics(name)
    # Pad with black (pixel value 0 before normalisation), as torchvision's
    # RandomCrop(32, padding=4) does on raw images.
    fill = (0.0 - mean) / std
    return DataBundle(
        train,
        test,
        layout.num_classes,
        IMAGE_SHAPE,
        augment=CropAndFlip(padding=4, fill=fill),
    )


def read_batches(name: str, paths: list[Path], layout: CifarLayout) -> TensorDataset:
    images, labels = zip(*(read_batch(path, layout) for path in paths), strict=True)
    pixels = np.concatenate(images).reshape(-1, *IMAGE_SHAPE)
    targets = torch.from_numpy(np.concatenate(labels))
    return TensorDataset(normalise_pixels(pixels, name), targets)


def read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×3072 pixels, int64 N labels) of one pickle batch, validated."""
    try:
        with path.open("rb") as file:
            # The batches were pickled by Python 2: keys and strings come back as bytes.
            batch = pickle.load(file, encoding="bytes")
    except Exception as error:  # unpickling a corrupt file can raise almost anything
        raise DataLoadError(
            f"{path} is not a readable CIFAR pickle batch: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(batch, dict):
        raise DataLoadError(f"{path}: expected a dict, got {type(batch).__name__}")
    data, labels = field(batch, "data", path), field(batch, layout.labels_key, path)
    pixels = np.asarray(data)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != np.prod(IMAGE_SHAPE):
        raise DataLoadError(
            f"{path}: 'data' must be uint8 of shape N×3072, got {pixels.dtype} {pixels.shape}"
        )
    targets = np.asarray(labels, dtype=np.int64)
    if targets.shape != (len(pixels),):
        raise DataLoadError(
            f"{path}: {len(pixels)} images but {layout.labels_key!r} has shape {targets.shape}"
        )
    if len(targets) and not 0 <= targets.min() <= targets.max() < layout.num_classes:
        raise DataLoadError(
            f"{path}: {layout.labels_key!r} must lie in 0..{layout.num_classes - 1}, "
            f"got {targets.min()}..{targets.max()}"
        )
    return pixels, targets


def field(batch: dict[Any, Any], key: str, path: Path) -> Any:
    """batch[key], whether the pickle stored keys as bytes (Python 2) or str."""
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise DataLoadError(f"{path}: no {key!r} entry (found {sorted(map(str, batch))})")
