"""sign and ef-sign compressed local SGD against a transcription of the authors' update rules.

The oracle below is written from epfml LocalSGD-Code's `local_sign_sgd.py` and
`local_ef_sign_sgd.py` (Lin et al. 2020, Algorithms 3 and 4), not from our
modules: per-tensor lists, float averages of the ranks' signs and scales via
all-reduce as their aggregator does, their local steps. It runs next to our
algorithm on 4 gloo ranks with the same initial model and batches, over 3
syncs and an evaluation between syncs. The model's first layer has a weight
column that never receives a gradient (its input feature is always 0), so
the deltas contain exact zeros inside tensors whose scale is not zero: with
sign(0) = +1 those elements would drift by the scale at every sync.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from dsgd_trainer.optim import build_optimizer
from torch import nn

from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401

BATCH, IN, HIDDEN, OUT = 6, 5, 7, 3
LR, MOMENTUM, WEIGHT_DECAY, H, STEPS = 0.01, 0.9, 1e-3, 2, 7
RANKS = 4


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, OUT)
    )
    with torch.no_grad():
        model[0].weight[:, -1] = 0  # its input is always 0: no gradient, no decay, no motion
    return model


def make_batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1_000 * rank + step)
    x = torch.randn(BATCH, IN, generator=generator)
    x[:, -1] = 0
    return x, torch.randint(0, OUT, (BATCH,), generator=generator)


# ---------------------------------------------------------------- the authors' rules


class AuthorsRules:
    """One rank of Local_SignSGD / Local_EFSignSGD, transcribed (dampening 0, no Nesterov).

    `local_step` and `sync` are the authors' two phases. The test re-anchors the
    transcription on our state before each phase (`anchor`): sign steps are
    discontinuous, so two float orders of the same sums would send two
    trajectories apart; from the same state, the two rules must agree.
    """

    def __init__(self, model: nn.Module, compression: str) -> None:
        self.compression = compression
        self.params = [p.detach().clone() for p in model.parameters()]
        self.buffers: list[torch.Tensor | None] = [None for _ in self.params]
        self.consensus = [p.clone() for p in self.params]
        self.memory = [torch.zeros_like(p) for p in self.params]

    def anchor(self, model: nn.Module, flat_consensus=None, flat_memory=None) -> None:
        self.params = [p.detach().clone() for p in model.parameters()]
        if flat_consensus is not None:
            self.consensus = unflatten(flat_consensus, self.params)
        if flat_memory is not None:
            self.memory = unflatten(flat_memory, self.params)

    def local_step(self, grads: list[torch.Tensor], lr: float) -> None:
        for i, (p, grad) in enumerate(zip(self.params, grads, strict=True)):
            d_p = grad + WEIGHT_DECAY * p
            if self.buffers[i] is None:
                self.buffers[i] = d_p.clone()
            else:
                self.buffers[i] = MOMENTUM * self.buffers[i] + d_p
            d_p = self.buffers[i]
            if self.compression == "sign":
                self.params[i] = p - lr * torch.sign(d_p)  # local_sign_sgd: a sign step
            else:
                self.params[i] = p - lr * d_p  # local_ef_sign_sgd: apply_gradient, plain SGD

    def compressed(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(local scales, local signs, x) of x = consensus − param (+ memory for ef-sign)."""
        scales, signs, sent = [], [], []
        for consensus, p, memory in zip(self.consensus, self.params, self.memory, strict=True):
            x = consensus - p
            if self.compression == "ef-sign":
                x = x + memory
            scales.append(x.norm(p=1) / x.numel())
            signs.append(torch.sign(x))
            sent.append(x)
        return scales, signs, sent

    @staticmethod
    def averaged(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """The centralized aggregator's "avg": all-reduce, divide by the world size."""
        out = []
        for t in tensors:
            t = t.clone()
            dist.all_reduce(t)
            out.append(t / dist.get_world_size())
        return out

    def consensus_after_sync(self) -> list[torch.Tensor]:
        scales, signs, _ = self.compressed()
        mean_signs, mean_scales = self.averaged(signs), self.averaged(scales)
        return [c - m * s for c, s, m in zip(self.consensus, mean_signs, mean_scales, strict=True)]

    def sync(self) -> None:
        scales, signs, sent = self.compressed()
        self.consensus = self.consensus_after_sync()
        if self.compression == "ef-sign":
            self.memory = [x - s * g for x, s, g in zip(sent, scales, signs, strict=True)]
        self.params = [c.clone() for c in self.consensus]


def unflatten(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    pieces = flat.split([t.numel() for t in like])
    return [piece.view_as(t).clone() for piece, t in zip(pieces, like, strict=True)]


# ---------------------------------------------------------------- both, side by side


def named(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def model_before_sync(params: dict[str, torch.Tensor], model: nn.Module) -> nn.Module:
    """A copy of `model` holding `params` (this rank's x_k just before the sync)."""
    replica = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in replica.named_parameters():
            p.copy_(params[name])
    return replica


def compressed_run(rank: int, world_size: int, compression: str) -> dict:
    cfg = TrainingConfig.model_validate(
        {
            "topology": {"nodes": 1, "processesPerNode": world_size},
            "algorithm": {"name": "local-sgd", "localSteps": H, "compression": compression},
            "optimizer": {
                "learningRate": LR,
                "momentum": MOMENTUM,
                "nesterov": False,
                "weightDecay": WEIGHT_DECAY,
                "weightDecayOnNormalization": True,  # the transcription decays every tensor
                "warmupEpochs": 0,
            },
            "training": {"epochs": STEPS},
        }
    )
    model = make_model()
    algo = build_algorithm(cfg, model, make_dist_context(torch.device("cpu")), 1)
    optimizer = build_optimizer(model, cfg.optimizer, sign_steps=cfg.algorithm.local_sign_steps)
    for group in optimizer.param_groups:
        group["lr"] = LR
    oracle = AuthorsRules(model, compression)
    names = [n for n, _ in model.named_parameters()]
    steps, syncs = [], []
    for step in range(STEPS):
        x, y = make_batch(rank, step)
        with algo.step_context(step):
            F.cross_entropy(algo.training_model()(x), y).backward()
        oracle.anchor(model)
        oracle.local_step([p.grad.clone() for p in model.parameters()], LR)
        optimizer.step()
        steps.append({"ours": named(model), "oracle": dict(zip(names, oracle.params, strict=True))})
        optimizer.zero_grad(set_to_none=True)
        state = algo.state_dict()["global_sync"]
        algo.after_optimizer_step(step)
        if (step + 1) % H == 0:
            oracle.anchor(
                model_before_sync(steps[-1]["ours"], model), state["reference"], state["error"]
            )
            oracle.sync()
            error = algo.state_dict()["global_sync"]["error"]
            syncs.append(
                {
                    "ours": named(model),
                    "oracle": dict(zip(names, oracle.params, strict=True)),
                    "ours_error": None if error is None else error.clone(),
                    "oracle_error": torch.cat([m.reshape(-1) for m in oracle.memory]),
                }
            )
    oracle.anchor(
        model,
        algo.state_dict()["global_sync"]["reference"],
        algo.state_dict()["global_sync"]["error"],
    )
    before = named(model)
    evaluated = named(algo.synchronize_for_evaluation())
    expected = oracle.consensus_after_sync()
    return {
        "steps": steps,
        "syncs": syncs,
        "before_eval": before,
        "after_eval": named(model),
        "evaluated": evaluated,
        "oracle_eval": dict(zip(before, expected, strict=True)),
        "counters": algo.counters.state_dict(),
    }


@pytest.fixture(scope="module", params=["sign", "ef-sign"])
def runs(request, tmp_path_factory) -> tuple[str, list[dict]]:
    workdir = tmp_path_factory.mktemp(request.param)
    results = run_on_ranks(compressed_run, RANKS, workdir, args=(request.param,), timeout=120)
    return request.param, results


def test_syncs_follow_the_authors_rules(runs) -> None:
    compression, results = runs
    assert len(results[0]["syncs"]) == STEPS // H == 3
    for index in range(3):
        ours = [r["syncs"][index]["ours"] for r in results]
        for rank, result in enumerate(results):
            sync = result["syncs"][index]
            for name, expected in sync["oracle"].items():
                torch.testing.assert_close(
                    sync["ours"][name],
                    expected,
                    rtol=0,
                    atol=1e-6,
                    msg=f"{compression} sync {index} rank {rank} {name}",
                )
                assert torch.equal(sync["ours"][name], ours[0][name]), "replicas differ"
            if compression == "ef-sign":
                torch.testing.assert_close(
                    sync["ours_error"], sync["oracle_error"], rtol=0, atol=1e-6
                )
                assert sync["ours_error"].abs().sum() > 0
            else:
                assert sync["ours_error"] is None


def test_local_steps_follow_the_authors_rules(runs) -> None:
    compression, results = runs
    for rank, result in enumerate(results):
        for step, record in enumerate(result["steps"]):
            for name, expected in record["oracle"].items():
                torch.testing.assert_close(
                    record["ours"][name],
                    expected,
                    rtol=0,
                    atol=1e-7,
                    msg=f"{compression} step {step} rank {rank} {name}",
                )
    if compression == "sign":  # every coordinate moved by exactly lr, or not at all
        moved = (
            results[0]["steps"][1]["ours"]["3.weight"] - results[0]["steps"][0]["ours"]["3.weight"]
        )
        torch.testing.assert_close(moved.abs(), torch.full_like(moved, LR), rtol=0, atol=1e-7)


def test_elements_that_never_moved_stay_exactly_put(runs) -> None:
    _, results = runs
    for result in results:
        for sync in result["syncs"]:
            weight = sync["ours"]["0.weight"]
            assert torch.equal(weight[:, -1], torch.zeros(HIDDEN))  # sign(0) = 0
            assert weight[:, :-1].abs().sum() > 0


def test_evaluation_scores_the_compressed_consensus_without_touching_training(runs) -> None:
    _, results = runs
    for result in results:
        for name, expected in result["oracle_eval"].items():
            torch.testing.assert_close(result["evaluated"][name], expected, rtol=0, atol=1e-6)
            assert torch.equal(result["before_eval"][name], result["after_eval"][name])
        # Step 6 was a local step: the consensus is not any rank's own model.
        assert not torch.equal(result["evaluated"]["3.weight"], result["before_eval"]["3.weight"])


def test_sign_sums_travel_in_the_smallest_exact_type() -> None:
    from dsgd_trainer.algorithms.compression import sign_sum_dtype

    assert [sign_sum_dtype(k) for k in (2, 127, 128, 2048, 2049)] == [
        torch.int8,
        torch.int8,
        torch.float16,
        torch.float16,
        torch.int32,
    ]
    # float16 adds ±1/0 signs of up to 2048 ranks exactly, in any order and grouping.
    generator = torch.Generator().manual_seed(0)
    signs = torch.randint(-1, 2, (2048, 1000), generator=generator)
    signs[:, 0] = 1  # the extreme sum 2048
    running = torch.zeros(1000, dtype=torch.float16)
    for row in signs[torch.randperm(2048, generator=generator)]:
        running += row.to(torch.float16)
    assert torch.equal(running.to(torch.int64), signs.sum(dim=0))
