"""Overlapped averaging in the real trainer: 2 gloo ranks under torchrun, checkpoints included.

Local SGD with H = 3 and overlapSteps 3 over 4 epochs of 8 steps: the averagings
start after steps 2, 5, 8, …, 29 and apply three steps later, so every epoch-end
checkpoint (after steps 7, 15, 23) holds a pending averaging. A second run
resumed from the epoch-3 checkpoint must end bit-identical to the uninterrupted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests._trainer_pods import Pods, tiny_config

pytestmark = pytest.mark.timeout(240)

EPOCHS, STEPS_PER_EPOCH, H, WORLD_SIZE = 4, 8, 3, 2


def overlap_config(workdir: Path) -> dict:
    config = tiny_config(workdir)
    config["algorithm"] = {"name": "local-sgd", "localSteps": H, "overlapSteps": H}
    return config


def records(workdir: Path) -> list[dict]:
    lines = (workdir / "out" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def final_model(workdir: Path, rank: int) -> dict[str, torch.Tensor]:
    path = workdir / "checkpoints" / f"epoch-{EPOCHS:06d}" / f"rank-{rank}.pt"
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture
def pods():
    started = Pods()
    yield started
    started.stop_all()


def test_overlapped_run_counts_its_rounds_and_resumes_bit_identically(
    tmp_path: Path, pods: Pods
) -> None:
    straight = tmp_path / "straight"
    first = pods.start(overlap_config(straight), straight, name="straight")
    assert first.wait(timeout=150) == 0, first.output
    summary = json.loads((straight / "out" / "summary.json").read_text())
    steps = EPOCHS * STEPS_PER_EPOCH
    assert summary["sync_rounds"]["global"] == steps // H  # counted like blocking syncs
    history = records(straight)
    assert [r["step"] for r in history] == [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
    assert all(r["consensus_distance"] is not None for r in history)
    saved = torch.load(straight / "checkpoints" / "epoch-000003" / "rank-0.pt", weights_only=True)
    pending = saved["algorithm"]["global_sync"]["pending"]
    assert pending is not None and pending["due"] == 23 + H  # started after step 23

    # A run that finds only the epoch-3 checkpoint (as after a kill) resumes from it.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(
        straight / "checkpoints" / "epoch-000003", resumed / "checkpoints" / "epoch-000003"
    )
    latest = {"epoch": 3, "step": 24, "checkpoint": "epoch-000003", "world_size": WORLD_SIZE}
    (resumed / "checkpoints" / "latest.json").write_text(json.dumps(latest))
    second = pods.start(overlap_config(resumed), resumed, name="resumed")
    assert second.wait(timeout=150) == 0, second.output
    assert "after epoch 3 (step 24)" in second.output
    for rank in range(WORLD_SIZE):
        want, got = final_model(straight, rank), final_model(resumed, rank)
        for name, tensor in want.items():
            assert torch.equal(got[name], tensor), f"rank {rank}: {name} differs"
    keys = ("step", "train_loss", "test_accuracy", "sync_rounds", "communicated_bytes")
    assert [{k: r[k] for k in keys} for r in records(resumed)][-1] == {
        k: history[-1][k] for k in keys
    }
