"""What the algorithm tests run on real gloo ranks: the model, batches, configs and the
multi-process scenarios whose records test_algorithms.py asserts on (and the formulas for
expected counts and bytes, from docs/algorithms.md, not from the code under test)."""

from __future__ import annotations

import io

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract.config import TrainingConfig
from dsgd_trainer.algorithms import build_algorithm, make_dist_context
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

LR = 0.05
BATCH = 6
IN, HIDDEN, OUT = 5, 7, 3  # odd sizes, so packed sign bits need padding


# ---------------------------------------------------------------- shared pieces


def make_model(seed: int = 0, batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(HIDDEN)] if batchnorm else []
    return nn.Sequential(nn.Linear(IN, HIDDEN), *norm, nn.ReLU(), nn.Linear(HIDDEN, OUT))


def make_batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A different batch for every (rank, step); the same again on resume."""
    generator = torch.Generator().manual_seed(1_000 * rank + step)
    x = torch.randn(BATCH, IN, generator=generator)
    return x, torch.randint(0, OUT, (BATCH,), generator=generator)


def make_config(name: str, **algorithm: object) -> TrainingConfig:
    nodes, per_node = (2, 2) if name == "hierarchical-local-sgd" else (1, 2)
    return TrainingConfig.model_validate(
        {
            "topology": {"nodes": nodes, "processesPerNode": per_node},
            "algorithm": {"name": name, **algorithm},
            "optimizer": {"momentum": 0.9, "nesterov": False, "weightDecay": 0, "warmupEpochs": 0},
            "training": {"epochs": 20},
        }
    )


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def train(algo, model, optimizer, rank, steps, before_sync=None, after_step=None) -> None:
    """The training loop of the algorithm contract, with observation points."""
    for step in steps:
        x, y = make_batch(rank, step)
        with algo.step_context(step):
            F.cross_entropy(algo.training_model()(x), y).backward()
        optimizer.step()
        if before_sync:
            before_sync(step)
        optimizer.zero_grad(set_to_none=True)
        algo.after_optimizer_step(step)
        if after_step:
            after_step(step)


def run_algorithm(config, rank, steps, *, model=None, momentum=0.9, steps_per_epoch=1):
    """Train a fresh model with `config`; returns (algo, model, per-step snapshots, rounds)."""
    model = model or make_model()
    ctx = make_dist_context(torch.device("cpu"))
    algo = build_algorithm(config, model, ctx, steps_per_epoch)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=momentum)
    snapshots, rounds = [], []

    def record(step: int) -> None:
        snapshots.append(snapshot(model))
        rounds.append(dict(algo.counters.rounds))

    train(algo, model, optimizer, rank, range(steps), after_step=record)
    return algo, model, snapshots, rounds


def parameter_names(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_parameters()]


def float_buffer_names(model: nn.Module) -> list[str]:
    return [name for name, b in model.named_buffers() if b.is_floating_point()]


def nbytes(model: nn.Module, names: list[str]) -> int:
    state = model.state_dict()
    return sum(state[n].numel() * state[n].element_size() for n in names)


def all_buffer_bytes(model: nn.Module) -> int:
    return sum(b.numel() * b.element_size() for b in model.buffers())


def identical(a: dict, b: dict, names: list[str] | None = None) -> bool:
    return all(torch.equal(a[n], b[n]) for n in names or a)


def ranks_identical(per_rank: list[dict], names: list[str] | None = None) -> bool:
    return all(identical(per_rank[0], other, names) for other in per_rank[1:])


def ring_all_reduce_sends(payload: int, ranks: int) -> int:
    """What one rank sends in a ring all-reduce (NCCL's and gloo's ring): a reduce-scatter
    then an all-gather, each ranks − 1 steps that pass one payload/ranks chunk on."""
    return round(2 * (ranks - 1) * payload / ranks)


def broadcast_share(payload: int, ranks: int) -> int:
    """A broadcast hands the payload to ranks − 1 receivers; one rank's share of that."""
    return round((ranks - 1) * payload / ranks)


def rounds_per_step(rounds: list[dict], scope: str = "global") -> list[int]:
    counts = [r[scope] for r in rounds]
    return [b - a for a, b in zip([0, *counts], counts, strict=False)]


# ---------------------------------------------------------------- 2-rank run


def h1_local_sgd_vs_mini_batch(rank: int) -> dict:
    """Local SGD with H=1 and mini-batch SGD (DDP), plain SGD, same seed and data."""
    steps = 6
    _, ddp_model, _, _ = run_algorithm(
        make_config("mini-batch-sgd"), rank, steps, model=make_model(batchnorm=False), momentum=0
    )
    _, local_model, _, _ = run_algorithm(
        make_config("local-sgd", localSteps=1),
        rank,
        steps,
        model=make_model(batchnorm=False),
        momentum=0,
    )
    return {
        "initial": snapshot(make_model(batchnorm=False)),
        "mini_batch": snapshot(ddp_model),
        "local_h1": snapshot(local_model),
    }


def mini_batch_payload(rank: int) -> dict:
    """Mini-batch SGD with BatchNorm; a comm hook measures what DDP's buckets really carry."""
    steps = 5
    model = make_model()
    ctx = make_dist_context(torch.device("cpu"))
    algo = build_algorithm(make_config("mini-batch-sgd"), model, ctx, 1)
    hook_bytes = {"total": 0}

    # Unannotated: DDP inspects the hook's annotations, which are strings here.
    def counting_allreduce(state, bucket):
        state["total"] += bucket.buffer().numel() * bucket.buffer().element_size()
        return allreduce_hook(None, bucket)

    algo.training_model().register_comm_hook(hook_bytes, counting_allreduce)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    params = []
    train(
        algo,
        model,
        optimizer,
        rank,
        range(steps),
        after_step=lambda s: params.append(snapshot(model)),
    )
    evaluated = snapshot(algo.synchronize_for_evaluation())
    return {
        "steps": steps,
        "counters": algo.counters.state_dict(),
        "hook_bytes": hook_bytes["total"],
        "snapshots": params,
        "evaluated": evaluated,
    }


def local_sgd_vs_periodic_averager(rank: int) -> dict:
    """Local SGD H=3 with momentum, next to plain SGD + torch's PeriodicModelAverager."""
    steps, period = 10, 3
    algo, model, snapshots, rounds = run_algorithm(
        make_config("local-sgd", localSteps=period), rank, steps
    )
    before_eval = snapshot(model)
    counters_before_eval = algo.counters.state_dict()
    evaluated = snapshot(algo.synchronize_for_evaluation())

    reference = make_model()
    optimizer = torch.optim.SGD(reference.parameters(), lr=LR, momentum=0.9)
    averager = PeriodicModelAverager(period=period, warmup_steps=0)
    # torch's averager averages when its counter % period == 0, its counter
    # starting at 0, i.e. also right after the first step; Lin et al. (and we)
    # average after H, 2H, ... steps. Starting its counter at 1 aligns the two.
    averager.step = 1
    for step in range(steps):
        x, y = make_batch(rank, step)
        F.cross_entropy(reference(x), y).backward()
        optimizer.step()
        averager.average_parameters(reference.parameters())
        optimizer.zero_grad(set_to_none=True)
    return {
        "steps": steps,
        "period": period,
        "snapshots": snapshots,
        "rounds": rounds,
        "counters": algo.counters.state_dict(),
        "before_eval": before_eval,
        "after_eval": snapshot(model),
        "counters_before_eval": counters_before_eval,
        "evaluated": evaluated,
        "torch_averager": snapshot(reference),
    }


POST_LOCAL = {"steps": 13, "steps_per_epoch": 3, "switch_epoch": 2, "H": 2}


def post_local_schedule(rank: int) -> dict:
    algo, _, snapshots, rounds = run_algorithm(
        make_config(
            "post-local-sgd", localSteps=POST_LOCAL["H"], switchEpoch=POST_LOCAL["switch_epoch"]
        ),
        rank,
        POST_LOCAL["steps"],
        steps_per_epoch=POST_LOCAL["steps_per_epoch"],
    )
    return {"snapshots": snapshots, "rounds": rounds, "counters": algo.counters.state_dict()}


def resume_matches(rank: int, config: TrainingConfig, total: int, checkpoints: list[int]) -> dict:
    """Train `total` steps straight, and again resuming from a checkpoint after each given step."""
    straight_algo, straight_model, _, _ = run_algorithm(config, rank, total, steps_per_epoch=2)
    resumed = {}
    for stop in checkpoints:
        model = make_model()
        ctx = make_dist_context(torch.device("cpu"))
        algo = build_algorithm(config, model, ctx, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        train(algo, model, optimizer, rank, range(stop + 1))
        buffer = io.BytesIO()
        torch.save(
            {"model": model.state_dict(), "opt": optimizer.state_dict(), "algo": algo.state_dict()},
            buffer,
        )
        del model, algo, optimizer
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)

        # A fresh process would start from another initialization; load order
        # (model before or after building the algorithm) must not matter.
        model = make_model(seed=123)
        load_model_first = stop % 2 == 1
        if load_model_first:
            model.load_state_dict(checkpoint["model"])
        algo = build_algorithm(config, model, make_dist_context(torch.device("cpu")), 2)
        if not load_model_first:
            model.load_state_dict(checkpoint["model"])
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
        optimizer.load_state_dict(checkpoint["opt"])
        algo.load_state_dict(checkpoint["algo"])
        train(algo, model, optimizer, rank, range(stop + 1, total))
        resumed[stop] = {"model": snapshot(model), "counters": algo.counters.state_dict()}
    return {
        "straight": {
            "model": snapshot(straight_model),
            "counters": straight_algo.counters.state_dict(),
        },
        "resumed": resumed,
    }


RESUME = {"total": 11, "checkpoints": [2, 6, 7]}


def two_rank_scenarios(rank: int, world_size: int) -> dict:
    post_local_ef = make_config(
        "post-local-sgd", localSteps=3, switchEpoch=2, compression="ef-sign"
    )
    local_sign = make_config("local-sgd", localSteps=2, compression="sign")
    return {
        "h1": h1_local_sgd_vs_mini_batch(rank),
        "mini_batch": mini_batch_payload(rank),
        "local": local_sgd_vs_periodic_averager(rank),
        "post_local": post_local_schedule(rank),
        "resume_post_local_ef": resume_matches(rank, post_local_ef, **RESUME),
        "resume_local_sign": resume_matches(rank, local_sign, **RESUME),
    }


# ---------------------------------------------------------------- 4-rank run (2 nodes × 2)

HIER = {"steps": 11, "H": 2, "H_b": 2}


def hierarchical_scenario(rank: int, world_size: int) -> dict:
    config = make_config("hierarchical-local-sgd", localSteps=HIER["H"], blockSteps=HIER["H_b"])
    ctx = make_dist_context(torch.device("cpu"))
    layout = {
        "node_rank": ctx.gang.node_rank,
        "local_rank": ctx.gang.local_rank,
        "local_world_size": ctx.gang.local_world_size,
        "group_size": dist.get_world_size(ctx.intra_node_group),
    }
    algo, _, snapshots, rounds = run_algorithm(config, rank, HIER["steps"])
    return {
        "layout": layout,
        "snapshots": snapshots,
        "rounds": rounds,
        "counters": algo.counters.state_dict(),
    }
