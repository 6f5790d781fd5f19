"""A comparison benchmark as an SGDExperiment: its manifest at a size, its cells by variant,
its results read back from the experiment directory, and `dsgd report` on it.

A benchmark's manifest (`benchmarks/experiments/*.yaml`) is its quick size as
written; the other sizes are small tables of `Size` overrides: dotted paths under
`spec` set to a value (`template.training.epochs`, `targetAccuracy`, `seeds`), and
optionally the variants kept (the values of the manifest's first axis, and of the
axes zipped to it, whose cells are of those variants). `--manifest FILE` runs a file
as written instead.

A variant is what a cell's trial runs, named from its algorithm block
(`variant_key`): `mini-batch`, `local-h16`, `local-h4-overlap` (overlapSteps τ = H),
`local-h16-overlap8` (τ = 8 < H), `post-local-h16`,
`hierarchical`, `downpour`, and LOWER_BOUND for local SGD whose H is the largest
allowed (no averaging in any run: the no-communication lower bound). Benchmarks
compute their verdicts from the cells of the variants they know.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsgd_contract.config import MAX_STEPS
from dsgd_contract.experiment import METRICS_FILE, SUMMARY_FILE
from dsgd_operator.api import DistributedSGDJob, DistributedSGDJobSpec
from dsgd_operator.experiments.aggregate import read_records
from dsgd_operator.experiments.api import SGDExperiment
from dsgd_operator.experiments.grid import expand_trials, set_field
from dsgd_operator.experiments.local import TrialRunner
from dsgd_operator.experiments.manifest import parse_experiment
from dsgd_operator.experiments.report import write_report as write_experiment_report
from dsgd_operator.manifest import ManifestError, read_manifest_documents
from job_runner import JobFailed, run_job
from netns_cluster import NetnsCluster
from scaled_run import BenchmarkUnavailable

EXPERIMENTS = Path(__file__).resolve().parent / "experiments"
#: The no-communication run: local SGD with H beyond the run (no collective during training).
LOWER_BOUND = "no-communication"


@dataclass(frozen=True)
class Size:
    """A size of a benchmark: overrides of the manifest's spec and the variants it keeps."""

    overrides: dict[str, Any] = field(default_factory=dict)  # dotted path under spec → value
    variants: tuple[str, ...] | None = None  # None: every cell


def variant_key(spec: DistributedSGDJobSpec) -> str:
    """The variant a trial runs, from its algorithm block (see the module docstring)."""
    algorithm = spec.algorithm
    if algorithm.name == "mini-batch-sgd":
        return "mini-batch"
    if algorithm.name in ("hierarchical-local-sgd", "downpour-sgd"):
        return algorithm.name.removesuffix("-local-sgd").removesuffix("-sgd")
    if algorithm.name == "local-sgd" and algorithm.local_steps == MAX_STEPS:
        return LOWER_BOUND
    key = f"{algorithm.name.removesuffix('-sgd')}-h{algorithm.local_steps}"
    tau = algorithm.overlap_steps
    if not tau:
        return key
    return f"{key}-overlap" if tau == algorithm.local_steps else f"{key}-overlap{tau}"


def variant_label(spec: DistributedSGDJobSpec) -> str:
    """A variant in words, for tables and legends: `local SGD, H=16, overlapSteps=16`."""
    algorithm, key = spec.algorithm, variant_key(spec)
    if key == LOWER_BOUND:
        return "no communication (lower bound)"
    if algorithm.name == "mini-batch-sgd":
        return "mini-batch SGD (DDP)"
    if algorithm.name == "downpour-sgd":
        return (
            f"Downpour SGD, {spec.topology.parameter_servers} parameter servers, "
            f"n_fetch={algorithm.fetch_steps}, n_push={algorithm.push_steps}"
        )
    if algorithm.name == "hierarchical-local-sgd":
        return f"hierarchical local SGD, H={algorithm.local_steps}, H_b={algorithm.block_steps}"
    words = {"local-sgd": "local SGD", "post-local-sgd": "post-local SGD"}[algorithm.name]
    overlap = f", overlapSteps={algorithm.overlap_steps}" if algorithm.overlap_steps else ""
    return f"{words}, H={algorithm.local_steps}{overlap}"


def read_manifest(path: Path) -> dict[str, Any]:
    """The one SGDExperiment document of `path`; BenchmarkUnavailable (one line) otherwise."""
    try:
        documents = read_manifest_documents(path)
    except ManifestError as error:
        raise BenchmarkUnavailable(str(error)) from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise BenchmarkUnavailable(f"{path}: holds {len(documents)} documents; one experiment")
    return documents[0]


def parse(document: dict[str, Any], source: str) -> SGDExperiment:
    try:
        return parse_experiment(document, source)
    except ManifestError as error:
        raise BenchmarkUnavailable(str(error)) from None


def sized_experiment(path: Path, size: Size) -> tuple[dict[str, Any], SGDExperiment]:
    """The manifest at `path` with `size` applied: (the document, the parsed experiment).

    The variants are chosen on the manifest as written (every cell of it is valid), the
    overrides applied after (a smaller topology may not suit a dropped cell).
    """
    document = read_manifest(path)
    if size.variants is not None:
        keep_variants(document, parse(document, str(path)), set(size.variants))
    for dotted, value in size.overrides.items():
        set_field(document["spec"], dotted, value)
    source = f"{path} (with the size's overrides)" if size.overrides else str(path)
    return document, parse(document, source)


def keep_variants(document: dict[str, Any], experiment: SGDExperiment, wanted: set[str]) -> None:
    """Keep the values of the first axis (and of the axes zipped to it) whose cells run one
    of the `wanted` variants (an experiment without axes is one cell: kept)."""
    if not experiment.spec.axes:
        return
    first = experiment.spec.axes[0]
    keyed = [(variant_key(trial.spec), trial) for trial in expand_trials(experiment.spec)]
    known = {key for key, _ in keyed}
    if wanted - known:
        raise BenchmarkUnavailable(
            f"no such variant {', '.join(sorted(wanted - known))} "
            f"(known: {', '.join(sorted(known))})"
        )
    kept = {
        json.dumps(trial.cell.values[first.label], sort_keys=True)
        for key, trial in keyed
        if key in wanted
    }
    indices = [i for i, v in enumerate(first.values) if json.dumps(v, sort_keys=True) in kept]
    for axis, raw in zip(experiment.spec.axes, document["spec"]["axes"], strict=True):
        if axis is first or axis.zip == first.label:
            raw["values"] = [raw["values"][i] for i in indices]


@dataclass(frozen=True)
class CellRun:
    """One finished trial of a cell, as the trainer left it in its directory."""

    trial: str  # its name: the job's, and its directory's
    cell: str
    description: str
    key: str
    seed: int
    spec: DistributedSGDJobSpec
    summary: dict[str, Any]
    records: list[dict[str, Any]]


def cell_runs(experiment: SGDExperiment, directory: Path) -> dict[str, list[CellRun]]:
    """Per variant key, the finished trials of its cells (a key that names several cells is
    suffixed with the cell id: `local-h16@c3`), seeds in the order listed."""
    runs: dict[str, list[CellRun]] = {}
    trials = expand_trials(experiment.spec)
    cells_of: dict[str, set[str]] = {}
    for trial in trials:
        cells_of.setdefault(variant_key(trial.spec), set()).add(trial.cell.id)
    for trial in trials:
        key = variant_key(trial.spec)
        key = key if len(cells_of[key]) == 1 else f"{key}@{trial.cell.id}"
        trial_dir = directory / trial.name(experiment.name)
        summary_path = trial_dir / SUMMARY_FILE
        if not summary_path.is_file():
            continue
        runs.setdefault(key, []).append(
            CellRun(
                trial.name(experiment.name),
                trial.cell.id,
                trial.cell.describe(),
                key,
                trial.seed,
                trial.spec,
                json.loads(summary_path.read_text()),
                read_records(trial_dir / METRICS_FILE),
            )
        )
    return runs


def trial_runner(
    cluster: NetnsCluster | None, echo: bool, warnings: dict[str, str] | None = None
) -> TrialRunner:
    """Run each trial with job_runner.run_job: on loopback, or across `cluster`'s shaped
    links; `warnings` collects what run_job warns about, by trial."""

    def run(job: DistributedSGDJob, directory: Path) -> int:
        try:
            result = run_job(job, directory, cluster, echo=echo)
        except JobFailed as error:
            print(f"{job.name} failed: {error}", file=sys.stderr, flush=True)
            return 1
        if result.warning and warnings is not None:
            warnings[job.name] = result.warning
        return 0

    return run


def write_report(directory: Path, out_dir: Path) -> Path:
    """`dsgd report DIR --out OUT`; returns report.md's path."""
    written = write_experiment_report(directory, out_dir)
    return written[0]
