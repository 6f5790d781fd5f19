"""The time-to-accuracy benchmark's analysis (benchmarks/time_to_accuracy_analysis.py) on
hand-made curves: time to target, the no-communication lower bound and its ratio, the
speed-ups, and the goals, blocking and overlapped, against figures computed by hand."""

from __future__ import annotations

import pytest

from tests.test_benchmarks_smoke import import_benchmark


def evaluation_points(accuracies: list[float], seconds_per_eval: float) -> list[dict]:
    """A curve of evaluations 100 samples apart, `seconds_per_eval` of training each."""
    return [
        {
            "samples": 100 * (i + 1),
            "test_accuracy": a,
            "train_seconds": seconds_per_eval * (i + 1),
            "wall_seconds": 0.0,
        }
        for i, a in enumerate(accuracies)
    ]


def test_time_to_target_and_lower_bound_ratio_come_from_the_curves() -> None:
    pytest.importorskip("matplotlib", reason="the benchmarks' figures need matplotlib (bench)")
    tta = import_benchmark("time_to_accuracy")
    points = evaluation_points

    runs = {
        "mini-batch": {"curve": points([0.5, 0.7, 0.8, 0.85], 10.0), "final_test_accuracy": 0.85},
        "local-h16": {
            "curve": points([0.6, 0.8, 0.84, 0.846], 2.4),
            "final_test_accuracy": 0.846,
            "algorithm": {"name": "local-sgd", "localSteps": 16},
            "sync_rounds": {"global": 4, "intra_node": 0},
            "communication_seconds": 1.6,  # 0.4 s per averaging
        },
        "no-communication": {
            "curve": points([0.3, 0.4, 0.5, 0.5], 2.0),
            "final_test_accuracy": 0.5,
            "train_seconds": 8.0,
            "steps": 64,  # 0.125 s of compute per step
        },
    }
    tta.analyze(runs, target=0.8)
    assert runs["mini-batch"]["time_to_target"] == 30.0  # third evaluation
    assert runs["local-h16"]["time_to_target"] == 4.8  # second evaluation
    assert runs["local-h16"]["samples_to_target"] == 200
    assert runs["local-h16"]["lower_bound_seconds"] == 4.0  # no-comm time at 200 samples
    assert runs["local-h16"]["ratio_to_lower_bound"] == pytest.approx(1.2)
    assert runs["local-h16"]["speedup_vs_mini_batch"] == pytest.approx(6.25)
    assert runs["no-communication"]["time_to_target"] is None
    goal = tta.check_goal(runs, "50mbit")
    checks = goal["checks"]
    assert checks["speedup_vs_mini_batch_at_least_3"]["met"]
    assert checks["ratio_to_lower_bound_at_most_1.2"]["met"]  # exactly 1.2
    assert checks["final_accuracy_drop_at_most_0.5_points"]["met"]  # 0.4 points
    assert goal["met"]
    cost = goal["where_the_time_goes"]
    assert cost["c"] == pytest.approx(0.4 / 0.125)
    assert cost["ideal_ratio_to_lower_bound"] == pytest.approx(1 + 3.2 / 16)
    assert cost["local_steps_needed_for_1.2"] == pytest.approx(16)
    runs["local-h16"]["final_test_accuracy"] = 0.84  # 1 point below: the goal fails
    assert not tta.check_goal(runs, "50mbit")["met"]
    # The overlap goals, beside the blocking run of the same H.
    runs["local-h16-overlap"] = {
        **runs["local-h16"],
        "label": "local SGD, H=16, overlapSteps=16",
        "curve": points([0.6, 0.8, 0.84, 0.846], 2.1),
        "communication_seconds": 0.2,  # 0.05 s per averaging left exposed
    }
    tta.analyze(runs, target=0.8)
    overlap = tta.check_overlap_goals(runs, "50mbit")["runs"]["local-h16-overlap"]
    assert overlap["checks"]["ratio_to_lower_bound"]["value"] == pytest.approx(4.2 / 4.0)
    assert overlap["checks"]["ratio_to_lower_bound"]["met"]  # 1.05 ≤ 1.10
    assert not overlap["checks"]["final_accuracy_drop_points"]["met"]  # 1 point (set above)
    assert overlap["blocking_ratio_to_lower_bound"] == pytest.approx(1.2)
    assert overlap["blocking_steps_per_averaging"] == pytest.approx(0.4 / 0.125)
    assert overlap["exposed_steps_per_averaging"] == pytest.approx(0.05 / 0.125)
    # τ < H (local-h16-overlap8) is held to its H's goal, beside the same blocking run.
    runs["local-h16-overlap8"] = {
        **runs["local-h16-overlap"],
        "label": "local SGD, H=16, overlapSteps=8",
        "curve": points([0.6, 0.8, 0.84, 0.846], 2.3),
    }
    tta.analyze(runs, target=0.8)
    shorter = tta.check_overlap_goals(runs, "50mbit")["runs"]["local-h16-overlap8"]
    assert shorter["checks"]["ratio_to_lower_bound"]["limit"] == 1.10
    assert not shorter["checks"]["ratio_to_lower_bound"]["met"]  # 4.6 / 4.0 = 1.15
    assert shorter["blocking_ratio_to_lower_bound"] == pytest.approx(1.2)
    # Between two evaluations the lower bound is interpolated in samples.
    assert tta.seconds_at_samples(runs["no-communication"]["curve"], 150) == 3.0
    assert tta.seconds_at_samples(runs["no-communication"]["curve"], 500) is None


# --- the benchmarks, tiny ------------------------------------------------------------------
