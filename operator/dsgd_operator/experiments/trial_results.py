"""An experiment's results on a cluster, from its trials' job statuses (pure functions).

A child job that Succeeded carries its run's results in `status.results`
(`dsgd_contract.run_results.RunResults`: summary figures and the evaluation
curve, from rank 0's termination message). The operator keeps one
`FinishedTrial` per ended trial in the experiment's status (so a child deleted
later, by its TTL, still counts) and aggregates them per grid cell with the
same statistics as `dsgd report` (`aggregate.Stat`: mean, sample standard
deviation, n over the succeeded seeds).

`report_cells` turns the experiment and its children back into the report's
cells (`aggregate.CellResult`), curves included, for `dsgd report
sgdexperiment/NAME`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dsgd_contract.run_results import RunResults

from dsgd_operator.experiments.aggregate import CellResult, Stat, TrialResult, first_reaching
from dsgd_operator.experiments.api import (
    AtTarget,
    BestCell,
    CellResults,
    Figure,
    FinishedTrial,
    SGDExperiment,
)
from dsgd_operator.experiments.grid import Trial, expand_cells


def job_results(job: Mapping[str, Any]) -> RunResults | None:
    """A child job's `status.results`, or None (not succeeded yet, or no message)."""
    raw = (job.get("status") or {}).get("results")
    if not isinstance(raw, dict):
        return None
    try:
        return RunResults.model_validate(raw)
    except ValueError:
        return None


def finished_trial(
    experiment: SGDExperiment, trial: Trial, phase: str, results: RunResults | None
) -> FinishedTrial:
    """The entry the experiment keeps for a trial whose job ended in `phase`."""
    entry = FinishedTrial(
        name=trial.name(experiment.name), cell=trial.cell.id, seed=trial.seed, phase=phase
    )
    if phase != "Succeeded" or results is None:
        return entry
    target = experiment.spec.target_accuracy
    reached = first_reaching(results.records(), target) if target is not None else None
    return entry.model_copy(
        update={
            "final_test_accuracy": results.final_test_accuracy,
            "final_train_accuracy": results.final_train_accuracy,
            "wall_seconds": results.wall_seconds,
            "communicated_bytes": results.communicated_bytes,
            "samples": results.samples,
            "sync_rounds": dict(results.sync_rounds),
            "at_target": AtTarget(
                wall_seconds=reached["wall_seconds"],
                samples=reached["samples"],
                communicated_bytes=reached["communicated_bytes"],
            )
            if reached
            else None,
        }
    )


def _figure(values: list[float]) -> Figure:
    stat = Stat.of(values)
    return Figure(mean=stat.mean, std=stat.std, seeds=stat.n)


def cell_results(experiment: SGDExperiment, finished: list[FinishedTrial]) -> list[CellResults]:
    """Per grid cell, its succeeded trials' figures aggregated (cells in grid order)."""
    target = experiment.spec.target_accuracy
    cells = []
    for cell in expand_cells(experiment.spec.axes):
        ended = [t for t in finished if t.cell == cell.id]
        ok = [t for t in ended if t.phase == "Succeeded" and t.final_test_accuracy is not None]

        def figure(key: str, trials: list[FinishedTrial] = ok) -> Figure:
            return _figure([v for t in trials if (v := getattr(t, key)) is not None])

        reached = [t.at_target for t in ok if t.at_target is not None]
        at = {
            key: _figure([getattr(r, key) for r in reached])
            for key in ("wall_seconds", "samples", "communicated_bytes")
        }
        cells.append(
            CellResults(
                cell=cell.id,
                description=cell.describe(),
                values=cell.values,
                succeeded=sum(t.phase == "Succeeded" for t in ended),
                failed=sum(t.phase == "Failed" for t in ended),
                final_test_accuracy=figure("final_test_accuracy"),
                final_train_accuracy=figure("final_train_accuracy"),
                generalization_gap=_figure(
                    [
                        t.final_train_accuracy - t.final_test_accuracy
                        for t in ok
                        if t.final_train_accuracy is not None
                    ]
                ),
                wall_seconds=figure("wall_seconds"),
                communicated_bytes=figure("communicated_bytes"),
                samples=figure("samples"),
                global_sync_rounds=_figure([t.sync_rounds.get("global", 0) for t in ok]),
                time_to_target=at["wall_seconds"] if target is not None else None,
                samples_to_target=at["samples"] if target is not None else None,
                bytes_to_target=at["communicated_bytes"] if target is not None else None,
            )
        )
    return cells


def best_cell(cells: list[CellResults]) -> BestCell | None:
    """The cell with the highest mean final test accuracy (None before any succeeded)."""
    scored = [c for c in cells if c.final_test_accuracy.mean is not None]
    if not scored:
        return None
    best = max(scored, key=lambda c: c.final_test_accuracy.mean)
    return BestCell(
        cell=best.cell, description=best.description, test_accuracy=best.final_test_accuracy.mean
    )


def report_cells(
    experiment: SGDExperiment, children: list[Mapping[str, Any]], finished: list[FinishedTrial]
) -> tuple[dict[str, Any], list[CellResult]]:
    """(the report's index, its cells) from the cluster: each succeeded trial's figures and
    curve from its child job's status.results; a trial whose child is gone (deleted after
    its TTL) from the experiment's finishedTrials, without a curve."""
    from dsgd_operator.experiments.grid import expand_trials
    from dsgd_operator.experiments.local import experiment_index

    index = experiment_index(experiment)
    by_name = {child["metadata"]["name"]: child for child in children}
    kept = {entry.name: entry for entry in finished}
    cells = {c["id"]: CellResult(c["id"], c["description"], c["values"]) for c in index["cells"]}
    for trial in expand_trials(experiment.spec):
        name = trial.name(experiment.name)
        cell = cells[trial.cell.id]
        child = by_name.get(name)
        results = job_results(child) if child is not None else None
        if results is not None:
            cell.trials.append(TrialResult(name, trial.seed, results.summary(), results.records()))
        elif name in kept and kept[name].phase == "Succeeded":
            entry = kept[name]
            summary = entry.model_dump(exclude={"name", "cell", "seed", "phase", "at_target"})
            cell.trials.append(TrialResult(name, trial.seed, summary, []))
        else:
            cell.unfinished.append(name)
    return index, list(cells.values())
