"""`load_data`: from the config's dataset section to tensors on the training device."""

from __future__ import annotations

import torch
from dsgd_contract.config import Dataset

from dsgd_trainer.data.bundle import DataBundle, first_after_permutation
from dsgd_trainer.data.cifar import load_cifar
from dsgd_trainer.data.digits import load_sklearn_digits
from dsgd_trainer.data.mnist import load_mnist_like
from dsgd_trainer.data.plugin import load_plugin_dataset
from dsgd_trainer.data.synthetic import make_synthetic


def load_data(dataset: Dataset, seed: int, device: torch.device) -> DataBundle:
    """The dataset `dataset` names, normalised, limited to train/testSamples, on `device`.

    `seed` is the run's shared seed: it generates `synthetic`, picks the
    trainSamples/testSamples subsets (the first N after a permutation seeded
    with it, identical on every rank) and is passed to plug-ins. Raises
    `DataLoadError` (exit code 65) when files are missing or malformed, the
    message naming every place searched or the offending file.
    """
    name = dataset.name
    if name == "synthetic":
        # Generated at exactly the requested sizes: nothing to subset.
        return make_synthetic(seed, dataset.train_samples, dataset.test_samples).to(device)
    if name == "digits":
        bundle = load_sklearn_digits()
    elif name in ("mnist", "fashion-mnist"):
        bundle = load_mnist_like(name, dataset.path)
    elif name in ("cifar10", "cifar100"):
        bundle = load_cifar(name, dataset.path)
    else:  # the config only admits built-in names and package.module:function references
        bundle = load_plugin_dataset(name, dataset.path, seed)
    train = first_after_permutation(
        bundle.train, dataset.train_samples, seed, "training.dataset.trainSamples"
    )
    test = first_after_permutation(
        bundle.test, dataset.test_samples, seed, "training.dataset.testSamples"
    )
    return DataBundle(train, test, bundle.num_classes, bundle.input_shape, bundle.augment).to(
        device
    )
