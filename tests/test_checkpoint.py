"""Checkpoint files in process, on a one-rank gloo group: layout, pruning, refusals, RNG."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from dsgd_trainer import checkpoint
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from dsgd_trainer.checkpoint import Learner, RunState, resume
from dsgd_trainer.gang import GangPosition
from dsgd_trainer.stopping import TrainerExit
from torch import nn

CPU = torch.device("cpu")


@pytest.fixture
def single_rank() -> Iterator[None]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def state(epoch: int) -> dict:
    return {"format": checkpoint.FORMAT_VERSION, "rank": 0, "weights": torch.full((3,), epoch)}


def test_saves_keep_the_last_two_and_latest_points_at_the_newest(
    tmp_path: Path, single_rank: None
) -> None:
    # A checkpoint a killed run began but never finished: latest.json never pointed at it.
    (tmp_path / "epoch-000009").mkdir()
    (tmp_path / "epoch-000009" / ".rank-0.pt.tmp").write_bytes(b"half a file")
    for epoch in (1, 2, 3):
        checkpoint.save(tmp_path, epoch, step=10 * epoch, rank=0, world_size=1, state=state(epoch))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-000002",
        "epoch-000003",
        "latest.json",
    ]
    assert [p.name for p in (tmp_path / "epoch-000003").iterdir()] == ["rank-0.pt"]
    latest = checkpoint.find_resume_point(tmp_path, rank=0, world_size=1, device=CPU)
    assert latest == checkpoint.CheckpointRef(3, 30, "epoch-000003", 1)
    assert torch.equal(checkpoint.load(tmp_path, latest, rank=0)["weights"], torch.full((3,), 3))


def test_no_latest_json_means_a_fresh_start(tmp_path: Path, single_rank: None) -> None:
    assert checkpoint.find_resume_point(tmp_path, rank=0, world_size=1, device=CPU) is None


def write_latest(directory: Path, world_size: int) -> None:
    record = {"epoch": 2, "step": 16, "checkpoint": "epoch-000002", "world_size": world_size}
    (directory / checkpoint.LATEST).write_text(json.dumps(record))


def test_a_checkpoint_of_another_world_size_is_refused_with_64(
    tmp_path: Path, single_rank: None
) -> None:
    write_latest(tmp_path, world_size=2)
    learner = Learner(nn.Linear(1, 1), None, None, torch.Generator(), CPU)  # type: ignore[arg-type]
    with pytest.raises(TrainerExit) as refused:
        resume(tmp_path, GangPosition(0, 1, 0, 1, 0, False), 8, learner, RunState())
    assert refused.value.code == exit_codes.INVALID_CONFIG
    assert "belongs to a run with 2 ranks, but this run has 1" in refused.value.message


def test_a_missing_rank_file_is_refused(tmp_path: Path, single_rank: None) -> None:
    write_latest(tmp_path, world_size=1)
    with pytest.raises(checkpoint.CheckpointError, match="not every rank can read"):
        checkpoint.find_resume_point(tmp_path, rank=0, world_size=1, device=CPU)


def test_a_corrupt_latest_json_is_refused(tmp_path: Path, single_rank: None) -> None:
    (tmp_path / checkpoint.LATEST).write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="cannot read"):
        checkpoint.find_resume_point(tmp_path, rank=0, world_size=1, device=CPU)


def draws(generator: torch.Generator) -> list:
    return [
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        [random.random() for _ in range(3)],
        torch.rand(3, generator=generator).tolist(),
    ]


def test_every_random_stream_is_restored() -> None:
    generator = torch.Generator().manual_seed(5)
    np.random.randn()  # leave numpy with a cached Gaussian, part of its state
    saved = checkpoint.capture_rng(generator, CPU)
    # Through torch.save and the weights_only loading that resuming uses.
    stream = io.BytesIO()
    torch.save(saved, stream)
    stream.seek(0)
    loaded = torch.load(stream, weights_only=True)
    expected = draws(generator)
    checkpoint.restore_rng(loaded, generator, CPU)
    assert draws(generator) == expected


def gpu_rng_state() -> dict:
    """What capture_rng saves on a GPU: a CUDA default-generator state and a CUDA (Philox)
    augmentation generator, both 16 bytes, unlike a CPU generator's 5056."""
    saved = checkpoint.capture_rng(torch.Generator().manual_seed(1), CPU)
    philox = torch.zeros(16, dtype=torch.uint8)
    return {**saved, "device": "cuda", "cuda": philox.clone(), "augment": philox.clone()}


def test_resuming_a_gpu_checkpoint_on_the_cpu_is_a_checkpoint_error_64(
    tmp_path: Path, single_rank: None
) -> None:
    """topology.gpu flipped between runs: refused with 64 (not retried), nothing restored."""
    gang = GangPosition(0, 1, 0, 1, 0, False)
    config = TrainingConfig.model_validate(
        {"topology": {"nodes": 1, "processesPerNode": 1}, "algorithm": {"name": "local-sgd"}}
    )

    def learner() -> Learner:
        model = nn.Linear(2, 2)
        algorithm = build_algorithm(config, model, make_dist_context(CPU, gang), 8)
        return Learner(
            model, torch.optim.SGD(model.parameters(), lr=0.1), algorithm, torch.Generator(), CPU
        )

    saved_by = learner()
    state = checkpoint.snapshot(RunState(epoch=1, step=8), gang, 8, saved_by)
    state["rng"] = gpu_rng_state()
    checkpoint.save(tmp_path, 1, 8, 0, 1, state)

    resumer, run = learner(), RunState()
    before = resumer.augment_generator.get_state()
    with pytest.raises(TrainerExit) as refused:
        resume(tmp_path, gang, 8, resumer, run)
    assert refused.value.code == exit_codes.INVALID_CONFIG
    message = refused.value.message
    assert "\n" not in message and message.startswith("checkpoint error: ")
    assert "epoch-000001" in message
    assert "saved by a run on cuda, this run trains on cpu: topology.gpu changed" in message
    assert torch.equal(resumer.augment_generator.get_state(), before)
    assert run.step == 0


def test_a_cpu_checkpoint_is_refused_on_a_gpu_before_any_generator_is_touched() -> None:
    """The other direction, checkable here: the check comes before any CUDA call."""
    saved = checkpoint.capture_rng(torch.Generator().manual_seed(1), CPU)
    torch_state = torch.get_rng_state()
    with pytest.raises(
        checkpoint.CheckpointError, match="saved by a run on cpu, this run trains on cuda"
    ):
        checkpoint.restore_rng(saved, torch.Generator(), torch.device("cuda", 0))
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_checkpoint_without_the_device_entry_is_judged_by_its_cuda_state() -> None:
    legacy = {key: value for key, value in gpu_rng_state().items() if key != "device"}
    with pytest.raises(checkpoint.CheckpointError, match="saved by a run on cuda"):
        checkpoint.restore_rng(legacy, torch.Generator(), CPU)
