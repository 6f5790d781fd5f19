"""Agreed stopping on real gloo ranks: ballots ride on the algorithms' own all-reduces.

One rank is asked to stop at a chosen step; every rank must learn it at the same
round (mini-batch SGD: that very step's gradient all-reduce; local SGD: the next
global averaging), and carrying the ballot must not change what is trained: the
parameters equal those of the same run without ballots (DDP's built-in
all-reduce; the plain dense averaging). The end-to-end stop (a SIGTERM to one
worker under torchrun) is in test_train.py.
"""

from __future__ import annotations

import signal

import pytest
import torch
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from dsgd_trainer.stop_vote import StopVote
from dsgd_trainer.stopping import StopRequest
from torch import nn

from ._dist_harness import (  # noqa: F401  (fixture)
    forkserver_stopped_after_module,
    rank_batch,
    run_on_ranks,
)

STEPS = 7
ASKED_RANK, ASKED_AT = 1, 2  # rank 1 is asked to stop during step 2


def config(algorithm: dict) -> TrainingConfig:
    return TrainingConfig.model_validate(
        {"topology": {"nodes": 1, "processesPerNode": 2}, "algorithm": algorithm}
    )


def trained(rank: int, algorithm: dict, with_vote: bool) -> dict:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    request = StopRequest()
    vote = StopVote(request, torch.device("cpu")) if with_vote else None
    ctx = make_dist_context(torch.device("cpu"), stop_vote=vote)
    algo = build_algorithm(config(algorithm), model, ctx, steps_per_epoch=100)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    agreed_after = []
    for step in range(STEPS):
        if rank == ASKED_RANK and step == ASKED_AT:
            request.signal = signal.SIGTERM  # what the handler records on a SIGTERM
        x, y = rank_batch(rank, step)
        with algo.step_context(step):
            F.cross_entropy(algo.training_model()(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        algo.after_optimizer_step(step)
        agreed_after.append(vote.agreed if vote else None)
    return {
        "agreed_after": agreed_after,
        "exit_code": vote.exit_code if vote else None,
        "parameters": {name: p.detach().clone() for name, p in model.state_dict().items()},
    }


def both_runs(rank: int, world_size: int, algorithm: dict) -> dict:
    return {
        "voting": trained(rank, algorithm, with_vote=True),
        "plain": trained(rank, algorithm, with_vote=False),
    }


@pytest.mark.parametrize(
    ("algorithm", "first_agreed_step"),
    [
        # Every step's gradient all-reduce carries the ballots: agreed at the step asked.
        ({"name": "mini-batch-sgd"}, ASKED_AT),
        # Global averagings after steps 2, 5 (H = 3): the one after step 2 carries it.
        ({"name": "local-sgd", "localSteps": 3}, 2),
        # H = 2: averagings after steps 1, 3, 5: asked during step 2, agreed at step 3.
        ({"name": "local-sgd", "localSteps": 2}, 3),
    ],
    ids=["mini-batch", "local-sgd-h3", "local-sgd-h2"],
)
def test_every_rank_agrees_at_the_same_round_and_training_is_unchanged(
    tmp_path, algorithm: dict, first_agreed_step: int
) -> None:
    results = run_on_ranks(both_runs, 2, tmp_path, args=(algorithm,), timeout=120)
    expected = [step >= first_agreed_step for step in range(STEPS)]
    for rank, result in enumerate(results):
        assert result["voting"]["agreed_after"] == expected, rank
        # The rank that was not signalled stops with SIGTERM's code as well.
        assert result["voting"]["exit_code"] == 128 + signal.SIGTERM
        voting, plain = result["voting"]["parameters"], result["plain"]["parameters"]
        for name in plain:
            assert torch.equal(voting[name], plain[name]), (rank, name)


def test_on_the_cpu_a_counted_sum_decides_at_once() -> None:
    # StopRequest installs SIGTERM/SIGINT handlers: pytest's own are put back after.
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        request = StopRequest()
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    vote = StopVote(request, torch.device("cpu"))
    assert vote.ballot(torch.float64).item() == 0.0
    vote.count(torch.zeros(1))
    assert not vote.agreed
    request.signal = signal.SIGINT
    assert vote.ballot(torch.float32).item() == 1.0
    vote.count_read(1.0)
    assert vote.agreed and vote.exit_code == 128 + signal.SIGINT
