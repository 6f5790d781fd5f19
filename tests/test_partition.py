"""Each rank's share of the training set: disjoint, covering, agreed without communication."""

from __future__ import annotations

import pytest
import torch
from dsgd_trainer.data import DataLoadError, EpochSampler, epoch_permutation, rank_batches

WORLD_SIZES = (1, 2, 3, 4, 8)


def all_ranks(num_samples: int, epoch: int, seed: int, world_size: int, batch_size: int):
    return [
        rank_batches(num_samples, epoch, seed, rank, world_size, batch_size)
        for rank in range(world_size)
    ]


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_ranks_get_disjoint_equal_batches_that_cover_all_but_the_remainder(world_size: int) -> None:
    num_samples, batch_size = 1000, 7
    steps = num_samples // (world_size * batch_size)
    per_rank = all_ranks(num_samples, epoch=3, seed=11, world_size=world_size, batch_size=7)

    assert [len(batches) for batches in per_rank] == [steps] * world_size
    for batches in per_rank:
        assert all(batch.shape == (batch_size,) and batch.dtype == torch.int64 for batch in batches)
    used = torch.cat([torch.cat(batches) for batches in per_rank])
    assert len(used) == len(set(used.tolist())) == steps * world_size * batch_size
    assert int(used.min()) >= 0 and int(used.max()) < num_samples
    assert num_samples - len(used) < world_size * batch_size  # only the remainder is dropped


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_ranks_cover_everything_when_the_global_batch_divides_the_set(world_size: int) -> None:
    batch_size = 5
    num_samples = world_size * batch_size * 6
    per_rank = all_ranks(num_samples, epoch=0, seed=0, world_size=world_size, batch_size=5)
    used = torch.cat([torch.cat(batches) for batches in per_rank])
    assert sorted(used.tolist()) == list(range(num_samples))


@pytest.mark.parametrize("world_size", WORLD_SIZES)
def test_global_batch_at_each_step_is_the_same_whatever_the_world_size(world_size: int) -> None:
    # K ranks with batch B see, step by step, the global batches of one process with batch K·B.
    num_samples, batch_size = 960, 4
    per_rank = all_ranks(num_samples, epoch=2, seed=5, world_size=world_size, batch_size=4)
    single = rank_batches(num_samples, 2, 5, rank=0, world_size=1, batch_size=world_size * 4)
    permutation = epoch_permutation(num_samples, epoch=2, seed=5)
    for step, global_batch in enumerate(single):
        union = torch.cat([batches[step] for batches in per_rank])
        assert sorted(union.tolist()) == sorted(global_batch.tolist())
        span = world_size * batch_size
        assert global_batch.tolist() == permutation[step * span : (step + 1) * span].tolist()


def test_every_rank_computes_the_same_partition_whatever_its_global_random_state() -> None:
    torch.manual_seed(1)
    first = all_ranks(500, epoch=4, seed=9, world_size=4, batch_size=8)
    torch.manual_seed(2)
    torch.rand(100)  # a rank that consumed random numbers elsewhere must still agree
    second = all_ranks(500, epoch=4, seed=9, world_size=4, batch_size=8)
    for mine, theirs in zip(first, second, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))


def test_partition_is_reshuffled_every_epoch_and_depends_on_the_seed() -> None:
    def order(epoch: int, seed: int) -> list[int]:
        return torch.cat(
            rank_batches(512, epoch, seed, rank=1, world_size=2, batch_size=16)
        ).tolist()

    epochs = [order(epoch, seed=0) for epoch in range(4)]
    assert all(a != b for i, a in enumerate(epochs) for b in epochs[i + 1 :])
    # not just reordered: rank 1 holds a different subset of samples in each epoch
    assert set(epochs[0]) != set(epochs[1])
    assert order(0, seed=1) != epochs[0]


def test_dropped_remainder_changes_from_epoch_to_epoch() -> None:
    sampler = EpochSampler(num_samples=103, seed=0, rank=0, world_size=2, batch_size=10)
    dropped = []
    for epoch in range(3):
        kept = set(torch.cat(sampler.batches(epoch)).tolist())
        kept |= set(torch.cat(rank_batches(103, epoch, 0, 1, 2, 10)).tolist())
        dropped.append(set(range(103)) - kept)
    assert [len(d) for d in dropped] == [3, 3, 3]
    assert dropped[0] != dropped[1] != dropped[2]


def test_sampler_length_is_the_steps_per_epoch() -> None:
    assert len(EpochSampler(60000, 0, 0, 8, 128)) == 60000 // (8 * 128)


def test_dataset_smaller_than_one_global_batch_is_a_data_error_naming_the_sizes() -> None:
    with pytest.raises(DataLoadError, match=r"100 samples.*global batch of 128.*world size 4"):
        EpochSampler(num_samples=100, seed=0, rank=0, world_size=4, batch_size=32)


def test_rank_outside_the_world_is_refused() -> None:
    with pytest.raises(ValueError, match="rank 4 is not in a world of size 4"):
        rank_batches(100, 0, 0, rank=4, world_size=4, batch_size=2)


def test_seeds_do_not_share_data_orders() -> None:
    """Replicates are independent: seed s at epoch e is not seed s + 1 at epoch e − 1."""
    for seed, epoch in [(2, 1), (1, 5), (7, 3)]:
        here = epoch_permutation(1000, epoch=epoch, seed=seed)
        assert not torch.equal(here, epoch_permutation(1000, epoch=epoch - 1, seed=seed + 1))
        assert not torch.equal(here, epoch_permutation(1000, epoch=epoch + 1, seed=seed - 1))
        assert torch.equal(here, epoch_permutation(1000, epoch=epoch, seed=seed))
    orders = {
        tuple(epoch_permutation(50, epoch=e, seed=s)[:10].tolist())
        for s in range(4)
        for e in range(4)
    }
    assert len(orders) == 16
