"""Grid expansion: an SGDExperiment spec → its cells and trials (pure functions).

Cells are the cross product of the axes in the order written (the first axis
varies slowest); an axis with `zip: <other>` joins that axis's dimension, value i
with value i. Each cell is run once per seed (a trial). A trial's job spec is
the template with the cell's values set at the axes' fields (merged into them,
RFC 7386, for `merge: true` axes; into the whole spec for one without a field),
axis by axis in the order written, and `training.seed` set to the seed,
validated with all the job's rules.

`check_grid` runs when the spec is parsed: axis references, the size limit,
and every trial's validation. A refusal names what to fix: the axis, or the
trial's axis values and the job field.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsgd_contract.experiment import CELL_LABEL, EXPERIMENT_LABEL, MAX_TRIALS, SEED_LABEL
from pydantic import ValidationError

from dsgd_operator.api import DistributedSGDJobSpec
from dsgd_operator.manifest import as_the_server_reads, describe_validation_error, format_loc

if TYPE_CHECKING:
    from dsgd_operator.experiments.api import Axis, SGDExperiment, SGDExperimentSpec

#: How many invalid cells an error lists before "... and N more".
LISTED_REFUSALS = 5


@functools.cache
def job_spec_schema() -> dict[str, Any]:
    """The job CRD's spec schema: trials are read as the API server reads a child job."""
    from dsgd_operator.crd import openapi_schema  # crd imports the models; so late

    return openapi_schema()["properties"]["spec"]


class GridError(ValueError):
    """The grid cannot run; `problems` are (field path under spec, message) pairs."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"spec.{format_loc(loc)}: {msg}" for loc, msg in problems))


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its id (`c<i>`) and the value of every axis, by axis label."""

    index: int
    values: dict[str, Any]

    @property
    def id(self) -> str:
        return f"c{self.index}"

    def describe(self) -> str:
        """`algorithm=local-sgd(localSteps=16), topology.nodes=2`: for tables and errors."""
        return ", ".join(f"{axis}={describe_value(v)}" for axis, v in self.values.items())


@dataclass(frozen=True)
class Trial:
    """One run: a cell with one seed, and the job spec it runs (validated)."""

    cell: Cell
    seed: int
    spec: DistributedSGDJobSpec

    def name(self, experiment: str) -> str:
        return trial_name(experiment, self.cell.index, self.seed)

    def labels(self, experiment: str) -> dict[str, str]:
        return {EXPERIMENT_LABEL: experiment, CELL_LABEL: self.cell.id, SEED_LABEL: str(self.seed)}


def trial_name(experiment: str, cell_index: int, seed: int) -> str:
    """The child job's name (and the local run's directory): `<experiment>-c<i>-s<seed>`."""
    return f"{experiment}-c{cell_index}-s{seed}"


def longest_trial_name(experiment: str, spec: SGDExperimentSpec) -> str:
    """The longest child job name the experiment gives (last cell, longest seed)."""
    return trial_name(experiment, max(grid_size(spec) // len(spec.seeds) - 1, 0), max(spec.seeds))


def describe_value(value: Any) -> str:
    """A compact, stable text for an axis value: dict blocks as `name(key=value, ...)`."""
    if isinstance(value, dict):
        rest = {k: v for k, v in value.items() if k != "name"}
        inner = ", ".join(f"{k}={describe_value(v)}" for k, v in rest.items())
        if "name" in value:
            return f"{value['name']}({inner})" if inner else str(value["name"])
        return f"({inner})"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def dimensions(axes: list[Axis]) -> list[list[Axis]]:
    """The axes grouped into grid dimensions: each root axis with the axes zipped to it.

    Raises GridError naming the axis when a name repeats, a zip names no axis,
    zips form a cycle, or zipped axes differ in length.
    """
    by_label: dict[str, Axis] = {}
    for index, axis in enumerate(axes):
        if axis.label in by_label:
            raise GridError(
                [(("axes", index), f"another axis is already named {axis.label!r}; name one")]
            )
        by_label[axis.label] = axis

    def root(axis: Axis, seen: tuple[str, ...] = ()) -> Axis:
        if axis.zip is None:
            return axis
        if axis.label in seen:
            raise GridError([(("axes",), f"zip references form a cycle: {' → '.join(seen)}")])
        if axis.zip not in by_label:
            raise GridError(
                [
                    (
                        ("axes", axes.index(axis), "zip"),
                        f"no axis named {axis.zip!r} (axes: {', '.join(by_label)})",
                    )
                ]
            )
        return root(by_label[axis.zip], (*seen, axis.label))

    groups: dict[str, list[Axis]] = {}
    for axis in axes:
        groups.setdefault(root(axis).label, []).append(axis)
    for group in groups.values():
        for axis in group[1:]:
            if len(axis.values) != len(group[0].values):
                raise GridError(
                    [
                        (
                            ("axes", axes.index(axis), "values"),
                            f"zipped with {group[0].label!r}, so it needs "
                            f"{len(group[0].values)} values, not {len(axis.values)}",
                        )
                    ]
                )
    return list(groups.values())


def expand_cells(axes: list[Axis]) -> list[Cell]:
    """The grid's cells in cross-product order (first dimension slowest); one cell if no axes."""
    groups = dimensions(axes)
    order = {axis.label: position for position, axis in enumerate(axes)}
    cells = []
    for index, choice in enumerate(itertools.product(*(range(len(g[0].values)) for g in groups))):
        values = {
            axis.label: axis.values[i]
            for group, i in zip(groups, choice, strict=True)
            for axis in group
        }
        cells.append(Cell(index, dict(sorted(values.items(), key=lambda kv: order[kv[0]]))))
    return cells


def grid_size(spec: SGDExperimentSpec) -> int:
    """Trials = cells × seeds, computed without expanding."""
    cells = 1
    for group in dimensions(spec.axes):
        cells *= len(group[0].values)
    return cells * len(spec.seeds)


def grid_shape(spec: SGDExperimentSpec) -> str:
    """The values per dimension, `2 × 3` (`1` without axes)."""
    return " × ".join(str(len(group[0].values)) for group in dimensions(spec.axes)) or "1"


def _parent(document: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The mapping holding `a.b.c`'s last part (missing mappings created) and that part.

    Raises GridError when something on the way is not a mapping (a template's `algorithm:
    x`): replacing it would hide the template's mistake.
    """
    *parents, last = path.split(".")
    node = document
    for depth, part in enumerate(parents):
        if part not in node or node[part] is None:
            node[part] = {}
        elif not isinstance(node[part], dict):
            where = ".".join(parents[: depth + 1])
            raise GridError(
                [(("template",), f"{where}: must be a mapping: an axis sets {path} inside it")]
            )
        node = node[part]
    return node, last


def set_field(document: dict[str, Any], path: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict, creating missing mappings; a value replaces wholesale."""
    node, last = _parent(document, path)
    node[last] = copy.deepcopy(value)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: a mapping patch sets the keys it names (recursively) and removes those it
    sets to null; any other patch replaces the target. Neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def merge_field(document: dict[str, Any], path: str | None, patch: Any) -> None:
    """Merge `patch` into `a.b.c` of `document` (None: into the document itself)."""
    if path is None:
        merged = merge_patch(document, patch)
        document.clear()
        document.update(merged)
        return
    node, last = _parent(document, path)
    node[last] = merge_patch(node.get(last), patch)


def trial_document(spec: SGDExperimentSpec, cell: Cell, seed: int) -> dict[str, Any]:
    """The trial's job spec as a wire document: the template, the cell's values (axis by
    axis, in the order written), the seed."""
    document = copy.deepcopy(spec.template)
    for axis in spec.axes:
        value = cell.values[axis.label]
        if axis.merge:
            merge_field(document, axis.field, value)
        else:
            set_field(document, axis.field, value)
    set_field(document, "training.seed", seed)
    return document


def expand_trials(spec: SGDExperimentSpec) -> list[Trial]:
    """Every trial, cell by cell and seed by seed; raises GridError like `check_grid`."""
    trials: list[Trial] = []
    refused: dict[int, tuple[Cell, list[int], tuple[str, ...]]] = {}
    for cell in expand_cells(spec.axes):
        for seed in spec.seeds:
            try:
                document = as_the_server_reads(trial_document(spec, cell, seed), job_spec_schema())
                job_spec = DistributedSGDJobSpec.model_validate(document, strict=True)
            except ValidationError as error:
                _, seeds, _ = refused.setdefault(
                    cell.index, (cell, [], describe_validation_error(error))
                )
                seeds.append(seed)
                continue
            trials.append(Trial(cell, seed, job_spec))
    if refused:
        failed = sum(len(seeds) for _, seeds, _ in refused.values())
        raise GridError(
            refusal_problems(list(refused.values()), len(trials) + failed, template_problems(spec))
        )
    return trials


def template_problems(spec: SGDExperimentSpec) -> set[str]:
    """What the template alone (no axis values, the first seed) is refused for."""
    document = copy.deepcopy(spec.template)
    set_field(document, "training.seed", spec.seeds[0])
    try:
        document = as_the_server_reads(document, job_spec_schema())
        DistributedSGDJobSpec.model_validate(document, strict=True)
    except ValidationError as error:
        return set(describe_validation_error(error))
    return set()


def refusal_problems(
    refused: list[tuple[Cell, list[int], tuple[str, ...]]],
    total: int,
    of_the_template: set[str],
) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems every trial has that the template has on its own are the template's (at its
    field); the others name the cell (an axis value every cell shares is the axis's)."""
    common = set.intersection(*(set(problems) for _, _, problems in refused)) & of_the_template
    if sum(len(seeds) for _, seeds, _ in refused) == total and common:
        return [(("template",), problem) for problem in sorted(common)]
    lines = []
    for cell, seeds, problems in refused[:LISTED_REFUSALS]:
        where = cell.describe() or "no axes"
        lines.append(
            (
                ("axes",),
                f"cell {cell.id} ({where}), seed(s) {', '.join(map(str, seeds))}: "
                + "; ".join(problems),
            )
        )
    more = len(refused) - LISTED_REFUSALS
    if more > 0:
        lines.append((("axes",), f"... and {more} more invalid cell(s)"))
    return lines


def check_grid(spec: SGDExperimentSpec) -> None:
    """Raise GridError unless the axes are consistent, the grid fits, and every trial is valid."""
    size = grid_size(spec)
    if size > MAX_TRIALS:
        shape = grid_shape(spec)
        raise GridError(
            [
                (
                    ("axes",),
                    f"the grid has {shape} cells × {len(spec.seeds)} seeds = {size} trials; "
                    f"at most {MAX_TRIALS}: drop values or axes, or split the experiment",
                )
            ]
        )
    expand_trials(spec)


def trial_job(experiment: SGDExperiment, trial: Trial) -> dict[str, Any]:
    """The DistributedSGDJob manifest of a trial, labelled with experiment, cell and seed,
    and owned by the experiment (when it has a uid: one read from the API server)."""
    from dsgd_operator.builders.metadata import controller_references
    from dsgd_operator.experiments.api import KIND

    metadata: dict[str, Any] = {
        "name": trial.name(experiment.name),
        "labels": trial.labels(experiment.name),
    }
    if experiment.metadata.namespace:
        metadata["namespace"] = experiment.metadata.namespace
    owners = controller_references(
        experiment.api_version, KIND, experiment.name, experiment.metadata.uid
    )
    if owners:
        metadata["ownerReferences"] = owners
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": metadata,
        "spec": trial.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def describe_grid(experiment: SGDExperiment) -> str:
    """`experiment lin: 2 × 3 cells × 2 seeds = 12 trials`."""
    spec = experiment.spec
    return (
        f"experiment {experiment.name}: {grid_shape(spec)} cells × {len(spec.seeds)} seed(s) = "
        f"{grid_size(spec)} trials"
    )
