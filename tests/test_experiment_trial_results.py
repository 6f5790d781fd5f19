"""An experiment's status on a cluster from its trials' job results: per-trial entries,
per-cell figures (against numpy), the best cell, and the report's cells.

The oracle is numpy (mean, std with ddof=1) and the target rule transcribed here:
the first evaluation whose test accuracy reaches spec.targetAccuracy.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from dsgd_contract.run_results import RunResults
from dsgd_operator.experiments.grid import expand_trials
from dsgd_operator.experiments.manifest import parse_experiment
from dsgd_operator.experiments.trial_results import (
    best_cell,
    cell_results,
    finished_trial,
    report_cells,
)

TARGET = 0.8


def experiment():
    return parse_experiment(
        {
            "apiVersion": "dsgd.io/v1alpha1",
            "kind": "SGDExperiment",
            "metadata": {"name": "lin", "uid": "u-1"},
            "spec": {
                "template": {"training": {"model": "mlp", "epochs": 3}},
                "axes": [{"field": "optimizer.learningRate", "values": [0.05, 0.1]}],
                "seeds": [0, 1, 2],
                "targetAccuracy": TARGET,
            },
        }
    )


def results(rng: random.Random) -> RunResults:
    curve = [
        {
            "epoch": e,
            "samples": 100 * e,
            "wall_seconds": 2.0 * e + rng.random(),
            "train_loss": 1.0 / e,
            "test_accuracy": min(0.99, 0.55 + 0.12 * e + rng.random() / 10),
            "communicated_bytes": 1000 * e,
        }
        for e in range(1, 5)
    ]
    return RunResults.model_validate(
        {
            "finalTestAccuracy": curve[-1]["test_accuracy"],
            "finalTrainAccuracy": min(1.0, curve[-1]["test_accuracy"] + rng.random() / 20),
            "wallSeconds": curve[-1]["wall_seconds"],
            "communicatedBytes": 4000 + rng.randrange(100),
            "samples": 400,
            "syncRounds": {"global": rng.randrange(10, 20)},
            "evaluations": 4,
            "curve": curve,
        }
    )


def test_cells_aggregate_succeeded_seeds_as_numpy_does() -> None:
    exp = experiment()
    rng = random.Random(7)
    trials = expand_trials(exp.spec)
    runs = {t.name("lin"): results(rng) for t in trials}
    # c1's last seed failed: counted, not averaged.
    failed = trials[-1].name("lin")
    entries = [
        finished_trial(
            exp, t, "Failed" if t.name("lin") == failed else "Succeeded", runs[t.name("lin")]
        )
        for t in trials
    ]
    cells = cell_results(exp, entries)
    assert [c.cell for c in cells] == ["c0", "c1"]
    for cell in cells:
        ok = [t for t in trials if t.cell.id == cell.cell and t.name("lin") != failed]
        accuracy = np.array([runs[t.name("lin")].final_test_accuracy for t in ok])
        assert cell.final_test_accuracy.seeds == len(ok)
        assert cell.final_test_accuracy.mean == pytest.approx(accuracy.mean())
        assert cell.final_test_accuracy.std == pytest.approx(accuracy.std(ddof=1))
        train = np.array([runs[t.name("lin")].final_train_accuracy for t in ok])
        assert cell.final_train_accuracy.mean == pytest.approx(train.mean())
        assert cell.final_train_accuracy.std == pytest.approx(train.std(ddof=1))
        gap = train - accuracy  # per seed, then aggregated
        assert cell.generalization_gap.mean == pytest.approx(gap.mean())
        assert cell.generalization_gap.std == pytest.approx(gap.std(ddof=1))
        assert cell.generalization_gap.seeds == len(ok)
        rounds = np.array([runs[t.name("lin")].sync_rounds["global"] for t in ok])
        assert cell.global_sync_rounds.mean == pytest.approx(rounds.mean())
        reached = [
            next(p for p in runs[t.name("lin")].curve if p.test_accuracy >= TARGET) for t in ok
        ]
        seconds = np.array([p.wall_seconds for p in reached])
        assert cell.time_to_target.seeds == len(reached)
        assert cell.time_to_target.mean == pytest.approx(seconds.mean())
        assert cell.bytes_to_target.mean == pytest.approx(
            np.mean([p.communicated_bytes for p in reached])
        )
    assert (cells[0].succeeded, cells[0].failed, cells[1].succeeded, cells[1].failed) == (
        3,
        0,
        2,
        1,
    )
    best = best_cell(cells)
    top = max(cells, key=lambda c: c.final_test_accuracy.mean)
    assert (best.cell, best.test_accuracy) == (top.cell, top.final_test_accuracy.mean)


def test_report_cells_take_curves_from_children_and_figures_from_finished_trials() -> None:
    exp = experiment()
    rng = random.Random(3)
    trials = expand_trials(exp.spec)
    runs = {t.name("lin"): results(rng) for t in trials}
    entries = [finished_trial(exp, t, "Succeeded", runs[t.name("lin")]) for t in trials]
    # The first trial's job is gone (its TTL), the last has not finished.
    children = [
        {
            "metadata": {"name": t.name("lin")},
            "status": {"results": runs[t.name("lin")].model_dump(by_alias=True)},
        }
        for t in trials[1:-1]
    ]
    index, cells = report_cells(exp, children, entries[:-1])
    assert index["name"] == "lin" and len(index["trials"]) == 6
    c0, c1 = cells
    assert [t.name for t in c0.trials] == [t.name("lin") for t in trials[:3]]
    assert c0.trials[0].records == []  # from finishedTrials: figures, no curve
    assert len(c0.trials[1].records) == 4
    assert c1.unfinished == [trials[-1].name("lin")]
    expected = np.mean([runs[t.name("lin")].final_test_accuracy for t in trials[:3]])
    assert c0.summary_stat("final_test_accuracy").mean == pytest.approx(expected)
    # The gap reaches the report both from a child's results and from a kept entry.
    gap = [
        runs[t.name("lin")].final_train_accuracy - runs[t.name("lin")].final_test_accuracy
        for t in trials[:3]
    ]
    assert c0.generalization_gap().mean == pytest.approx(np.mean(gap))
    assert c0.generalization_gap().std == pytest.approx(np.std(gap, ddof=1))
