"""`dsgd report DIR`: the aggregation against numpy, and report.md's numbers (test and train
accuracy, generalization gap, to target, bytes, rounds, wall time) against the trials' own
summary.json and metrics.jsonl files.

The experiment directories here are written the way `dsgd experiment run` and the
trainer write them (experiment.json, per trial summary.json and metrics.jsonl),
with numbers drawn from a seeded generator; numpy recomputes every figure from
those files, independently of dsgd's aggregation.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from dsgd_operator.cli import main as dsgd
from dsgd_operator.experiments.aggregate import Stat

SEEDS = [0, 1, 2]
TARGET = 0.6


def write_trial(directory: Path, rng: random.Random, level: float, *, reach: bool) -> None:
    """A finished trial: 5 evaluations rising towards `level`; reaches TARGET iff `reach`."""
    directory.mkdir(parents=True)
    records, wall, sent = [], 0.0, 0
    for epoch in range(1, 6):
        wall += rng.uniform(1.0, 2.0)
        sent += rng.randrange(1_000_000, 2_000_000)
        accuracy = level * epoch / 5 + rng.uniform(-0.01, 0.01)
        if not reach:
            accuracy = min(accuracy, TARGET - 0.05)
        records.append(
            {
                "epoch": epoch,
                "samples": 1000 * epoch,
                "test_accuracy": accuracy,
                "train_accuracy": accuracy + rng.uniform(0.0, 0.05),
                "wall_seconds": wall,
                "communicated_bytes": sent,
                "sync_rounds": {"global": 10 * epoch, "intra_node": 0},
            }
        )
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (directory / "metrics.jsonl").write_text(lines)
    summary = {
        "algorithm": "local-sgd",
        "final_test_accuracy": records[-1]["test_accuracy"],
        "final_train_accuracy": records[-1]["train_accuracy"],
        "communicated_bytes": sent,
        "sync_rounds": {"global": 50 + rng.randrange(3), "intra_node": 0},
        "wall_seconds": wall + rng.uniform(0, 1),
    }
    (directory / "summary.json").write_text(json.dumps(summary))


def write_experiment(
    root: Path,
    levels: dict[str, float],
    never: set[str] = frozenset(),
    unfinished: set[str] = frozenset(),
    seeds: list[int] = SEEDS,
) -> Path:
    rng = random.Random(42)
    cells = [
        {"id": cell, "values": {"algorithm.localSteps": 2**i}, "description": f"H={2**i}"}
        for i, cell in enumerate(levels)
    ]
    trials = [
        {"name": f"exp-{cell}-s{seed}", "cell": cell, "seed": seed}
        for cell in levels
        for seed in seeds
    ]
    index = {
        "name": "exp",
        "axes": ["H"],
        "targetAccuracy": TARGET,
        "cells": cells,
        "trials": trials,
    }
    root.mkdir()
    (root / "experiment.json").write_text(json.dumps(index))
    for trial in trials:
        if trial["name"] in unfinished:
            (root / trial["name"]).mkdir()
            continue
        write_trial(
            root / trial["name"], rng, levels[trial["cell"]], reach=trial["name"] not in never
        )
    return root


def summaries(root: Path, cell: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob(f"exp-{cell}-s*/summary.json"))]


def records(root: Path, cell: str) -> list[list[dict]]:
    return [
        [json.loads(line) for line in p.read_text().splitlines()]
        for p in sorted(root.glob(f"exp-{cell}-s*/metrics.jsonl"))
    ]


def report_rows(root: Path) -> dict[str, list[str]]:
    """report.md's table: cell id → its cells, as text."""
    rows = {}
    for line in (root / "report.md").read_text().splitlines():
        parts = [part.strip() for part in line.strip().strip("|").split("|")]
        if re.fullmatch(r"c\d+", parts[0]):
            rows[parts[0]] = parts
    return rows


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"-?[\d,]+\.?\d*", text)]


def test_stat_is_numpys_mean_and_sample_std() -> None:
    values = [0.91, 0.87, 0.9, 0.88]
    stat = Stat.of(values)
    assert stat.mean == pytest.approx(np.mean(values), abs=1e-15)
    assert stat.std == pytest.approx(np.std(values, ddof=1), abs=1e-15)
    assert stat.n == 4
    assert Stat.of([0.5]) == Stat(0.5, None, 1)
    assert Stat.of([]) == Stat(None, None, 0)


def test_report_numbers_equal_the_trials_summaries(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", {"c0": 0.9, "c1": 0.7})
    assert dsgd(["report", str(root)]) == 0
    rows = report_rows(root)
    assert set(rows) == {"c0", "c1"}
    for cell in ("c0", "c1"):
        row, runs = rows[cell], summaries(root, cell)
        assert row[1] == {"c0": "H=1", "c1": "H=2"}[cell] and row[2] == "3"
        accuracy = 100 * np.array([r["final_test_accuracy"] for r in runs])
        mean, std = numbers(row[3])
        assert mean == pytest.approx(accuracy.mean(), abs=0.005)
        assert std == pytest.approx(accuracy.std(ddof=1), abs=0.005)
        train = 100 * np.array([r["final_train_accuracy"] for r in runs])
        assert numbers(row[4]) == pytest.approx([train.mean(), train.std(ddof=1)], abs=0.005)
        gap = train - accuracy  # per seed, then over seeds: not the difference of the means' stds
        assert numbers(row[5]) == pytest.approx([gap.mean(), gap.std(ddof=1)], abs=0.005)
        sent = np.array([r["communicated_bytes"] for r in runs]) / 1e6
        assert numbers(row[9]) == pytest.approx([sent.mean(), sent.std(ddof=1)], abs=0.05)
        rounds = np.array([r["sync_rounds"]["global"] for r in runs], dtype=float)
        assert numbers(row[10]) == pytest.approx([rounds.mean(), rounds.std(ddof=1)], abs=0.05)
        wall = np.array([r["wall_seconds"] for r in runs])
        assert numbers(row[11]) == pytest.approx([wall.mean(), wall.std(ddof=1)], abs=0.05)
        # To target: the first evaluation at or above it, per seed.
        first = [
            next(r for r in curve if r["test_accuracy"] >= TARGET) for curve in records(root, cell)
        ]
        for column, key, scale in (
            (6, "wall_seconds", 1),
            (7, "samples", 1),
            (8, "communicated_bytes", 1e-6),
        ):
            values = np.array([r[key] for r in first]) * scale
            assert numbers(row[column]) == pytest.approx(
                [values.mean(), values.std(ddof=1)], abs=0.05 if key != "samples" else 0.5
            ), (cell, key)


def test_seeds_missing_the_target_are_counted_not_averaged(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", {"c0": 0.9}, never={"exp-c0-s1"})
    assert dsgd(["report", str(root)]) == 0
    row = report_rows(root)["c0"]
    assert row[7].endswith("(2/3 seeds)")
    reached = [
        next(r for r in curve if r["test_accuracy"] >= TARGET)
        for i, curve in enumerate(records(root, "c0"))
        if i != 1
    ]
    samples = np.array([r["samples"] for r in reached])
    assert numbers(row[7].split("(")[0]) == pytest.approx(
        [samples.mean(), samples.std(ddof=1)], abs=0.5
    )


def test_a_difference_within_the_seeds_spread_is_said_to_be_one(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", {"c0": 0.9, "c1": 0.9, "c2": 0.7})
    finals = {"c0": [0.90, 0.92, 0.88], "c1": [0.895, 0.915, 0.875], "c2": [0.70, 0.71, 0.69]}
    for cell, values in finals.items():
        for seed, value in zip(SEEDS, values, strict=True):
            path = root / f"exp-{cell}-s{seed}" / "summary.json"
            path.write_text(
                json.dumps({**json.loads(path.read_text()), "final_test_accuracy": value})
            )
    assert dsgd(["report", str(root)]) == 0
    text = (root / "report.md").read_text()
    accuracy = {
        c: np.array([r["final_test_accuracy"] for r in summaries(root, c)])
        for c in ("c0", "c1", "c2")
    }
    best = max(accuracy, key=lambda c: accuracy[c].mean())
    for cell in set(accuracy) - {best}:
        gap = 100 * (accuracy[best].mean() - accuracy[cell].mean())
        spread = 100 * (accuracy[best].std(ddof=1) + accuracy[cell].std(ddof=1))
        line = next(line for line in text.splitlines() if line.startswith(f"- {cell} is"))
        assert f"{gap:.2f} points below {best}" in line
        if gap <= spread:
            assert "within the noise" in line
        else:
            assert "beyond the seeds' spread" in line
    # c1 is 0.5 points below c0 with 2-point standard deviations; c2 is 20 points below.
    assert "within the noise" in text and "beyond the seeds' spread" in text


def test_unfinished_trials_are_left_out_and_named(tmp_path) -> None:
    root = write_experiment(
        tmp_path / "exp", {"c0": 0.9, "c1": 0.8}, unfinished={"exp-c1-s0", "exp-c1-s2"}
    )
    assert dsgd(["report", str(root)]) == 0
    rows = report_rows(root)
    assert (rows["c0"][2], rows["c1"][2]) == ("3", "1")
    assert "±" not in rows["c1"][3]  # one seed: no spread to show
    text = (root / "report.md").read_text()
    assert "4 of 6 trials finished" in text
    assert "Not finished (left out): exp-c1-s0, exp-c1-s2." in text
    assert "single seed" in text


def test_html_is_self_contained_and_figures_are_pngs(tmp_path) -> None:
    root = write_experiment(tmp_path / "exp", {"c0": 0.9, "c1": 0.7})
    assert dsgd(["report", str(root), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    page = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page
    for name in ("accuracy-vs-epochs", "accuracy-vs-time", "accuracy-vs-bytes"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_directory_without_an_experiment_is_one_line(tmp_path, capsys) -> None:
    assert dsgd(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"dsgd report: {tmp_path}/experiment.json: no such file\n"
