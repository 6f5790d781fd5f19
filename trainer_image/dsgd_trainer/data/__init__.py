"""The trainer's data: whole datasets as tensors on the device, and each rank's batches.

    bundle = load_data(config.training.dataset, seed, device)
    sampler = EpochSampler(len(bundle.train), seed, rank, world_size, batch_size)
    for indices in sampler.batches(epoch):
        inputs, targets = bundle.train.inputs[indices], bundle.train.targets[indices]
        if bundle.augment:
            inputs = bundle.augment(inputs, generator)

Built-in datasets (one module each): `synthetic`, `digits`, `mnist`,
`fashion-mnist`, `cifar10`, `cifar100`; plug-ins `package.module:function`
follow the contract in `dsgd_trainer.data.plugin`. Where files are searched:
`dsgd_trainer.data.locations`. How samples are split across ranks:
`dsgd_trainer.data.partition`.
"""

from dsgd_trainer.data.bundle import Augment, DataBundle, DataLoadError, TensorDataset
from dsgd_trainer.data.loading import load_data
from dsgd_trainer.data.partition import EpochSampler, epoch_permutation, rank_batches

__all__ = [
    "Augment",
    "DataBundle",
    "DataLoadError",
    "EpochSampler",
    "TensorDataset",
    "epoch_permutation",
    "load_data",
    "rank_batches",
]
