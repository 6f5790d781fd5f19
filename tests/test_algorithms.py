"""The distributed SGD algorithms, run on real gloo ranks (CPU processes).

Multi-process runs (module-scoped fixtures; the scenarios in _algorithm_scenarios.py)
record what happens at every step; the tests below assert on the records. Expected
counts and bytes are computed from the model's shapes and docs/algorithms.md's
formulas, not taken from the code under test. Pure functions (bit packing, sign
compression) are tested in this process.
"""

from __future__ import annotations

import copy

import pytest
import torch

from ._algorithm_scenarios import (
    HIER,
    POST_LOCAL,
    RESUME,
    all_buffer_bytes,
    broadcast_share,
    float_buffer_names,
    hierarchical_scenario,
    identical,
    make_config,
    make_model,
    nbytes,
    parameter_names,
    ranks_identical,
    ring_all_reduce_sends,
    rounds_per_step,
    two_rank_scenarios,
)
from ._dist_harness import forkserver_stopped_after_module, run_on_ranks  # noqa: F401


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return run_on_ranks(two_rank_scenarios, 2, tmp_path_factory.mktemp("two-ranks"), timeout=120)


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
