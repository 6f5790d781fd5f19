"""scikit-learn's handwritten digits (UCI optdigits): 1797 1×8×8 images, 10 classes.

Bundled with scikit-learn, so it needs no download. The split is a fixed,
stratified 80/20 (random_state 0, independent of the run's seed, so runs with
different seeds are scored on the same test set). Pixels (0..16) are scaled to
[0, 1] and standardised with the training split's mean and std.
"""

from __future__ import annotations

import torch

from dsgd_trainer.data.bundle import DataBundle, TensorDataset

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)
SPLIT_SEED = 0
TEST_FRACTION = 0.2


def load_sklearn_digits() -> DataBundle:
    """The digits set, split and normalised, on the CPU."""
    # Imported here: scikit-learn costs every worker ~2 s of start-up, and only
    # this dataset needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        digits.images / 16.0,
        digits.target,
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    mean, std = train_x.mean(), train_x.std()

    def split(images, labels) -> TensorDataset:
        inputs = torch.tensor((images - mean) / std, dtype=torch.float32).view(-1, *IMAGE_SHAPE)
        return TensorDataset(inputs, torch.tensor(labels, dtype=torch.int64))

    return DataBundle(split(train_x, train_y), split(test_x, test_y), NUM_CLASSES, IMAGE_SHAPE)
