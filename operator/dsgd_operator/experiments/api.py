"""The `SGDExperiment` API (`dsgd.io/v1alpha1`): a grid of DistributedSGDJobs as pydantic models.

`spec.template` is a DistributedSGDJob spec (the part all trials share);
`spec.axes` override fields of it, each with a list of values (the grid is their
cross product; an axis with `zip: <axis>` pairs its values with that axis's
instead). A value replaces its field wholesale; an axis with `merge: true`
merges each value into its field instead (a JSON merge patch, RFC 7386), and
without a `field` its values are partial job specs: one axis can then give
each cell its own combination of sections (Downpour's algorithm block with its
parameter servers and its optimizer). `spec.seeds` are replicates of every cell
(aggregated, never a search dimension). The template is kept as written and
only validated per trial: a template may be incomplete on its own (e.g.
hierarchical SGD with the nodes left to an axis). Every trial is expanded and
validated with all the job's rules when the experiment is parsed
(`dsgd_operator.experiments.grid`), so one bad combination refuses the whole
experiment, before any job exists.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from dsgd_contract.config import raise_cross_field_errors
from dsgd_contract.experiment import MAX_AXES, MAX_AXIS_VALUES, MAX_SEEDS, ExperimentPhase
from dsgd_contract.pod import GROUP
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dsgd_operator.api import (
    MAX_NAME_LENGTH,
    VERSION,
    DistributedSGDJobSpec,
    K8sObject,
    ObjectMeta,
)
from dsgd_operator.api_status import Condition

KIND = "SGDExperiment"
PLURAL = "sgdexperiments"
SINGULAR = "sgdexperiment"
SHORT_NAMES = ["sgdexp"]

#: The spec sections an axis may override (the ones that decide a training run).
AXIS_SECTIONS = ("topology", "algorithm", "optimizer", "training")
#: Fields no axis may set: the seed is spec.seeds' (replicates, not a search dimension).
FORBIDDEN_AXIS_FIELDS = {"training.seed": "the seed is not an axis: list replicates in spec.seeds"}
#: An axis field: a section, or a dotted path of wire (camelCase) names inside one.
AXIS_FIELD_PATTERN = rf"^({'|'.join(AXIS_SECTIONS)})(\.[a-zA-Z][a-zA-Z0-9]*)*$"


class ExperimentModel(BaseModel):
    """camelCase on the wire, unknown fields refused (as the job's sections)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Axis(ExperimentModel):
    """One dimension of the grid: a field of the template and the values it takes."""

    field: str | None = Field(
        None,
        pattern=AXIS_FIELD_PATTERN,
        description=(
            "The template field this axis sets, as a dotted path of wire names: a whole "
            "section (algorithm: each value is a complete algorithm block) or one field "
            "(topology.nodes, training.batchSizePerProcess, optimizer.learningRate). "
            "Absent (with merge: true and a name): the values are partial job specs."
        ),
    )
    values: list[Any] = Field(
        min_length=1,
        max_length=MAX_AXIS_VALUES,
        description=(
            "The values, each replacing the field of the template in its trials (merged "
            "into it with merge: true). A null value leaves the field at its default."
        ),
    )
    merge: bool = Field(
        False,
        description=(
            "true: each value is merged into the field as a JSON merge patch (RFC 7386): a "
            "mapping sets only the keys it names, recursively, a null removes a key (its "
            "default applies), anything else replaces. Without field, each value is a "
            "partial job spec, e.g. {algorithm: {name: downpour-sgd}, topology: "
            "{parameterServers: 2}}. Axes apply in the order written."
        ),
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z][-A-Za-z0-9_.]*$",
        description=(
            "Name of the axis in reports and zip references. Default: field (needed without one)."
        ),
    )
    zip: str | None = Field(
        None,
        description=(
            "The name of another axis: this axis then pairs value i with that axis's value i "
            "(same number of values) instead of adding a dimension."
        ),
    )

    @field_validator("field")
    @classmethod
    def _not_forbidden(cls, field: str | None) -> str | None:
        if field in FORBIDDEN_AXIS_FIELDS:
            raise ValueError(f"{field}: {FORBIDDEN_AXIS_FIELDS[field]}")
        return field

    @model_validator(mode="after")
    def _patches_are_partial_specs(self) -> Axis:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.field is None:
            if not self.merge:
                problems.append(
                    (("field",), "required, unless merge: true (values are then partial specs)")
                )
            if self.name is None:
                problems.append((("name",), "an axis without a field needs a name"))
        for index, value in enumerate(self.values if self.merge else []):
            if self.field is None and not isinstance(value, dict):
                problems.append((("values", index), "must be a mapping of spec sections"))
                continue
            problems += [
                (("values", index), problem)
                for path in patched_paths(self.field, value)
                if (problem := _forbidden_path(path))
            ]
        raise_cross_field_errors("Axis", problems)
        return self

    @property
    def label(self) -> str:
        return self.name or self.field or ""


def patched_paths(field: str | None, patch: Any) -> list[str]:
    """The dotted spec paths a merge patch at `field` (None: the spec) sets or removes."""
    if not isinstance(patch, dict):
        return [field or ""]
    paths = []
    for key, item in patch.items():
        paths += patched_paths(f"{field}.{key}" if field else str(key), item)
    return paths


def _forbidden_path(path: str) -> str | None:
    """Why an axis may not set `path` (None: it may)."""
    section = path.split(".", 1)[0]
    if section not in AXIS_SECTIONS:
        return f"{path}: an axis sets only {', '.join(AXIS_SECTIONS)}"
    for forbidden, why in FORBIDDEN_AXIS_FIELDS.items():
        if path == forbidden or path.startswith(f"{forbidden}."):
            return f"{path}: {why}"
    return None


class SGDExperimentSpec(ExperimentModel):
    """The desired state of an SGDExperiment; validated with every trial it expands to."""

    template: K8sObject = Field(
        default_factory=dict,
        description=(
            "A DistributedSGDJob spec: what every trial shares. Validated per trial, "
            "with the axes' values in place."
        ),
    )
    axes: list[Axis] = Field(
        default_factory=list,
        max_length=MAX_AXES,
        description="The grid: the cross product of the axes (zip pairs two axes).",
    )
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=MAX_SEEDS,
        description=(
            "Replicates of every cell (training.seed): the results are their mean ± std; "
            "not a search dimension."
        ),
    )
    parallelism: Annotated[int, Field(ge=1, le=1000)] = Field(
        1, description="Most trials running at once."
    )
    max_failed_trials: Annotated[int, Field(ge=0)] = Field(
        0, description="Failed trials tolerated; one more fails the experiment."
    )
    target_accuracy: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="Test accuracy for the time / samples / bytes to target in results."
    )
    suspend: bool = Field(False, description="true: start no new trial (running ones finish).")

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"each seed once; repeated: {repeated}")
        return seeds

    @model_validator(mode="after")
    def _grid_is_valid(self) -> SGDExperimentSpec:
        # Late import: grid builds trials from this model (one concept per module).
        from dsgd_operator.experiments.grid import GridError, check_grid

        try:
            check_grid(self)
        except GridError as error:
            raise_cross_field_errors("SGDExperimentSpec", error.problems)
        return self


class TrialCounts(ExperimentModel):
    total: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0


class Figure(ExperimentModel):
    """One figure over a cell's seeds: mean, sample standard deviation (n − 1), n."""

    mean: float | None = Field(None, description="Mean over the seeds.")
    std: float | None = Field(None, description="Sample standard deviation; absent for one seed.")
    # Not `n`: kubectl reads the CRD with YAML 1.1, where a plain `n` key is false.
    seeds: int = Field(0, description="n: how many seeds the figure is over.")


class AtTarget(ExperimentModel):
    """Where a trial's curve first reached spec.targetAccuracy (at its kept evaluations)."""

    wall_seconds: float
    samples: int
    communicated_bytes: int


class FinishedTrial(ExperimentModel):
    """A trial that ended, as the experiment keeps it: its child job may be deleted later
    (the template's ttlSecondsAfterFinished) without its figures leaving the results."""

    name: str
    cell: str
    seed: int
    phase: Literal["Succeeded", "Failed"]
    final_test_accuracy: float | None = None
    final_train_accuracy: float | None = None
    wall_seconds: float | None = None
    communicated_bytes: int | None = None
    samples: int | None = None
    sync_rounds: dict[str, int] = Field(default_factory=dict)
    at_target: AtTarget | None = Field(
        None, description="The first evaluation at spec.targetAccuracy; absent: not reached."
    )


class CellResults(ExperimentModel):
    """One grid cell's results, aggregated over its succeeded seeds."""

    cell: str = Field(description="The cell's id, c<i> (the trials' label dsgd.io/cell).")
    description: str = Field(description="Its axis values, as text.")
    values: dict[str, Any] = Field(description="Its axis values, by axis name.")
    succeeded: int = 0
    failed: int = 0
    final_test_accuracy: Figure = Field(default_factory=Figure)
    final_train_accuracy: Figure = Field(default_factory=Figure)
    generalization_gap: Figure = Field(
        default_factory=Figure,
        description="Final train accuracy − final test accuracy, per seed, then aggregated.",
    )
    wall_seconds: Figure = Field(default_factory=Figure)
    communicated_bytes: Figure = Field(
        default_factory=Figure, description="Bytes rank 0 sent (per rank), all scopes."
    )
    samples: Figure = Field(default_factory=Figure)
    global_sync_rounds: Figure = Field(default_factory=Figure)
    time_to_target: Figure | None = Field(
        None, description="Wall seconds to spec.targetAccuracy, over the seeds reaching it (n)."
    )
    samples_to_target: Figure | None = None
    bytes_to_target: Figure | None = None


class BestCell(ExperimentModel):
    cell: str
    description: str
    test_accuracy: float = Field(description="Its mean final test accuracy.")


class SGDExperimentStatus(ExperimentModel):
    """The observed state: phase, trial counts and per-cell aggregated results."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    phase: ExperimentPhase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    trials: TrialCounts = Field(default_factory=TrialCounts)
    finished_trials: list[FinishedTrial] = Field(
        default_factory=list, description="Every trial that ended, with its figures."
    )
    results: list[CellResults] = Field(
        default_factory=list,
        description="Per grid cell: its axis values and metrics aggregated over the seeds.",
    )
    best: BestCell | None = Field(
        None, description="The cell with the highest mean final test accuracy so far."
    )
    observed_generation: int | None = None

    def is_true(self, kind: str) -> bool:
        """Whether condition `kind` is set and True."""
        return any(c.type == kind and c.status == "True" for c in self.conditions)

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON the operator writes (unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class SGDExperiment(BaseModel):
    """A whole `SGDExperiment` manifest."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_version: Literal["dsgd.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["SGDExperiment"]
    metadata: ObjectMeta
    spec: SGDExperimentSpec = Field(default_factory=SGDExperimentSpec)
    status: SGDExperimentStatus | None = None

    @model_validator(mode="after")
    def _trial_names_fit(self) -> SGDExperiment:
        from dsgd_operator.experiments.grid import longest_trial_name

        longest = longest_trial_name(self.metadata.name, self.spec)
        if len(longest) > MAX_NAME_LENGTH:
            message = (
                f"trial jobs are named <name>-c<cell>-s<seed>, and {longest!r} would be "
                f"{len(longest)} characters; at most {MAX_NAME_LENGTH}: shorten the name"
            )
            raise_cross_field_errors("SGDExperiment", [(("metadata", "name"), message)])
        return self

    @property
    def name(self) -> str:
        return self.metadata.name


__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "Axis",
    "DistributedSGDJobSpec",
    "SGDExperiment",
    "SGDExperimentSpec",
    "SGDExperimentStatus",
]
