"""The trainer's step (dsgd_trainer.step.TrainStep) against a plain PyTorch loop; its statistics.

The oracle is the loop every PyTorch tutorial writes: index the batch, forward,
cross-entropy, backward, torch.optim.SGD step at the lr of the schedule,
zero_grad; the statistics are summed by hand in Python floats. One gloo rank
(local SGD with one rank: its averaging is the identity, sum / 1).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from dsgd_trainer.data.bundle import TensorDataset
from dsgd_trainer.evaluation import EVALUATION_WINDOW, FOLD_EVERY, METRICS_WINDOW, RunningStats
from dsgd_trainer.step import TrainStep
from torch import nn

from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401

STEPS, BATCH = 12, 8


def schedule(step: int) -> float:
    """An lr that changes at some steps and stays at others (written only when it changes)."""
    return 0.1 if step < 4 else 0.05 if step < 9 else 0.01


def make_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))


def step_against_plain_loop(rank: int, world_size: int) -> dict:
    generator = torch.Generator().manual_seed(5)
    data = TensorDataset(torch.randn(64, 6, generator=generator), torch.randint(0, 4, (64,)))
    batches = [torch.randperm(64, generator=generator)[:BATCH] for _ in range(STEPS)]
    config = TrainingConfig.model_validate(
        {"algorithm": {"name": "local-sgd", "localSteps": 2}, "training": {"epochs": 1}}
    )
    cpu = torch.device("cpu")

    ours = make_model()
    optimizer = torch.optim.SGD(ours.parameters(), lr=1.0, momentum=0.9)
    algorithm = build_algorithm(config, ours, make_dist_context(cpu), STEPS)
    stats = RunningStats(cpu, windows=2)
    step = TrainStep(
        algorithm, optimizer, schedule, data, None, torch.Generator(), stats, cpu, False
    )
    lrs, metrics_totals = [], []
    for s, indices in enumerate(batches):
        step(s, indices)
        lrs.append(optimizer.param_groups[0]["lr"])
        if s == 5:  # a metrics update: that window restarts, the evaluation window does not
            metrics_totals.append(stats.totals(METRICS_WINDOW).tolist())
            stats.restart(METRICS_WINDOW)

    plain = make_model()
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=1.0, momentum=0.9)
    per_step = []
    for s, indices in enumerate(batches):
        for group in plain_optimizer.param_groups:
            group["lr"] = schedule(s)
        outputs = plain(data.inputs[indices])
        loss = F.cross_entropy(outputs, data.targets[indices])
        loss.backward()
        plain_optimizer.step()
        plain_optimizer.zero_grad(set_to_none=True)
        correct = (outputs.argmax(dim=1) == data.targets[indices]).sum().item()
        per_step.append((loss.item() * BATCH, correct, BATCH))
    return {
        "ours": {n: p.detach().clone() for n, p in ours.named_parameters()},
        "plain": {n: p.detach().clone() for n, p in plain.named_parameters()},
        "lrs": lrs,
        "metrics_first": metrics_totals[0],
        "metrics_rest": stats.totals(METRICS_WINDOW).tolist(),
        "evaluation": stats.totals(EVALUATION_WINDOW).tolist(),
        "per_step": per_step,
    }


def test_the_trainer_step_is_the_plain_pytorch_loop_and_counts_what_it_trained(tmp_path) -> None:
    (result,) = run_on_ranks(step_against_plain_loop, 1, tmp_path)
    for name, want in result["plain"].items():
        assert torch.equal(result["ours"][name], want), name
    assert result["lrs"] == [schedule(s) for s in range(STEPS)]

    def summed(steps: list[tuple[float, int, int]]) -> list[float]:
        return [sum(s[0] for s in steps), sum(s[1] for s in steps), sum(s[2] for s in steps)]

    per_step = result["per_step"]
    for got, want in (
        (result["metrics_first"], summed(per_step[:6])),
        (result["metrics_rest"], summed(per_step[6:])),
        (result["evaluation"], summed(per_step)),
    ):
        assert got[0] == pytest.approx(want[0], rel=1e-6)  # Σ loss·n (float32 loss·n per step)
        assert got[1:] == want[1:]  # correct predictions and samples: exact


def test_running_stats_windows_hold_the_sums_of_their_batches_whatever_the_batch_sizes() -> None:
    """More batches than are kept before folding, a batch size that changes (a short last
    batch, then back), two windows restarting at different steps: each window's totals
    are the plain sums over its batches, read at any point."""

    generator = torch.Generator().manual_seed(1)
    stats = RunningStats(torch.device("cpu"), windows=2)
    sizes = [8] * (FOLD_EVERY + 3) + [5] + [8] * (FOLD_EVERY * 2) + [3, 3]
    since = [[0.0, 0, 0], [0.0, 0, 0]]  # the oracle: Python sums per window
    for step, n in enumerate(sizes):
        outputs = torch.randn(n, 4, generator=generator)
        targets = torch.randint(0, 4, (n,), generator=generator)
        loss = F.cross_entropy(outputs, targets)
        stats.add(loss, outputs, targets)
        correct = int((outputs.argmax(dim=1) == targets).sum())
        for window in since:
            window[0] += loss.item() * n
            window[1] += correct
            window[2] += n
        for window, every in ((0, 7), (1, 23)):
            if step % every == every - 1:
                got = stats.totals(window).tolist()
                assert got[0] == pytest.approx(since[window][0], rel=1e-6), (step, window)
                assert got[1:] == since[window][1:], (step, window)
                stats.restart(window)
                since[window] = [0.0, 0, 0]
    for window in (0, 1):
        got = stats.totals(window).tolist()
        assert got[0] == pytest.approx(since[window][0], rel=1e-6)
        assert got[1:] == since[window][1:]
