"""An experiment's results per grid cell, aggregated over seeds (pure functions, no numpy).

Input: an experiment directory as `dsgd experiment run` leaves it:
`experiment.json` (cells and trials) and, per trial, the trainer's
`summary.json` (present once the trial finished) and `metrics.jsonl` (one
record per evaluation). Output: per cell the mean, sample standard deviation
(n − 1; none for one seed) and n of each figure, the curves over seeds, and
plain statements comparing each cell with the best one.

Time / samples / bytes to target are read at the first evaluation whose test
accuracy reaches the target: wall seconds since the trial started, samples
seen by all ranks, and bytes rank 0 sent. Seeds that never reach it are
counted, not averaged in.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsgd_contract.experiment import EXPERIMENT_FILE, METRICS_FILE, SUMMARY_FILE


class ReportError(ValueError):
    """The directory holds no usable experiment; the message says which file and why."""


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for n < 2) and n of one figure over seeds."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        if not values:
            return cls(None, None, 0)
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class TrialResult:
    """One finished trial: its summary.json and its metrics.jsonl records."""

    name: str
    seed: int
    summary: dict[str, Any]
    records: list[dict[str, Any]]


@dataclass
class CellResult:
    """One grid cell: its axis values, its finished trials, and the aggregates over them."""

    id: str
    description: str
    values: dict[str, Any]
    trials: list[TrialResult] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.trials)

    def summary_stat(self, key: str) -> Stat:
        return Stat.of([t.summary[key] for t in self.trials if t.summary.get(key) is not None])

    def generalization_gap(self) -> Stat:
        """Final train accuracy − final test accuracy per seed (seeds with both)."""
        return Stat.of(
            [
                t.summary["final_train_accuracy"] - t.summary["final_test_accuracy"]
                for t in self.trials
                if t.summary.get("final_train_accuracy") is not None
                and t.summary.get("final_test_accuracy") is not None
            ]
        )

    def sync_rounds(self, scope: str) -> Stat:
        return Stat.of([t.summary.get("sync_rounds", {}).get(scope, 0) for t in self.trials])

    def to_target(self, target: float | None, key: str) -> tuple[Stat, int]:
        """`key` (wall_seconds, samples, communicated_bytes) at the target; and how many
        of the seeds reached it."""
        if target is None:
            return Stat.of([]), 0
        reached = [r for t in self.trials if (r := first_reaching(t.records, target))]
        return Stat.of([r[key] for r in reached]), len(reached)


def first_reaching(records: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluation record whose test accuracy is at least `target`, or None."""
    return next((r for r in records if r.get("test_accuracy", -1.0) >= target), None)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ReportError(f"{path}: unreadable: {error}") from None


def read_records(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a line cut short (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def load_cells(directory: Path) -> tuple[dict[str, Any], list[CellResult]]:
    """experiment.json's index and the cells with their finished trials' results."""
    index = read_json(directory / EXPERIMENT_FILE)
    if not isinstance(index, dict) or "cells" not in index or "trials" not in index:
        raise ReportError(f"{directory / EXPERIMENT_FILE}: not an experiment index")
    cells = {c["id"]: CellResult(c["id"], c["description"], c["values"]) for c in index["cells"]}
    for trial in index["trials"]:
        trial_dir = directory / trial["name"]
        cell = cells[trial["cell"]]
        if not (trial_dir / SUMMARY_FILE).is_file():
            cell.unfinished.append(trial["name"])
            continue
        summary = read_json(trial_dir / SUMMARY_FILE)
        records = read_records(trial_dir / METRICS_FILE)
        cell.trials.append(TrialResult(trial["name"], trial["seed"], summary, records))
    return index, list(cells.values())


def best_cell(cells: list[CellResult]) -> CellResult | None:
    """The cell with the highest mean final test accuracy (None if no cell finished a trial)."""
    scored = [c for c in cells if c.summary_stat("final_test_accuracy").mean is not None]
    return max(scored, key=lambda c: c.summary_stat("final_test_accuracy").mean, default=None)


def comparisons(cells: list[CellResult]) -> list[str]:
    """Each cell against the best, in words; within the seeds' spread is said to be so.

    The spread is the sum of the two cells' standard deviations (as in Lin et al.'s
    tables, mean ± std over seeds): a smaller difference is no evidence either way.
    """
    best = best_cell(cells)
    if best is None:
        return ["No trial has finished yet."]
    top = best.summary_stat("final_test_accuracy")
    lines = [
        f"Best: {best.id} ({best.description or 'the template'}) with "
        f"{percent(top.mean)} final test accuracy (n = {top.n})."
    ]
    for cell in cells:
        stat = cell.summary_stat("final_test_accuracy")
        if cell is best or stat.mean is None:
            continue
        gap = 100 * (top.mean - stat.mean)
        if top.std is None or stat.std is None:
            lines.append(
                f"{cell.id} is {gap:.2f} points below {best.id}; with a single seed on one "
                "side the seeds' spread is unknown, so this is no evidence of a difference."
            )
            continue
        spread = 100 * (top.std + stat.std)
        if gap <= spread:
            lines.append(
                f"{cell.id} is {gap:.2f} points below {best.id}, less than the seeds' spread "
                f"({spread:.2f} points): the difference is within the noise."
            )
        else:
            lines.append(
                f"{cell.id} is {gap:.2f} points below {best.id}, beyond the seeds' spread "
                f"({spread:.2f} points)."
            )
    return lines


def mean_curve(
    trials: list[TrialResult], x_key: str
) -> tuple[list[float], list[float], list[float | None]]:
    """(x, mean test accuracy, std) per evaluation index over seeds, as long as all have one.

    Seeds evaluate at the same epochs; their x (wall time, bytes) differ a little and
    is averaged too.
    """
    length = min((len(t.records) for t in trials), default=0)
    xs, ys, stds = [], [], []
    for i in range(length):
        x = Stat.of([float(t.records[i][x_key]) for t in trials])
        y = Stat.of([float(t.records[i]["test_accuracy"]) for t in trials])
        xs.append(x.mean)
        ys.append(y.mean)
        stds.append(y.std)
    return xs, ys, stds


def percent(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{100 * value:.2f}%"
