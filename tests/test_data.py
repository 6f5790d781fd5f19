"""Dataset loading: real formats written by the tests, the real Fashion-MNIST, errors that help."""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dsgd_contract.config import Dataset
from dsgd_trainer.data import DataBundle, DataLoadError, TensorDataset, load_data
from dsgd_trainer.data.idx import read_idx
from dsgd_trainer.data.locations import default_roots
from dsgd_trainer.data.normalisation import STATISTICS
from sklearn.linear_model import LogisticRegression

from tests._dataset_files import idx_bytes, write_cifar, write_idx, write_mnist_like

CPU = torch.device("cpu")
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def load(name: str, seed: int = 0, **fields) -> DataBundle:
    return load_data(Dataset(name=name, **fields), seed, CPU)


def normalised(pixels: np.ndarray, name: str, channel: int = 0) -> np.ndarray:
    mean, std = STATISTICS[name]
    return (pixels / 255.0 - mean[channel]) / std[channel]


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.dtype(">i4"), np.dtype(">f4")])
def test_idx_round_trips_arrays_gzipped_or_not(tmp_path: Path, gzipped: bool, dtype) -> None:
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4).astype(dtype)
    written = write_idx(tmp_path / "array-idx3", array, gzipped)
    read = read_idx(written)
    assert read.shape == (2, 3, 4) and np.array_equal(read, array)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (idx_bytes(np.zeros((4, 5, 5), np.uint8))[:-7], "truncated or corrupt"),
        (idx_bytes(np.zeros((4, 5, 5), np.uint8)) + b"extra", "truncated or corrupt"),
        (b"\x12\x34" + idx_bytes(np.zeros(3, np.uint8))[2:], "IDX magic number"),
        (b"\x00\x00\x42\x01" + bytes(8), "unknown IDX type code 0x42"),
        (b"", "IDX magic number"),
        (gzip.compress(b"\x00\x00\x08\x03" + bytes(100))[:-10], "not a valid gzip file"),
    ],
    ids=["short", "long", "magic", "type", "empty", "gzip"],
)
def test_corrupt_idx_file_is_a_data_error_naming_the_file(
    tmp_path: Path, content: bytes, complaint: str
) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataLoadError, match=complaint) as raised:
        read_idx(path)
    assert str(path) in str(raised.value)


# --- MNIST-like sets from files ------------------------------------------------------------------


@pytest.mark.parametrize("gzipped", [False, True])
def test_mnist_files_load_normalised_in_file_order(tmp_path: Path, gzipped: bool) -> None:
    written = write_mnist_like(tmp_path, train=30, test=12, gzipped=gzipped)
    bundle = load("mnist", path=str(tmp_path))
    assert bundle.input_shape == (1, 28, 28) and bundle.num_classes == 10
    assert bundle.augment is None
    for split, data in (("train", bundle.train), ("test", bundle.test)):
        images, labels = written[split]
        assert data.inputs.shape == (len(images), 1, 28, 28) and data.inputs.dtype == torch.float32
        assert data.targets.tolist() == labels.tolist()
        expected = normalised(images, "mnist")[:, None]
        np.testing.assert_allclose(data.inputs.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_corrupt_file_in_a_dataset_names_the_file(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, train=10, test=10, gzipped=True)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(9, np.uint8))))  # 9 labels for 10 images
    with pytest.raises(DataLoadError, match="expected 10 labels") as raised:
        load("fashion-mnist", path=str(tmp_path))
    assert str(labels) in str(raised.value)


def test_labels_outside_the_ten_classes_are_refused(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, train=10, test=10, gzipped=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(10, 10, np.uint8), gzipped=False)
    with pytest.raises(DataLoadError, match=r"labels must lie in 0\.\.9, got 10\.\.10"):
        load("mnist", path=str(tmp_path))


def test_incomplete_dataset_directory_lists_the_missing_files(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, train=10, test=10, gzipped=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataLoadError, match=r"incomplete: missing \['t10k-images-idx3-ubyte"):
        load("mnist", path=str(tmp_path))


def test_missing_dataset_at_a_given_path_names_where_it_looked(tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    with pytest.raises(DataLoadError) as raised:
        load("fashion-mnist", path=str(nowhere))
    message = str(raised.value)
    assert "'fashion-mnist' not found" in message and "train-images-idx3-ubyte[.gz]" in message
    assert f"- {nowhere}\n" in message and f"- {nowhere / 'FashionMNIST/raw'}" in message


def test_missing_dataset_lists_every_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    roots = default_roots("mnist")
    if any((root / "train-images-idx3-ubyte.gz").exists() for root in roots):
        pytest.skip("MNIST is installed in a default location on this machine")
    with pytest.raises(DataLoadError) as raised:
        load("mnist")
    message = str(raised.value)
    for expected in ("/usr/share/datasets/mnist", "/data/mnist", "/data\n", ".cache/dsgd/mnist"):
        assert expected in message
    assert "set training.dataset.path" in message


def test_default_locations_include_the_users_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if any((root / "train-images-idx3-ubyte.gz").exists() for root in default_roots("mnist")[:3]):
        pytest.skip("MNIST is installed in a system location that is searched first")
    write_mnist_like(tmp_path / ".cache" / "dsgd" / "mnist", train=10, test=10, gzipped=True)
    assert len(load("mnist").train) == 10


def test_torchvision_layout_is_found_under_the_path(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "FashionMNIST" / "raw", train=20, test=10, gzipped=False)
    bundle = load("fashion-mnist", path=str(tmp_path))
    assert (len(bundle.train), len(bundle.test)) == (20, 10)


# --- the real Fashion-MNIST (Debian's dataset-fashion-mnist) -------------------------------------


@pytest.fixture(scope="module")
def fashion_mnist() -> tuple[DataBundle, float]:
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"the Debian package dataset-fashion-mnist is not installed ({FASHION_MNIST})")
    started = time.perf_counter()
    bundle = load("fashion-mnist")
    return bundle, time.perf_counter() - started


def test_real_fashion_mnist_loads_whole_and_fast(fashion_mnist: tuple[DataBundle, float]) -> None:
    bundle, seconds = fashion_mnist
    assert bundle.train.inputs.shape == (60000, 1, 28, 28)
    assert bundle.test.inputs.shape == (10000, 1, 28, 28)
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 28, 28)
    assert torch.bincount(bundle.train.targets).tolist() == [6000] * 10
    assert torch.bincount(bundle.test.targets).tolist() == [1000] * 10
    assert seconds < 3.0, f"loading Fashion-MNIST took {seconds:.2f}s"


def test_real_fashion_mnist_is_normalised(fashion_mnist: tuple[DataBundle, float]) -> None:
    train = fashion_mnist[0].train.inputs
    assert abs(train.mean().item()) < 0.01 and abs(train.std().item() - 1) < 0.01
    # zero pixels (background) map to −mean/std
    mean, std = STATISTICS["fashion-mnist"]
    assert train.min().item() == pytest.approx(-mean[0] / std[0], abs=1e-5)


def test_sample_limits_take_a_seeded_class_balanced_subset() -> None:
    limits = {"trainSamples": 500, "testSamples": 100}
    first, again, other = (load("digits", seed, **limits) for seed in (0, 0, 1))
    assert (len(first.train), len(first.test)) == (500, 100)
    assert torch.bincount(first.train.targets).min() >= 35  # 50 per class if perfectly even
    assert torch.equal(first.train.inputs, again.train.inputs)
    assert torch.equal(first.test.targets, again.test.targets)
    assert not torch.equal(first.train.inputs, other.train.inputs)


def test_more_samples_than_the_split_holds_is_refused(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, train=10, test=10, gzipped=False)
    with pytest.raises(DataLoadError, match="trainSamples is 11, but the split has only 10"):
        load("mnist", path=str(tmp_path), trainSamples=11)


# --- digits, synthetic --------------------------------------------------------------------------


def test_digits_is_a_fixed_stratified_80_20_split() -> None:
    bundle, other_seed = load("digits"), load("digits", seed=5)
    assert bundle.train.inputs.shape == (1437, 1, 8, 8)
    assert bundle.test.inputs.shape == (360, 1, 8, 8)
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 8, 8)
    assert torch.equal(bundle.test.inputs, other_seed.test.inputs)  # same test set for every seed
    assert torch.bincount(bundle.test.targets).min() >= 35  # stratified: ~36 per class
    train = bundle.train.inputs
    assert abs(train.mean().item()) < 1e-4 and abs(train.std().item() - 1) < 1e-3


def test_synthetic_default_sizes_and_sample_limits() -> None:
    bundle = load("synthetic")
    assert (len(bundle.train), len(bundle.test)) == (2048, 512)
    assert bundle.num_classes == 10 and bundle.input_shape == (1, 8, 8)
    small = load("synthetic", trainSamples=300, testSamples=100)
    assert (len(small.train), len(small.test)) == (300, 100)
    assert torch.bincount(small.train.targets).tolist() == [30] * 10


def test_synthetic_is_deterministic_in_the_seed() -> None:
    first, again, other = load("synthetic", 3), load("synthetic", 3), load("synthetic", 4)
    assert torch.equal(first.train.inputs, again.train.inputs)
    assert torch.equal(first.test.targets, again.test.targets)
    assert not torch.equal(first.train.inputs, other.train.inputs)


def test_synthetic_is_learnable_but_not_trivial() -> None:
    bundle = load("synthetic", seed=0)

    def features(split: TensorDataset) -> np.ndarray:
        return split.inputs.flatten(1).numpy()

    model = LogisticRegression(max_iter=300).fit(features(bundle.train), bundle.train.targets)
    accuracy = model.score(features(bundle.test), bundle.test.targets)
    assert 0.6 < accuracy < 0.99  # chance is 0.1


# --- CIFAR --------------------------------------------------------------------------------------


@pytest.mark.parametrize("inside", [False, True], ids=["parent", "folder"])
def test_cifar10_pickles_load_in_channel_major_order(tmp_path: Path, inside: bool) -> None:
    written = write_cifar(tmp_path, num_classes=10, per_file=6)
    path = tmp_path / "cifar-10-batches-py" if inside else tmp_path
    bundle = load("cifar10", path=str(path))
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    assert bundle.train.inputs.shape == (30, 3, 32, 32)
    assert bundle.test.inputs.shape == (6, 3, 32, 32)
    images, labels = written["train"]
    assert bundle.train.targets.tolist() == labels.tolist()
    for channel in range(3):
        np.testing.assert_allclose(
            bundle.train.inputs[:, channel].numpy(),
            normalised(images[:, channel], "cifar10", channel),
            rtol=1e-5,
            atol=1e-5,
        )


def test_cifar100_uses_the_fine_labels(tmp_path: Path) -> None:
    written = write_cifar(tmp_path, num_classes=100, per_file=20)
    bundle = load("cifar100", path=str(tmp_path))
    assert bundle.num_classes == 100
    assert bundle.test.targets.tolist() == written["test"][1].tolist()


def test_cifar_augmentation_pads_with_black(tmp_path: Path) -> None:
    write_cifar(tmp_path, num_classes=10, per_file=4)
    bundle = load("cifar10", path=str(tmp_path))
    assert bundle.augment is not None
    batch = bundle.train.inputs[:8]
    out = bundle.augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape
    # Some image is shifted, so some border pixels are the normalised value of black.
    mean, std = STATISTICS["cifar10"]
    black = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
    assert ((out - black).abs() < 1e-6).all(dim=1).any()


def test_corrupt_cifar_batch_names_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path, num_classes=10, per_file=4)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    broken.write_bytes(broken.read_bytes()[:50])
    with pytest.raises(DataLoadError, match="not a readable CIFAR pickle batch") as raised:
        load("cifar10", path=str(tmp_path))
    assert str(broken) in str(raised.value)


def test_missing_cifar_lists_the_expected_files_and_places(tmp_path: Path) -> None:
    with pytest.raises(DataLoadError, match=r"data_batch_1, .*test_batch in") as raised:
        load("cifar10", path=str(tmp_path))
    assert str(tmp_path / "cifar-10-batches-py") in str(raised.value)


# --- plug-in datasets ---------------------------------------------------------------------------

PLUGIN_MODULE = """
import torch
from dsgd_trainer.data import DataBundle, TensorDataset


def pairs(path=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    train = (torch.randn(40, 6, generator=g), torch.arange(40) % 3)
    test = (torch.randn(10, 6, generator=g), torch.arange(10) % 3)
    return train, test


def bundle(path, seed):
    x = torch.full((8, 2, 4, 4), float(len(path)))
    split = TensorDataset(x, torch.arange(8) % 4)
    return DataBundle(split, split, num_classes=5, input_shape=(2, 4, 4))


def broken(path, seed):
    raise RuntimeError("no data today")


def wrong(path, seed):
    return "data"


def integer_inputs(path, seed):
    test = (torch.zeros(4, 3), torch.zeros(4))
    return (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4)), test
"""


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "dsgd_test_dataset_plugin.py").write_text(PLUGIN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dsgd_test_dataset_plugin", raising=False)
    return "dsgd_test_dataset_plugin"


def test_plugin_returning_tensor_pairs_gets_classes_and_shape_inferred(plugin_module: str) -> None:
    bundle = load(f"{plugin_module}:pairs", seed=1, trainSamples=30)
    assert bundle.num_classes == 3 and bundle.input_shape == (6,)
    assert (len(bundle.train), len(bundle.test)) == (30, 10)
    assert bundle.train.targets.dtype == torch.int64 and bundle.augment is None


def test_plugin_returning_a_bundle_gets_path_and_seed(plugin_module: str) -> None:
    bundle = load(f"{plugin_module}:bundle", path="/abc")
    assert bundle.num_classes == 5 and bundle.input_shape == (2, 4, 4)
    assert bundle.train.inputs[0, 0, 0, 0].item() == 4.0  # len("/abc"): the path was passed


@pytest.mark.parametrize(
    ("function", "complaint"),
    [
        ("missing", "has no attribute 'missing'"),
        ("broken", "raised RuntimeError: no data today"),
        ("wrong", "returned a str; expected a DataBundle"),
        ("integer_inputs", "expected float inputs and integer targets"),
    ],
)
def test_bad_plugin_dataset_is_a_data_error_naming_it(
    plugin_module: str, function: str, complaint: str
) -> None:
    reference = f"{plugin_module}:{function}"
    with pytest.raises(DataLoadError, match=complaint) as raised:
        load(reference)
    assert repr(reference) in str(raised.value)


def test_plugin_dataset_in_a_module_that_is_not_installed_names_it() -> None:
    with pytest.raises(DataLoadError, match="cannot import module 'no_such_dsgd_module'"):
        load("no_such_dsgd_module:data")
