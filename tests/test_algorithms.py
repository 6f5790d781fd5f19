"""The distributed SGD algorithms, run on real gloo ranks (CPU processes).

Three multi-process runs (module-scoped fixtures) record what happens at every
step; the tests below assert on the records. Expected counts and bytes are
computed here from the model's shapes and docs/algorithms.md's formulas, not taken
from the code under test. Pure functions (bit packing, sign compression) are
tested in this process.
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
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager

from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401

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


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_on_ranks(two_rank_scenarios, 2, tmp_path_factory.mktemp("two-ranks"), timeout=120)


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


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_on_ranks(
        hierarchical_scenario, 4, tmp_path_factory.mktemp("four-ranks"), local_world_size=2
    )


# ---------------------------------------------------------------- tests: equivalences


def test_local_sgd_with_h1_equals_mini_batch_sgd(two_ranks: list[dict]) -> None:
    for result in two_ranks:
        h1 = result["h1"]
        for name, mini in h1["mini_batch"].items():
            assert not torch.equal(mini, h1["initial"][name]), "training did not move"
            torch.testing.assert_close(h1["local_h1"][name], mini, rtol=1e-5, atol=1e-7)
    assert ranks_identical([r["h1"]["local_h1"] for r in two_ranks])


def test_local_sgd_agrees_with_torch_periodic_model_averager(two_ranks: list[dict]) -> None:
    model = make_model()
    for result in two_ranks:
        local = result["local"]
        for name in parameter_names(model):
            torch.testing.assert_close(
                local["snapshots"][-1][name], local["torch_averager"][name], rtol=0, atol=1e-6
            )


# ---------------------------------------------------------------- tests: replicas


def test_local_sgd_replicas_identical_exactly_at_global_averagings(two_ranks: list[dict]) -> None:
    model, period = make_model(), two_ranks[0]["local"]["period"]
    params = parameter_names(model)
    for step in range(two_ranks[0]["local"]["steps"]):
        per_rank = [r["local"]["snapshots"][step] for r in two_ranks]
        if (step + 1) % period == 0:
            assert ranks_identical(per_rank), f"step {step}: replicas differ after averaging"
        else:
            assert not ranks_identical(per_rank, params), f"step {step}: unexpected sync"


def test_mini_batch_replicas_share_parameters_and_evaluate_with_rank0_buffers(
    two_ranks: list[dict],
) -> None:
    params = parameter_names(make_model())
    for step_snapshots in zip(*(r["mini_batch"]["snapshots"] for r in two_ranks), strict=True):
        assert ranks_identical(list(step_snapshots), params)
    assert ranks_identical([r["mini_batch"]["evaluated"] for r in two_ranks])
    assert identical(
        two_ranks[1]["mini_batch"]["evaluated"], two_ranks[0]["mini_batch"]["snapshots"][-1]
    )


def test_evaluation_averages_a_copy_without_touching_training_state(two_ranks: list[dict]) -> None:
    model = make_model()
    averaged = parameter_names(model) + float_buffer_names(model)
    for result in two_ranks:
        local = result["local"]
        assert identical(local["before_eval"], local["after_eval"])
        assert local["counters"] == local["counters_before_eval"]
        for name in averaged:
            mean = sum(r["local"]["before_eval"][name] for r in two_ranks) / len(two_ranks)
            torch.testing.assert_close(local["evaluated"][name], mean)
    assert not ranks_identical([r["local"]["before_eval"] for r in two_ranks], averaged)


def test_hierarchical_groups_follow_the_node_layout(four_ranks: list[dict]) -> None:
    layouts = [r["layout"] for r in four_ranks]
    assert [(lay["node_rank"], lay["local_rank"]) for lay in layouts] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    assert all(lay["local_world_size"] == 2 and lay["group_size"] == 2 for lay in layouts)


def test_hierarchical_averages_within_nodes_then_globally(four_ranks: list[dict]) -> None:
    h, hb = HIER["H"], HIER["H_b"]
    params = parameter_names(make_model())
    for step in range(HIER["steps"]):
        snaps = [r["snapshots"][step] for r in four_ranks]
        node0, node1 = snaps[:2], snaps[2:]
        if (step + 1) % (h * hb) == 0:
            assert ranks_identical(snaps), f"step {step}: global averaging left differences"
        elif (step + 1) % h == 0:
            assert ranks_identical(node0) and ranks_identical(node1), f"step {step}: intra-node"
            assert not identical(node0[0], node1[0], params), f"step {step}: nodes should differ"
        else:
            assert not ranks_identical(node0, params) and not ranks_identical(node1, params)


# ---------------------------------------------------------------- tests: rounds and bytes


def test_mini_batch_counts_one_round_and_the_gradient_payload_per_step(
    two_ranks: list[dict],
) -> None:
    model = make_model()
    grad_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    for result in two_ranks:
        mini = result["mini_batch"]
        steps = mini["steps"]
        assert mini["hook_bytes"] == steps * grad_bytes  # what DDP's buckets really carried
        assert mini["counters"]["rounds"] == {
            "global": steps,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        # + DDP's broadcast of all buffers (num_batches_tracked included) before each forward
        payload = steps * (grad_bytes + all_buffer_bytes(model))
        assert mini["counters"]["payload_bytes"] == {
            "global": payload,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        wire = steps * (
            ring_all_reduce_sends(grad_bytes, 2) + broadcast_share(all_buffer_bytes(model), 2)
        )
        assert mini["counters"]["bytes"] == {"global": wire, "intra_node": 0, "push": 0, "fetch": 0}


def test_local_sgd_counts_floor_s_over_h_rounds(two_ranks: list[dict]) -> None:
    model = make_model()
    dense = nbytes(model, parameter_names(model) + float_buffer_names(model))
    for result in two_ranks:
        local = result["local"]
        rounds = local["steps"] // local["period"]
        assert local["counters"]["rounds"] == {
            "global": rounds,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        assert local["counters"]["payload_bytes"] == {
            "global": rounds * dense,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        wire = rounds * ring_all_reduce_sends(dense, 2)
        assert local["counters"]["bytes"] == {
            "global": wire,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }


def test_hierarchical_counts_match_the_formula(four_ranks: list[dict]) -> None:
    model = make_model()
    dense = nbytes(model, parameter_names(model) + float_buffer_names(model))
    s, h, hb = HIER["steps"], HIER["H"], HIER["H_b"]
    global_rounds, intra_rounds = s // (h * hb), s // h - s // (h * hb)
    assert (global_rounds, intra_rounds) == (2, 3)
    for result in four_ranks:
        assert result["counters"]["rounds"] == {
            "global": global_rounds,
            "intra_node": intra_rounds,
            "push": 0,
            "fetch": 0,
        }
        assert result["counters"]["payload_bytes"] == {
            "global": global_rounds * dense,
            "intra_node": intra_rounds * dense,
            "push": 0,
            "fetch": 0,
        }
        # 4 ranks globally (each sends 1.5 × the payload), 2 within a node (1 ×).
        assert result["counters"]["bytes"] == {
            "global": global_rounds * ring_all_reduce_sends(dense, 4),
            "intra_node": intra_rounds * ring_all_reduce_sends(dense, 2),
            "push": 0,
            "fetch": 0,
        }
        assert ring_all_reduce_sends(dense, 4) == 3 * dense // 2


def test_post_local_syncs_gradients_every_step_then_parameters_every_h(
    two_ranks: list[dict],
) -> None:
    steps, h = POST_LOCAL["steps"], POST_LOCAL["H"]
    switch = POST_LOCAL["switch_epoch"] * POST_LOCAL["steps_per_epoch"]
    expected = [1 if s < switch or (s + 1 - switch) % h == 0 else 0 for s in range(steps)]
    assert expected == [1] * 6 + [0, 1, 0, 1, 0, 1, 0]
    model = make_model()
    params = parameter_names(model)
    for result in two_ranks:
        assert rounds_per_step(result["post_local"]["rounds"]) == expected
        counters = result["post_local"]["counters"]
        local_rounds = (steps - switch) // h
        assert counters["rounds"] == {
            "global": switch + local_rounds,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        grad_bytes = nbytes(model, params)
        dense = nbytes(model, params + float_buffer_names(model))
        mini = switch * (grad_bytes + all_buffer_bytes(model))
        switch_broadcast = all_buffer_bytes(model)
        payload = mini + switch_broadcast + local_rounds * dense
        assert counters["payload_bytes"]["global"] == payload
        wire = (
            switch * (ring_all_reduce_sends(grad_bytes, 2) + broadcast_share(switch_broadcast, 2))
            + broadcast_share(switch_broadcast, 2)
            + local_rounds * ring_all_reduce_sends(dense, 2)
        )
        assert counters["bytes"]["global"] == wire
    for step in range(steps):
        snaps = [r["post_local"]["snapshots"][step] for r in two_ranks]
        if step < switch - 1:
            assert ranks_identical(snaps, params)  # BatchNorm stats are rank-local until the switch
        elif step == switch - 1 or expected[step]:
            assert ranks_identical(snaps), f"step {step}"
        else:
            assert not ranks_identical(snaps, params), f"step {step}: unexpected sync"


def test_compressed_post_local_counts_both_phases(two_ranks: list[dict]) -> None:
    model = make_model()
    switch, h, total = 2 * 2, 3, RESUME["total"]  # switchEpoch 2 × 2 steps per epoch
    grad_bytes = nbytes(model, parameter_names(model))
    # int8 sign sums (one byte per element) + one float32 scale per tensor
    signs = sum(p.numel() for p in model.parameters())
    scales = 4 * len(list(model.parameters()))
    buffers = nbytes(model, float_buffer_names(model))
    local_rounds = (total - switch) // h
    expected_payload = (
        switch * (grad_bytes + all_buffer_bytes(model))  # DDP steps
        + all_buffer_bytes(model)  # rank 0's buffers at the switch
        + local_rounds * (signs + scales + buffers)
    )
    expected_wire = (
        switch
        * (ring_all_reduce_sends(grad_bytes, 2) + broadcast_share(all_buffer_bytes(model), 2))
        + broadcast_share(all_buffer_bytes(model), 2)
        + local_rounds * sum(ring_all_reduce_sends(part, 2) for part in (signs, scales, buffers))
    )
    for result in two_ranks:
        counters = result["resume_post_local_ef"]["straight"]["counters"]
        assert counters["rounds"] == {
            "global": switch + local_rounds,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        assert counters["payload_bytes"] == {
            "global": expected_payload,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        assert counters["bytes"] == {
            "global": expected_wire,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }


@pytest.mark.parametrize("case", ["resume_post_local_ef", "resume_local_sign"])
def test_state_dict_round_trip_resumes_identically(two_ranks: list[dict], case: str) -> None:
    for result in two_ranks:
        straight = result[case]["straight"]
        for stop, resumed in result[case]["resumed"].items():
            assert identical(resumed["model"], straight["model"]), f"resumed after step {stop}"
            assert resumed["counters"]["rounds"] == straight["counters"]["rounds"]
            assert resumed["counters"]["bytes"] == straight["counters"]["bytes"]


# ---------------------------------------------------------------- tests: pure functions


def test_counters_refuse_unknown_scopes() -> None:
    from dsgd_trainer.algorithms import SyncCounters
    from dsgd_trainer.algorithms.traffic import Traffic

    counters = SyncCounters()
    counters.record("intra_node", Traffic(payload=10, wire=15))
    assert counters.rounds == {"global": 0, "intra_node": 1, "push": 0, "fetch": 0}
    assert counters.payload_bytes == {"global": 0, "intra_node": 10, "push": 0, "fetch": 0}
    assert counters.bytes == {"global": 0, "intra_node": 15, "push": 0, "fetch": 0}
    with pytest.raises(ValueError, match="scope"):
        counters.record("cluster", Traffic(1, 1))


def test_state_of_another_algorithm_is_refused() -> None:
    from dsgd_trainer.algorithms import DistContext
    from dsgd_trainer.algorithms.local_sgd import LocalSGD
    from dsgd_trainer.gang import GangPosition

    ctx = DistContext(GangPosition(0, 1, 0, 1, 0), torch.device("cpu"), None)
    algo = LocalSGD(make_model(), make_config("local-sgd"), ctx, 1)
    state = copy.deepcopy(algo.state_dict())
    state["algorithm"] = "mini-batch-sgd"
    with pytest.raises(ValueError, match="mini-batch-sgd"):
        algo.load_state_dict(state)
