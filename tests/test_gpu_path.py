"""The GPU path's decisions a CPU machine can check (issue 17; the rest: gpu_check.sh).

- the per-step path makes nothing from host data (a dispatch-mode recorder sees
  every aten op: a tensor lifted from Python data or a copy between devices
  would be a host→device copy, a blocking one, on a GPU), and the
  augmentation's constants follow the bundle to its device (the `meta`
  device stands in for a GPU: tensors there have a device but no data);
- the epoch's index table reaches the device in one copy, not one per step;
- bf16 only on GPUs that have it in hardware (compute capability ≥ 8.0);
- intra-node process groups only for the algorithm that uses them.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
import torch.distributed as dist
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import SyncCounters, make_dist_context, uses_intra_node_groups
from dsgd_trainer.data import DataBundle, TensorDataset
from dsgd_trainer.data.augment import CropAndFlip
from dsgd_trainer.data.partition import EpochSampler
from dsgd_trainer.distributed import bf16_autocast
from torch.utils._python_dispatch import TorchDispatchMode

from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401

META = torch.device("meta")
CPU = torch.device("cpu")
#: Ops that turn host data into a tensor, or read a tensor back to the host.
HOST_DATA_OPS = {
    "aten.lift_fresh.default",
    "aten.lift_fresh_copy.default",
    "aten.scalar_tensor.default",
}
HOST_READ_OPS = {"aten._local_scalar_dense.default"}
COPY_OPS = {"aten._to_copy.default", "aten.copy_.default", "aten.copy.default"}


class HostTraffic(TorchDispatchMode):
    """Records every op that moves data between the host and a device, or across devices."""

    def __init__(self) -> None:
        super().__init__()
        self.offences: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = str(func)
        if name in HOST_DATA_OPS | HOST_READ_OPS:
            self.offences.append(name)
        elif name in COPY_OPS:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            outputs = [result] if isinstance(result, torch.Tensor) else []
            devices = {t.device for t in tensors + outputs}
            if len(devices) > 1:
                self.offences.append(f"{name} between {sorted(map(str, devices))}")
        return result


def cifar_like_augment() -> CropAndFlip:
    # What load_cifar builds: the normalised value of a black pixel, per channel.
    return CropAndFlip(padding=4, fill=torch.tensor([-1.99, -1.98, -1.71]).view(3, 1, 1))


@pytest.mark.parametrize("augment", [cifar_like_augment(), CropAndFlip(padding=4, fill=0.0)])
def test_augmentation_makes_nothing_from_host_data_per_step(augment: CropAndFlip) -> None:
    bundle = DataBundle(
        TensorDataset(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))),
        TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))),
        10,
        (3, 32, 32),
        augment,
    ).to(CPU)
    generator = torch.Generator(CPU).manual_seed(0)
    indices = EpochSampler(64, 0, 0, 1, 16).batches_on(0, CPU)[0]
    assert bundle.augment is not None
    with HostTraffic() as traffic:
        inputs = bundle.train.inputs[indices]
        out = bundle.augment(inputs, generator)
    assert out.shape == (16, 3, 32, 32)
    assert traffic.offences == []


def test_the_recorder_sees_what_would_be_a_host_to_device_copy() -> None:
    """The oracle can fail: the pattern issue 17 found (a host constant per step) is caught."""
    batch = torch.randn(2, 3, 4, 4)
    with HostTraffic() as traffic:
        torch.as_tensor(0.0, dtype=batch.dtype).expand(2, 3, 4, 4).clone()
        torch.empty(1, device=META).copy_(torch.ones(1))
    assert traffic.offences == [
        "aten.lift_fresh.default",
        "aten.copy_.default between ['cpu', 'meta']",
    ]


def test_augmentation_constants_follow_the_bundle_to_its_device() -> None:
    bundle = DataBundle(
        TensorDataset(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64)),
        TensorDataset(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64)),
        10,
        (3, 32, 32),
        cifar_like_augment(),
    )
    moved = bundle.to(META)
    assert isinstance(moved.augment, CropAndFlip)
    assert isinstance(moved.augment.fill, torch.Tensor) and moved.augment.fill.device == META
    assert moved.augment.padding == 4
    # A plug-in's plain function (nothing to move) is kept as it is.
    plain = DataBundle(bundle.train, bundle.test, 10, (3, 32, 32), lambda x, g: x).to(META)
    assert (
        plain.augment is not None
        and plain.augment(bundle.train.inputs, None) is bundle.train.inputs
    )


def test_the_epoch_index_table_reaches_the_device_in_one_copy() -> None:
    sampler = EpochSampler(1000, 3, 1, 4, 25)
    with HostTraffic() as traffic:
        on_device = sampler.batches_on(5, META)
    # One copy of the whole table (steps × batch), not one per step.
    assert traffic.offences == ["aten._to_copy.default between ['cpu', 'meta']"]
    assert [tuple(b.shape) for b in on_device] == [(25,)] * len(sampler)
    assert all(b.device == META for b in on_device)
    assert len({b.untyped_storage().data_ptr() for b in on_device}) == 1  # views of one table
    on_cpu = sampler.batches_on(5, CPU)
    assert all(torch.equal(a, b) for a, b in zip(on_cpu, sampler.batches(5), strict=True))


@pytest.mark.parametrize(
    ("precision", "device", "capability", "expected", "note"),
    [
        ("fp32", "cuda", (9, 0), False, None),
        ("bf16", "cuda", (8, 0), True, None),
        ("bf16", "cuda", (9, 0), True, None),
        ("bf16", "cuda", (7, 0), False, "cuda has 7.0 and would only emulate it"),  # V100
        ("bf16", "cuda", (7, 5), False, "cuda has 7.5"),  # T4
        ("bf16", "cpu", None, False, "training in fp32 on the CPU"),
    ],
)
def test_bf16_only_where_the_gpu_has_it_in_hardware(
    precision: str,
    device: str,
    capability: tuple[int, int] | None,
    expected: bool,
    note: str | None,
) -> None:
    use_bf16, said = bf16_autocast(precision, torch.device(device), capability)
    assert use_bf16 is expected
    if note is None:
        assert said is None
    else:
        assert said is not None and note in said and "\n" not in said


def config(name: str) -> TrainingConfig:
    nodes, per_node = 2, 2
    extra = {"blockSteps": 2} if name == "hierarchical-local-sgd" else {}
    return TrainingConfig.model_validate(
        {
            "topology": {"nodes": nodes, "processesPerNode": per_node},
            "algorithm": {"name": name, **extra},
        }
    )


def groups_created(rank: int, world_size: int, names: list[str]) -> dict[str, Any]:
    """For each algorithm: whether this rank got an intra-node group, and how many groups exist."""
    found = {}
    for name in names:
        before = len(dist.distributed_c10d._world.pg_map)
        ctx = make_dist_context(CPU, intra_node_groups=uses_intra_node_groups(config(name)))
        after = len(dist.distributed_c10d._world.pg_map)
        members = (
            None
            if ctx.intra_node_group is None
            else dist.get_process_group_ranks(ctx.intra_node_group)
        )
        found[name] = {"new_groups": after - before, "members": members}
    return found


def test_intra_node_groups_are_created_only_for_hierarchical_local_sgd(tmp_path) -> None:
    names = ["mini-batch-sgd", "local-sgd", "post-local-sgd", "hierarchical-local-sgd"]
    results = run_on_ranks(
        groups_created, 4, tmp_path, args=(names,), local_world_size=2, timeout=90
    )
    for rank, found in enumerate(results):
        for name in names[:3]:
            assert found[name] == {"new_groups": 0, "members": None}, (rank, name)
        # new_group is collective over all ranks; a rank is a member of its node's only.
        node = rank // 2
        assert found["hierarchical-local-sgd"] == {
            "new_groups": 1,
            "members": [2 * node, 2 * node + 1],
        }


def test_communication_time_on_the_cpu_is_the_wall_time_inside_timed() -> None:
    counters = SyncCounters()
    with counters.timed(CPU):
        time.sleep(0.05)
    assert 0.05 <= counters.communication_seconds < 5
    restored = SyncCounters()
    restored.load_state_dict(counters.state_dict())
    assert restored.communication_seconds == counters.communication_seconds


# ---------------------------------------------------------------- on a GPU only

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_cuda
def test_on_a_gpu_a_training_step_input_path_never_synchronises() -> None:
    """torch's own sync debugger: any blocking host↔device copy or sync raises here."""
    cuda = torch.device("cuda", 0)
    bundle = DataBundle(
        TensorDataset(torch.randn(256, 3, 32, 32), torch.randint(0, 10, (256,))),
        TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))),
        10,
        (3, 32, 32),
        cifar_like_augment(),
    ).to(cuda)
    generator = torch.Generator(cuda).manual_seed(0)
    batches = EpochSampler(256, 0, 0, 1, 64).batches_on(0, cuda)
    assert bundle.augment is not None
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for indices in batches:
            inputs = bundle.augment(bundle.train.inputs[indices], generator)
            targets = bundle.train.targets[indices]
            assert inputs.is_cuda and targets.is_cuda
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@needs_cuda
def test_on_a_gpu_timing_a_collective_does_not_synchronise() -> None:
    cuda = torch.device("cuda", 0)
    counters = SyncCounters()
    work = torch.randn(4096, 4096, device=cuda)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            with counters.timed(cuda):
                work = work @ work.T / 4096  # stands in for a collective on the stream
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert counters.communication_seconds > 0  # read: waits for the events, once
