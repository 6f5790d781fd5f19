"""Overlapped averaging (algorithm.overlapSteps τ) against a transcription of its rule.

The oracle is a hand-written loop on the same ranks, the same batches and a
torch.optim.SGD inner optimizer: at a global sync after step s it snapshots
y_k, gathers every rank's snapshot (all_gather, averaged by hand), and after
step s + τ (or the last step) sets x_k ← ȳ + (x_k − y_k) — the rule as
docs/algorithms.md states it, in that order of operations. The outer step is
torch.optim.SGD on the anchor with the pseudo-gradient anchor − ȳ as its
gradient. Post-local's mini-batch phase is torch's DDP; hierarchical's
intra-node averaging is a blocking mean over the node's ranks. τ = 0 must be
today's blocking local SGD bit for bit.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401

LR, MOMENTUM, STEPS_PER_EPOCH, EPOCHS = 0.05, 0.9, 4, 3
TOTAL = EPOCHS * STEPS_PER_EPOCH
IN, HIDDEN, OUT, BATCH = 5, 7, 3, 6
DILOCO = {"learningRate": 0.7, "momentum": 0.9, "nesterov": True}


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
    )


def make_batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1_000 * rank + step)
    x = torch.randn(BATCH, IN, generator=generator)
    return x, torch.randint(0, OUT, (BATCH,), generator=generator)


def make_config(algorithm: dict) -> TrainingConfig:
    nodes, per_node = (2, 2) if algorithm["name"] == "hierarchical-local-sgd" else (1, 2)
    return TrainingConfig.model_validate(
        {
            "topology": {"nodes": nodes, "processesPerNode": per_node},
            "algorithm": algorithm,
            "optimizer": {"momentum": MOMENTUM, "nesterov": False, "weightDecay": 0},
            "training": {"epochs": EPOCHS},
        }
    )


def averaged(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """What the rule moves: the parameters and the floating buffers, by name."""
    return [
        *model.named_parameters(),
        *[(n, b) for n, b in model.named_buffers() if b.is_floating_point()],
    ]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def mean_over(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """The mean of every rank's `tensor` in `group`, summed by hand in rank order."""
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, tensor.contiguous(), group=group)
    total = gathered[0].clone()
    for other in gathered[1:]:
        total += other
    return total / len(gathered)


# ---------------------------------------------------------------- ours and the oracle


def run_ours(config: TrainingConfig, rank: int, steps: range, model=None, algo=None, opt=None):
    model = model or make_model()
    if algo is None:
        algo = build_algorithm(
            config, model, make_dist_context(torch.device("cpu")), STEPS_PER_EPOCH
        )
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for step in steps:
        x, y = make_batch(rank, step)
        with algo.step_context(step):
            F.cross_entropy(algo.training_model()(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        algo.after_optimizer_step(step)
    return model, algo, opt


def scope_after(algorithm: dict, step: int, switch: int) -> str | None:
    """The schedule, transcribed from docs/algorithms.md."""
    H = algorithm.get("localSteps", 4)
    if algorithm["name"] == "hierarchical-local-sgd":
        done = step + 1
        if done % (H * algorithm.get("blockSteps", 4)) == 0:
            return "global"
        return "intra_node" if done % H == 0 else None
    return "global" if step >= switch and (step + 1 - switch) % H == 0 else None


def run_oracle(config: TrainingConfig, algorithm: dict, rank: int, total: int) -> dict:
    model = make_model()
    tau = algorithm.get("overlapSteps", 0)
    switch = algorithm.get("switchEpoch", 0) * STEPS_PER_EPOCH
    node_group = None
    if algorithm["name"] == "hierarchical-local-sgd":
        groups = [dist.new_group([0, 1]), dist.new_group([2, 3])]
        node_group = groups[rank // 2]
    with torch.no_grad():  # identical replicas at the start: rank 0's
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor, 0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    outer_config = algorithm.get("outerOptimizer")
    anchor = outer = None
    if outer_config:
        anchor = [p.detach().clone().requires_grad_() for p in model.parameters()]
        outer = torch.optim.SGD(
            anchor,
            lr=outer_config["learningRate"],
            momentum=outer_config["momentum"],
            nesterov=outer_config["nesterov"],
        )
    ddp = DistributedDataParallel(model) if switch else None
    pending = None  # (due, snapshot, means)
    evaluations = []
    for step in range(total):
        x, y = make_batch(rank, step)
        net = ddp if step < switch else model
        F.cross_entropy(net(x), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            if step + 1 == switch:  # post-local's switch: rank 0's buffers
                for buffer in model.buffers():
                    dist.broadcast(buffer, 0)
            if pending and (step >= pending[0] or step == total - 1):
                apply(model, pending)
                pending = None
            scope = scope_after(algorithm, step, switch)
            if scope == "intra_node":
                for _, tensor in averaged(model):
                    tensor.copy_(mean_over(tensor, node_group))
            elif scope == "global":
                snapshot = {n: t.clone() for n, t in averaged(model)}
                means = {n: mean_over(t) for n, t in snapshot.items()}
                if outer is not None:
                    names = [n for n, _ in model.named_parameters()]
                    for name, a in zip(names, anchor, strict=True):
                        a.grad = a.detach() - means[name]
                    outer.step()
                    for name, a in zip(names, anchor, strict=True):
                        means[name] = a.detach().clone()
                pending = (step + tau, snapshot, means)
                if tau == 0 or step == total - 1:
                    apply(model, pending)
                    pending = None
            # What evaluation must show: the mean over ranks of the models with the
            # pending averaging applied.
            if pending:
                shown = {n: pending[2][n] + (t - pending[1][n]) for n, t in averaged(model)}
            else:
                shown = {n: t.clone() for n, t in averaged(model)}
            evaluations.append({n: mean_over(t) for n, t in shown.items()})
    return {"model": state(model), "evaluations": evaluations}


def apply(model: nn.Module, pending: tuple) -> None:
    """x_k ← ȳ + (x_k − y_k)."""
    _, snapshot, means = pending
    for name, tensor in averaged(model):
        tensor.copy_(means[name] + (tensor - snapshot[name]))


#: Every case trains EPOCHS × STEPS_PER_EPOCH = 12 steps.
CASES = {
    "local tau 0": {"name": "local-sgd", "localSteps": 3, "overlapSteps": 0},
    "local tau 1": {"name": "local-sgd", "localSteps": 3, "overlapSteps": 1},
    # τ = H: each averaging is applied after the step that starts the next one.
    "local tau H": {"name": "local-sgd", "localSteps": 3, "overlapSteps": 3},
    # The averaging started after step 9 would apply after step 13: after the last, 11.
    "local pending at the end": {"name": "local-sgd", "localSteps": 5, "overlapSteps": 4},
    "local tau 2 DiLoCo": {
        "name": "local-sgd",
        "localSteps": 3,
        "overlapSteps": 2,
        "outerOptimizer": DILOCO,
    },
    "post-local tau 2": {
        "name": "post-local-sgd",
        "localSteps": 3,
        "overlapSteps": 2,
        "switchEpoch": 1,
    },
}


def compare_with_oracle(rank: int, world_size: int, case: str) -> dict:
    algorithm, total = CASES[case], TOTAL
    config = make_config(algorithm)
    model, algo, _ = run_ours(config, rank, range(total))
    counters = algo.counters.state_dict()
    oracle = run_oracle(config, algorithm, rank, total)
    # Evaluation in the middle of a pending averaging: what it shows, and that the
    # training trajectory does not notice.
    model2 = make_model()
    algo2 = build_algorithm(config, model2, make_dist_context(torch.device("cpu")), STEPS_PER_EPOCH)
    opt2 = torch.optim.SGD(model2.parameters(), lr=LR, momentum=MOMENTUM)
    shown = []
    for step in range(total):
        run_ours(config, rank, range(step, step + 1), model2, algo2, opt2)
        evaluated = algo2.synchronize_for_evaluation()
        shown.append({n: t.detach().clone() for n, t in averaged(evaluated)})
    return {
        "ours": state(model),
        "oracle": oracle,
        "counters": counters,
        "with_evaluations": state(model2),
        "shown": shown,
    }


@pytest.mark.parametrize("case", list(CASES))
def test_overlap_follows_the_transcribed_rule(tmp_path, case: str) -> None:
    algorithm, total = CASES[case], TOTAL
    for result in run_on_ranks(compare_with_oracle, 2, tmp_path, args=(case,), timeout=120):
        ours, oracle = result["ours"], result["oracle"]["model"]
        for name, want in oracle.items():
            if algorithm["overlapSteps"] == 0:
                assert torch.equal(ours[name], want), f"{name}: τ = 0 is not blocking local SGD"
            else:
                torch.testing.assert_close(ours[name], want, rtol=1e-5, atol=1e-6, msg=name)
        # Evaluation neither moves the training trajectory…
        for name, want in ours.items():
            assert torch.equal(result["with_evaluations"][name], want), name
        # …and shows the mean of the models with the pending averaging applied.
        switch = algorithm.get("switchEpoch", 0) * STEPS_PER_EPOCH
        for step, (got, want) in enumerate(
            zip(result["shown"], result["oracle"]["evaluations"], strict=True)
        ):
            if step + 1 < switch:
                continue  # post-local's mini-batch phase evaluates rank 0's buffers (as DDP)
            for name in want:
                torch.testing.assert_close(
                    got[name], want[name], rtol=1e-5, atol=1e-6, msg=f"step {step}: {name}"
                )
        # Counted like blocking syncs: ⌊(S − T)/H⌋ rounds of a ring all-reduce of the
        # parameters and floating buffers (2 ranks: the payload once).
        H = algorithm["localSteps"]
        model = make_model()
        payload = sum(t.numel() * t.element_size() for _, t in averaged(model))
        rounds = result["counters"]["rounds"]["global"] - switch
        assert rounds == (total - switch) // H
        if not switch:
            assert result["counters"]["bytes"]["global"] == rounds * payload
            assert result["counters"]["payload_bytes"]["global"] == rounds * payload


def hierarchical(rank: int, world_size: int) -> dict:
    algorithm = {
        "name": "hierarchical-local-sgd",
        "localSteps": 2,
        "blockSteps": 2,
        "overlapSteps": 2,
    }
    config = make_config(algorithm)
    model, algo, _ = run_ours(config, rank, range(TOTAL))
    return {
        "ours": state(model),
        "oracle": run_oracle(config, algorithm, rank, TOTAL)["model"],
        "rounds": dict(algo.counters.rounds),
    }


def test_hierarchical_overlaps_the_global_level_only(tmp_path) -> None:
    results = run_on_ranks(hierarchical, 4, tmp_path, local_world_size=2, timeout=120)
    for result in results:
        for name, want in result["oracle"].items():
            torch.testing.assert_close(result["ours"][name], want, rtol=1e-5, atol=1e-6, msg=name)
        assert result["rounds"] == {
            "global": TOTAL // 4,
            "intra_node": TOTAL // 2 - TOTAL // 4,
            "push": 0,
            "fetch": 0,
        }


# ---------------------------------------------------------------- checkpoint and resume

RESUMED = {
    "local": {"name": "local-sgd", "localSteps": 3, "overlapSteps": 3},
    "DiLoCo": {"name": "local-sgd", "localSteps": 3, "overlapSteps": 2, "outerOptimizer": DILOCO},
}


def resume_with_pending(rank: int, world_size: int, case: str) -> dict:
    config = make_config(RESUMED[case])
    total = TOTAL
    straight, straight_algo, _ = run_ours(config, rank, range(total))
    resumed = {}
    for stop in (3, 6):  # a pending averaging (started after step 2 or 5) at each
        model, algo, opt = run_ours(config, rank, range(stop + 1))
        pending_before = algo.overlap.pending_due
        buffer = io.BytesIO()
        torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "algo": algo.state_dict()},
            buffer,
        )
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        model = make_model(seed=123)
        model.load_state_dict(saved["model"])
        algo = build_algorithm(
            config, model, make_dist_context(torch.device("cpu")), STEPS_PER_EPOCH
        )
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        opt.load_state_dict(saved["opt"])
        algo.load_state_dict(saved["algo"])
        run_ours(config, rank, range(stop + 1, total), model, algo, opt)
        resumed[stop] = {
            "pending": pending_before,
            "model": state(model),
            "counters": algo.counters.state_dict(),
        }
    return {
        "straight": state(straight),
        "counters": straight_algo.counters.state_dict(),
        "resumed": resumed,
    }


@pytest.mark.parametrize("case", list(RESUMED))
def test_a_checkpoint_with_a_pending_averaging_resumes_exactly(tmp_path, case: str) -> None:
    for result in run_on_ranks(resume_with_pending, 2, tmp_path, args=(case,), timeout=120):
        for stop, resumed in result["resumed"].items():
            assert resumed["pending"] is not None, f"nothing pending after step {stop}"
            for name, want in result["straight"].items():
                assert torch.equal(resumed["model"][name], want), f"after step {stop}: {name}"
            assert resumed["counters"]["rounds"] == result["counters"]["rounds"]
            assert resumed["counters"]["bytes"] == result["counters"]["bytes"]


def one_tensor(rank: int, world_size: int) -> dict:
    """A model of one tensor (flattening it alone gives a view of it, not a copy)."""
    config = make_config({"name": "local-sgd", "localSteps": 2, "overlapSteps": 1})
    torch.manual_seed(0)
    ours = nn.Linear(IN, OUT, bias=False)
    oracle = copy.deepcopy(ours)
    algo = build_algorithm(config, ours, make_dist_context(torch.device("cpu")), STEPS_PER_EPOCH)
    ours_opt = torch.optim.SGD(ours.parameters(), lr=LR, momentum=MOMENTUM)
    oracle_opt = torch.optim.SGD(oracle.parameters(), lr=LR, momentum=MOMENTUM)
    pending = None  # the oracle's (y_k, ȳ) of the averaging started after the previous step
    for step in range(7):  # syncs after steps 1, 3, 5; applied after 2, 4, 6
        x, y = make_batch(rank, step)
        with algo.step_context(step):
            F.cross_entropy(algo.training_model()(x), y).backward()
        ours_opt.step()
        ours_opt.zero_grad(set_to_none=True)
        algo.after_optimizer_step(step)
        F.cross_entropy(oracle(x), y).backward()
        oracle_opt.step()
        oracle_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            if pending is not None:  # τ = 1: x_k ← ȳ + (x_k − y_k)
                snapshot, mean = pending
                oracle.weight += mean - snapshot
                pending = None
            if step % 2 == 1:
                snapshot = oracle.weight.detach().clone()
                pending = (snapshot, mean_over(snapshot))
    return {"ours": ours.weight.detach().clone(), "oracle": oracle.weight.detach().clone()}


def test_a_model_of_one_tensor_keeps_training_while_its_averaging_is_in_flight(tmp_path) -> None:
    for result in run_on_ranks(one_tensor, 2, tmp_path, timeout=60):
        torch.testing.assert_close(result["ours"], result["oracle"], rtol=1e-5, atol=1e-6)
