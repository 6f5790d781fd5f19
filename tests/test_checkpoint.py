"""Checkpoint files in process, on a one-rank gloo group: layout, pruning, refusals, RNG."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import shutil
import subprocess
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
from dsgd_trainer.checkpoint import Learner, RunState
from dsgd_trainer.gang import GangPosition
from dsgd_trainer.resume import resume
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


# --- a full volume, a corrupt latest checkpoint (issue 14) ----------------------------------


def test_a_full_volume_leaves_no_temporary_file_and_keeps_the_errno(
    tmp_path: Path, single_rank: None
) -> None:
    """/dev/full answers every write with ENOSPC, as a full volume does: the kernel's own error."""
    checkpoint.save(tmp_path, 1, step=8, rank=0, world_size=1, state=state(1))
    (tmp_path / "epoch-000002").mkdir()
    temporary = tmp_path / "epoch-000002" / ".rank-0.pt.tmp"
    temporary.symlink_to("/dev/full")
    with pytest.raises(OSError) as full:
        checkpoint.save(tmp_path, 2, step=16, rank=0, world_size=1, state=state(2))
    assert full.value.errno == errno.ENOSPC  # not torch's RuntimeError without an errno
    assert full.value.filename == str(temporary)
    assert not temporary.exists() and not temporary.is_symlink()
    assert list((tmp_path / "epoch-000002").iterdir()) == []
    assert checkpoint.read_latest(tmp_path).checkpoint == "epoch-000001"  # still the last one


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_real_full_tmpfs_leaves_no_partial_file(tmp_path: Path, single_rank: None) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(volume)], check=True)
    try:
        big = {"format": checkpoint.FORMAT_VERSION, "rank": 0, "weights": torch.zeros(200_000)}
        with pytest.raises(OSError) as full:
            checkpoint.save(volume, 1, step=8, rank=0, world_size=1, state=big)
        assert full.value.errno == errno.ENOSPC
        assert list((volume / "epoch-000001").iterdir()) == []
        assert shutil.disk_usage(volume).used == 0
    finally:
        subprocess.run(["umount", str(volume)], check=True)


def real_learner(seed: int) -> Learner:
    """The learner of a one-rank local-SGD run on an MLP: real model, optimizer, algorithm."""
    from dsgd_contract.config import TrainingConfig
    from dsgd_trainer.algorithms import build_algorithm, make_dist_context
    from dsgd_trainer.models import build_model

    torch.manual_seed(seed)
    config = TrainingConfig.model_validate({"algorithm": {"compression": "ef-sign"}})
    model = build_model("mlp", (1, 8, 8), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    algorithm = build_algorithm(config, model, make_dist_context(CPU, ONE_RANK), 8)
    return Learner(model, optimizer, algorithm, torch.Generator().manual_seed(seed), CPU)


ONE_RANK = GangPosition(0, 1, 0, 1, 0, False)


def save_epochs(directory: Path, epochs: range) -> dict[int, dict]:
    """Checkpoints after each of `epochs`, each from a differently seeded learner."""
    saved = {}
    for epoch in epochs:
        learner = real_learner(seed=epoch)
        run = RunState(epoch=epoch, step=8 * epoch, samples=256 * epoch)
        saved[epoch] = checkpoint.snapshot(run, ONE_RANK, 8, learner)
        checkpoint.save(directory, epoch, 8 * epoch, 0, 1, saved[epoch])
    return saved


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, single_rank: None, capfd: pytest.CaptureFixture[str]
) -> None:
    saved = save_epochs(tmp_path, range(1, 4))  # epochs 2 and 3 are kept
    newest = tmp_path / "epoch-000003" / "rank-0.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # cut short, as by a failed copy
    learner, run = real_learner(seed=99), RunState()
    assert resume(tmp_path, ONE_RANK, 8, learner, run)
    assert (run.epoch, run.step, run.checkpoints_skipped) == (2, 16, 1)
    for name, value in learner.model.state_dict().items():
        assert torch.equal(value, saved[2]["model"][name]), name
    warnings = capfd.readouterr().out
    assert "WARNING: checkpoint epoch-000003 is unusable; falling back to epoch-000002" in warnings
    assert f"cannot resume from {tmp_path / 'epoch-000003'}: cannot load {newest}" in warnings


def test_no_usable_checkpoint_fails_with_64_naming_each(tmp_path: Path, single_rank: None) -> None:
    save_epochs(tmp_path, range(1, 3))
    for epoch in (1, 2):
        (tmp_path / f"epoch-{epoch:06d}" / "rank-0.pt").write_bytes(b"garbage")
    with pytest.raises(TrainerExit) as refused:
        resume(tmp_path, ONE_RANK, 8, real_learner(seed=5), RunState())
    assert refused.value.code == exit_codes.INVALID_CONFIG
    message = refused.value.message
    assert message.startswith(f"checkpoint error: no usable checkpoint in {tmp_path}: ")
    assert "epoch-000002: cannot load" in message and "epoch-000001: cannot load" in message


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
