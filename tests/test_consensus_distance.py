"""The consensus distance ‖x_k − x̄‖ / ‖x̄‖ measured at each global averaging, against the
test's own computation from the ranks' models gathered just before the sync: x̄ is their
mean (dense, outer-optimized before the outer step, overlapped), or, with sign
compression, the model every rank holds after the sync (the compressed consensus)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from torch import nn

from ._dist_harness import (  # noqa: F401  (fixture)
    forkserver_stopped_after_module,
    rank_batch,
    run_on_ranks,
)

H, STEPS = 2, 5


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])


def measured(rank: int, world_size: int, algorithm: dict) -> dict:
    cfg = TrainingConfig.model_validate(
        {
            "topology": {"nodes": 1, "processesPerNode": world_size},
            "algorithm": {"localSteps": H, **algorithm},
            "training": {"epochs": 10},
        }
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    algo = build_algorithm(cfg, model, make_dist_context(torch.device("cpu")), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    # Overlapped: measured when the averaging is applied, τ steps after the sync step.
    delay = algorithm.get("overlapSteps", 0)
    compressed = "compression" in algorithm
    mine, expected = [], []
    for step in range(STEPS):
        x, y = rank_batch(rank, step)
        with algo.step_context(step):
            F.cross_entropy(algo.training_model()(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % H == 0:
            own = flat(model)
            everyone = [torch.empty_like(own) for _ in range(world_size)]
            dist.all_gather(everyone, own)
            mean = sum(everyone) / world_size
            if not compressed:
                expected.append([((x - mean).norm() / mean.norm()).item() for x in everyone])
        algo.after_optimizer_step(step)
        if (step + 1) % H == 0 and compressed:
            consensus = flat(model)  # the same on every rank after a compressed sync
            expected.append([((x - consensus).norm() / consensus.norm()).item() for x in everyone])
        if step + 1 - delay > 0 and (step + 1 - delay) % H == 0:
            mine.append(algo.consensus_distance.value().item())
    return {"mine": mine, "expected": expected}


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": "local-sgd"},
        {"name": "local-sgd", "outerOptimizer": {"learningRate": 0.7, "momentum": 0.9}},
        {"name": "local-sgd", "overlapSteps": 1},
        {"name": "local-sgd", "compression": "sign"},
        {"name": "local-sgd", "compression": "ef-sign"},
    ],
)
def test_consensus_distance_is_each_ranks_relative_distance_to_the_mean(
    tmp_path, algorithm: dict
) -> None:
    results = run_on_ranks(measured, 3, tmp_path, args=(algorithm,))
    for rank, result in enumerate(results):
        assert len(result["mine"]) == STEPS // H
        for got, per_rank in zip(result["mine"], result["expected"], strict=True):
            assert got == pytest.approx(per_rank[rank], rel=1e-5)
            assert got > 0
    # The figure the run reports (metrics.jsonl) is the mean over ranks.
    means = [sum(r["mine"][i] for r in results) / 3 for i in range(STEPS // H)]
    assert all(0 < m < 1 for m in means)
