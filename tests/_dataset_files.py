"""Writers of small dataset files in the real on-disk formats, for tests.

IDX (MNIST-like) and CIFAR python pickle batches, written the way the
original distributions are, so the loaders are tested against the format and
not against themselves. Any test (data, end-to-end) may use them.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

#: numpy dtype kind/size → IDX type code.
IDX_CODES = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of `array` (uint8, or big-endian int16/int32/float32/float64)."""
    key = array.dtype.str.lstrip("|")
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[key], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gzipped: bool) -> Path:
    """Write `array` as IDX to `path` (+ ".gz" when gzipped); returns the file written."""
    content = idx_bytes(array)
    if gzipped:
        path = path.with_name(path.name + ".gz")
        content = gzip.compress(content)
    path.write_bytes(content)
    return path


def write_mnist_like(
    directory: Path, train: int, test: int, gzipped: bool, seed: int = 0, side: int = 28
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random uint8 images and labels 0..9 under MNIST's file names; returns split → (x, y)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
        images = rng.integers(0, 256, (count, side, side), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        write_idx(directory / f"{prefix}-images-idx3-ubyte", images, gzipped)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels, gzipped)
        splits[split] = (images, labels)
    return splits


def cifar_batch(images: np.ndarray, labels: np.ndarray, labels_key: str) -> dict[bytes, object]:
    """A batch dict as the Python-2 pickles hold it: bytes keys, data uint8 N×3072."""
    return {
        b"batch_label": b"testing batch",
        labels_key.encode(): [int(label) for label in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [f"image_{i}.png".encode() for i in range(len(images))],
    }


def write_cifar(
    directory: Path, num_classes: int, per_file: int, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cifar-10-batches-py (num_classes 10) or cifar-100-python (100) inside `directory`.

    Returns split → (uint8 N×3×32×32 images, labels) in file order.
    """
    rng = np.random.default_rng(seed)
    if num_classes == 10:
        folder = directory / "cifar-10-batches-py"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        labels_key, meta = "labels", ("batches.meta", {b"label_names": [b"c"] * 10})
    else:
        folder = directory / "cifar-100-python"
        files = {"train": ["train"], "test": ["test"]}
        labels_key, meta = "fine_labels", ("meta", {b"fine_label_names": [b"c"] * 100})
    folder.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, names in files.items():
        all_images, all_labels = [], []
        for name in names:
            images = rng.integers(0, 256, (per_file, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, num_classes, per_file)
            batch = cifar_batch(images, labels, labels_key)
            if num_classes == 100:
                batch[b"coarse_labels"] = [int(label) // 5 for label in labels]
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
            all_images.append(images)
            all_labels.append(labels)
        splits[split] = (np.concatenate(all_images), np.concatenate(all_labels))
    (folder / meta[0]).write_bytes(pickle.dumps(meta[1], protocol=2))
    return splits
