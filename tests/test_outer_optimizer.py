"""The outer optimizer (SlowMo / DiLoCo) against hand-computed values, plain averaging bit for bit,
and exact resumption of its state.

The hand-computed example: one parameter vector w, loss w · c_k on rank k, so
every local gradient is the constant c_k; c_0 = [1, 0], c_1 = [0, 3]; inner
SGD with lr 0.1 and no momentum; H = 2. Each local phase moves the average by
2 × 0.1 × mean(c) = [0.1, 0.3], so every pseudo-gradient Δ is [0.1, 0.3].
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from torch import nn

from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401

DILOCO = {"learningRate": 0.7, "momentum": 0.9, "nesterov": True}


class LinearLoss(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return (self.w * c).sum()


def config(outer: dict, name: str = "local-sgd") -> TrainingConfig:
    return TrainingConfig.model_validate(
        {
            "topology": {"nodes": 1, "processesPerNode": 2},
            "algorithm": {
                "name": name,
                "localSteps": 2,
                "outerOptimizer": outer,
                # post-local: 1 epoch (2 steps) of mini-batch SGD, then the outer steps
                **({"switchEpoch": 1} if name == "post-local-sgd" else {}),
            },
            "optimizer": {"momentum": 0.0, "nesterov": False, "weightDecay": 0},
            "training": {"epochs": 10},
        }
    )


def run_steps(algo, model, optimizer, loss_of, steps, after_step=None) -> None:
    for step in steps:
        with algo.step_context(step):
            loss_of(algo.training_model(), step).backward()
        optimizer.step()
        if after_step:
            after_step(step)
        optimizer.zero_grad(set_to_none=True)
        algo.after_optimizer_step(step)


# ---------------------------------------------------------------- hand-computed example


def linear_example(rank: int, world_size: int) -> dict:
    model = LinearLoss()
    algo = build_algorithm(config(DILOCO), model, make_dist_context(torch.device("cpu")), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    c = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)[rank]
    after_syncs = []

    def loss_of(m, step):
        return m(c)

    for cycle in range(2):
        run_steps(algo, model, optimizer, loss_of, range(2 * cycle, 2 * cycle + 2))
        after_syncs.append(model.w.detach().clone())
    run_steps(algo, model, optimizer, loss_of, [4])  # one local step past the second sync
    before_eval = model.w.detach().clone()
    evaluated = algo.synchronize_for_evaluation().w.detach().clone()
    return {
        "after_syncs": after_syncs,
        "evaluated": evaluated,
        "before_eval": before_eval,
        "after_eval": model.w.detach().clone(),
    }


def test_outer_nesterov_momentum_matches_hand_computed_values(tmp_path) -> None:
    results = run_on_ranks(linear_example, 2, tmp_path)
    # Sync 1: Δ = [0.1, 0.3]; buf = Δ; step = Δ + 0.9·buf = [0.19, 0.57];
    #         x = [1, 2] − 0.7·[0.19, 0.57] = [0.867, 1.601].
    # Sync 2: Δ = [0.1, 0.3]; buf = 0.9·[0.1, 0.3] + Δ = [0.19, 0.57];
    #         step = Δ + 0.9·buf = [0.271, 0.813]; x = [0.867, 1.601] − 0.7·step = [0.6773, 1.0319].
    # Evaluation one local step later: Δ = [0.05, 0.15]; buf' = 0.9·[0.19, 0.57] + Δ =
    #         [0.221, 0.663]; step = Δ + 0.9·buf' = [0.2489, 0.7467];
    #         x = [0.6773, 1.0319] − 0.7·step = [0.50307, 0.50921]; training state unchanged.
    expected = [[0.867, 1.601], [0.6773, 1.0319]]
    for result in results:
        for got, want in zip(result["after_syncs"], expected, strict=True):
            assert got.tolist() == pytest.approx(want, abs=1e-12)
        assert result["evaluated"].tolist() == pytest.approx([0.50307, 0.50921], abs=1e-12)
        assert torch.equal(result["before_eval"], result["after_eval"])
    assert not torch.equal(results[0]["before_eval"], results[1]["before_eval"])


# ---------------------------------------------------------------- plain averaging, bit for bit

BATCH, IN, HIDDEN, OUT = 6, 5, 7, 3


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
    )


def batch_loss(rank: int):
    def loss_of(model, step):
        generator = torch.Generator().manual_seed(1_000 * rank + step)
        x = torch.randn(BATCH, IN, generator=generator)
        return F.cross_entropy(model(x), torch.randint(0, OUT, (BATCH,), generator=generator))

    return loss_of


def plain_outer(rank: int, world_size: int) -> dict:
    model = make_model()
    cfg = config({"learningRate": 1.0, "momentum": 0.0})
    algo = build_algorithm(cfg, model, make_dist_context(torch.device("cpu")), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    expected = []

    def before_sync(step):
        if step % 2 == 1:  # the test's own mean of the ranks' parameters
            means = []
            for p in model.parameters():
                total = p.detach().clone()
                dist.all_reduce(total)
                means.append(total / world_size)
            expected.append(means)

    run_steps(algo, model, optimizer, batch_loss(rank), range(6), after_step=before_sync)
    got_final = [p.detach().clone() for p in model.parameters()]
    return {"expected_last": expected[-1], "got_last": got_final, "syncs": len(expected)}


def test_outer_lr_1_momentum_0_is_plain_averaging_bit_for_bit(tmp_path) -> None:
    for result in run_on_ranks(plain_outer, 2, tmp_path):
        assert result["syncs"] == 3
        for got, want in zip(result["got_last"], result["expected_last"], strict=True):
            assert torch.equal(got, want)


# ---------------------------------------------------------------- checkpoint and resume


def resume_outer(rank: int, world_size: int, name: str) -> dict:
    cfg = config(DILOCO, name=name)

    def fresh():
        model = make_model()
        algo = build_algorithm(cfg, model, make_dist_context(torch.device("cpu")), 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, algo, optimizer

    loss_of = batch_loss(rank)
    model, algo, optimizer = fresh()
    run_steps(algo, model, optimizer, loss_of, range(9))
    straight = [p.detach().clone() for p in model.parameters()]
    resumed = {}
    for stop in (3, 4, 6):  # right after a sync, one local step into a cycle, and later
        model, algo, optimizer = fresh()
        run_steps(algo, model, optimizer, loss_of, range(stop + 1))
        buffer = io.BytesIO()
        torch.save(
            {"model": model.state_dict(), "opt": optimizer.state_dict(), "algo": algo.state_dict()},
            buffer,
        )
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        torch.manual_seed(99)
        model = nn.Sequential(
            nn.Linear(IN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
        )
        model.load_state_dict(saved["model"])
        algo = build_algorithm(cfg, model, make_dist_context(torch.device("cpu")), 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        optimizer.load_state_dict(saved["opt"])
        algo.load_state_dict(saved["algo"])
        run_steps(algo, model, optimizer, loss_of, range(stop + 1, 9))
        resumed[stop] = [p.detach().clone() for p in model.parameters()]
    return {"straight": straight, "resumed": resumed}


@pytest.mark.parametrize("name", ["local-sgd", "post-local-sgd"])
def test_outer_state_is_checkpointed_and_resumes_exactly(tmp_path, name: str) -> None:
    for result in run_on_ranks(resume_outer, 2, tmp_path, args=(name,)):
        for stop, params in result["resumed"].items():
            for got, want in zip(params, result["straight"], strict=True):
                assert torch.equal(got, want), f"resumed after step {stop}"
