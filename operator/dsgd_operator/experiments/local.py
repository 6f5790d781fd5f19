"""`dsgd experiment run`: an SGDExperiment's trials as local gangs, one directory per trial.

Each trial is the DistributedSGDJob the operator would create for it
(`grid.trial_job`), run by the same code as `dsgd run` (`local_run.run_gang`,
through `run_display.run_with_display` when trials run one at a time) into
`DIR/<trial name>/`. `DIR/experiment.json` lists the cells and trials for
`dsgd report DIR`.

How a trial runs is pluggable (`run_experiment(..., runner=...)`): by default
as a local gang, as above; a benchmark passes its own runner to run each
trial's job elsewhere (e.g. on emulated, bandwidth-shaped links) into the same
directory layout, so that `dsgd report DIR` reads it alike.

Re-running into the same DIR continues the experiment: a trial whose
summary.json exists (the trainer writes it last, atomically) is finished and
skipped; any other trial runs, and `dsgd run`'s directory reuse makes its
trainer resume from its own checkpoints. A DIR holding another grid is refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsgd_contract.experiment import EXPERIMENT_FILE, SUMMARY_FILE
from rich.console import Console

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.experiments.api import SGDExperiment
from dsgd_operator.experiments.grid import Trial, expand_cells, expand_trials, trial_job
from dsgd_operator.local_run import (
    LocalRunError,
    check_local_gpus,
    member_label,
    prepare_run_directory,
    run_gang,
)
from dsgd_operator.manifest import parse_job


@dataclass(frozen=True)
class LocalTrial:
    """A trial as it runs here: its job and its directory."""

    trial: Trial
    job: DistributedSGDJob
    directory: Path

    @property
    def finished(self) -> bool:
        return (self.directory / SUMMARY_FILE).is_file()


def experiment_index(experiment: SGDExperiment) -> dict[str, Any]:
    """experiment.json: the grid's cells (axis values) and trials (cell, seed, directory)."""
    trials = expand_trials(experiment.spec)
    return {
        "name": experiment.name,
        "axes": [axis.label for axis in experiment.spec.axes],
        "targetAccuracy": experiment.spec.target_accuracy,
        "cells": [
            {"id": cell.id, "values": cell.values, "description": cell.describe()}
            for cell in expand_cells(experiment.spec.axes)
        ],
        "trials": [
            {"name": t.name(experiment.name), "cell": t.cell.id, "seed": t.seed} for t in trials
        ],
    }


def prepare_experiment_directory(experiment: SGDExperiment, out_dir: Path) -> list[LocalTrial]:
    """Write DIR/experiment.json and lay out the trials; LocalRunError for another grid's DIR."""
    index = experiment_index(experiment)
    index_path = out_dir / EXPERIMENT_FILE
    if index_path.is_file():
        try:
            previous = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            previous = {}
        if (previous.get("cells"), previous.get("trials")) != (index["cells"], index["trials"]):
            raise LocalRunError(
                f"{out_dir}: holds another experiment's grid; "
                "choose another --out or delete that directory"
            )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        index_path.write_text(json.dumps(index, indent=2) + "\n")
    except OSError as error:
        raise LocalRunError(f"{out_dir}: cannot write the experiment directory: {error}") from None
    planned = []
    for trial in expand_trials(experiment.spec):
        job = parse_job(trial_job(experiment, trial), f"trial {trial.name(experiment.name)}")
        directory = out_dir / job.name
        prepare_run_directory(job, directory)  # refuses a trial directory of another config
        planned.append(LocalTrial(trial, job, directory))
    return planned


#: Parallel trials' output (interleaved on a terminal it would be unreadable), per trial.
TRIAL_LOG = "trial.log"

#: Runs one trial's job to its end with its results in the directory given (the trainer's
#: summary.json and metrics.jsonl there); returns the exit code: 0 finished, 130
#: interrupted, anything else failed. Ctrl-C may also raise KeyboardInterrupt through it.
TrialRunner = Callable[[DistributedSGDJob, Path], int]


class _Stopped(Exception):
    """Raised in a running gang's tick to stop it (Ctrl-C, or too many failures)."""


def run_experiment(
    experiment: SGDExperiment,
    out_dir: Path,
    parallel: int | None = None,
    console: Console | None = None,
    runner: TrialRunner | None = None,
) -> int:
    """Run every unfinished trial; 0 when all finished, else 1 (130 when interrupted).

    At most `parallel` trials run at once (default: spec.parallelism); more than
    spec.maxFailedTrials failures stop the experiment (running trials are stopped,
    none is started). Raises LocalRunError before anything starts when the
    directory cannot hold the experiment or this machine lacks a trial's GPUs.
    `runner` runs each trial (default: a local gang, with `dsgd run`'s display when
    one runs at a time); a custom runner's running trials are not stopped on too
    many failures, only no new one starts.
    """
    console = console or Console(highlight=False)
    spec = experiment.spec
    planned = prepare_experiment_directory(experiment, out_dir)
    for local in planned:
        check_local_gpus(local.job)
    total = len(planned)
    pending = [(k, t) for k, t in enumerate(planned, 1) if not t.finished]
    console.print(
        f"[bold]{experiment.name}[/]: {total} trials, {total - len(pending)} already finished "
        f"→ {out_dir}",
        soft_wrap=True,
    )
    if spec.suspend:
        console.print("spec.suspend is true: no trial started")
        return 0
    width = parallel or spec.parallelism
    failures: list[str] = []
    if width == 1:
        interrupted = _run_one_at_a_time(
            pending, total, spec.max_failed_trials, failures, console, runner
        )
    else:
        interrupted = _run_in_parallel(
            pending, total, width, spec.max_failed_trials, failures, console, runner
        )
    finished = sum(t.finished for t in planned)
    console.print(f"{finished} of {total} trials finished; results: {out_dir}", soft_wrap=True)
    if interrupted:
        console.print("[yellow]interrupted: re-run the same command to continue[/]")
        return 130
    if failures:
        console.print(f"[red]failed trials: {', '.join(failures)}[/]", soft_wrap=True)
    return 0 if finished == total else 1


def _heading(k: int, total: int, local: LocalTrial) -> str:
    where = local.trial.cell.describe() or "no axes"
    return f"[bold]trial {k} of {total}[/] {local.job.name}: {where}, seed {local.trial.seed}"


def _run_one_at_a_time(
    pending: list[tuple[int, LocalTrial]],
    total: int,
    max_failed: int,
    failures: list[str],
    console: Console,
    runner: TrialRunner | None,
) -> bool:
    """`dsgd run`'s display (bar, summary) per trial, or `runner`; True when interrupted."""
    from dsgd_operator.run_display import run_with_display

    for k, local in pending:
        console.rule(_heading(k, total, local))
        if runner is None:
            code = run_with_display(local.job, local.directory, quiet=True, console=console)
        else:
            try:
                code = runner(local.job, local.directory)
            except KeyboardInterrupt:
                return True
        if code == 130:
            return True
        if code != 0:
            failures.append(local.job.name)
            if len(failures) > max_failed:
                console.print(f"[red]more than maxFailedTrials ({max_failed}) failed: stopping[/]")
                return False
    return False


def _run_in_parallel(
    pending: list[tuple[int, LocalTrial]],
    total: int,
    width: int,
    max_failed: int,
    failures: list[str],
    console: Console,
    runner: TrialRunner | None,
) -> bool:
    """Up to `width` trials at once, one line per start and end; True when interrupted."""
    stop = threading.Event()

    def tick(*_: object) -> None:
        if stop.is_set():
            raise _Stopped

    def run_one(k: int, local: LocalTrial) -> int:
        console.print(_heading(k, total, local), soft_wrap=True)
        if runner is not None:
            return runner(local.job, local.directory)
        lock = threading.Lock()  # each node's output is pumped by its own thread
        with open(local.directory / TRIAL_LOG, "a", encoding="utf-8") as file:

            def log(node_rank: int, line: str) -> None:
                with lock:
                    label = member_label(local.job.spec.topology.nodes, node_rank)
                    file.write(f"[{label}] {line}\n")
                    file.flush()

            try:
                result = run_gang(local.job, local.directory, log=log, on_tick=tick)
            except _Stopped:
                return 130
        return result.exit_code

    queue = list(pending)
    running: dict[Future[int], tuple[int, LocalTrial]] = {}
    with ThreadPoolExecutor(max_workers=width) as pool:
        try:
            while queue or running:
                while queue and len(running) < width and not stop.is_set():
                    k, local = queue.pop(0)
                    running[pool.submit(run_one, k, local)] = (k, local)
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    k, local = running.pop(future)
                    code = future.result()
                    state = "finished" if code == 0 else f"exit code {code}, see {TRIAL_LOG}"
                    console.print(f"trial {k} of {total} {local.job.name}: {state}")
                    if code not in (0, 130):
                        failures.append(local.job.name)
                        if len(failures) > max_failed:
                            console.print(
                                f"[red]more than maxFailedTrials ({max_failed}) failed[/]"
                            )
                            stop.set()
        except KeyboardInterrupt:
            stop.set()
            wait(running)
            return True
    return False
