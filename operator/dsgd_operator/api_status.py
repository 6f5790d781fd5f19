"""A DistributedSGDJob's status (`status`) as pydantic models, written by the operator.

The vocabulary (phases, condition types, failure reasons) is the contract's
(`dsgd_contract.job_status`); the CRD's status schema is generated from these
models with the spec's (`dsgd_operator.crd`), so the descriptions here are what
`kubectl explain distributedsgdjob.status` shows.
"""

from __future__ import annotations

from typing import Literal

from dsgd_contract.config import Algorithm, Optimizer, Topology, Training
from dsgd_contract.job_status import CONDITION_TYPES, Phase
from dsgd_contract.run_results import RunResults
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Condition(BaseModel):
    """A metav1.Condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    type: str = Field(
        description=f"Condition type, at most one of each: {', '.join(CONDITION_TYPES)}."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason of the last transition, for machines.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: str = Field(
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, description="metadata.generation of the job when the condition was set."
    )


class WorkerCounts(BaseModel):
    """Trainer pods of the current gang by pod phase."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    pending: int = Field(0, description="Pods not yet running (scheduling, pulling images).")
    running: int = Field(0, description="Pods running.")
    succeeded: int = Field(0, description="Pods that exited 0.")
    failed: int = Field(0, description="Pods that failed.")


class Progress(BaseModel):
    """Training progress: rank 0's series, as last scraped from node 0's metrics endpoint."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    epoch: float | None = Field(None, description="Epochs done, fractional.")
    step: int | None = Field(None, description="Optimizer steps done.")
    train_loss: float | None = Field(None, description="Recent mean training loss of rank 0.")
    test_accuracy: float | None = Field(
        None, description="Test accuracy of the synchronized model at the last evaluation."
    )
    samples_per_second: float | None = Field(
        None,
        description=(
            "Rank 0's recent throughput; ranks step in lockstep, so the job's is about "
            "world size times this."
        ),
    )
    sync_rounds: dict[str, int] = Field(
        default_factory=dict, description="Rank 0's sync rounds by scope (global, intra_node)."
    )
    communicated_bytes: int | None = Field(
        None, description="Bytes rank 0 sent on the wire in collectives, all scopes."
    )
    checkpoints_skipped: int | None = Field(
        None,
        description=(
            "Unusable checkpoints (corrupt, incomplete) rank 0 skipped for an older one when "
            "the gang resumed; a Warning Event CheckpointFallback says so too."
        ),
    )

    def updated_with(self, newer: Progress) -> Progress:
        """This progress with what a newer scrape saw: its set values replace these."""
        seen = newer.model_dump(exclude_none=True)
        if not seen.get("sync_rounds"):
            seen.pop("sync_rounds", None)
        return self.model_copy(update=seen)


class AppliedSpec(BaseModel):
    """status.appliedSpec: the sections the running gang was built from.

    Its checkpoints were made under them, so the operator keeps acting on these
    until the job ends (dsgd_operator.reconcile.applied_spec).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    topology: Topology | None = None
    algorithm: Algorithm | None = None
    optimizer: Optimizer | None = None
    training: Training | None = None


class DistributedSGDJobStatus(BaseModel):
    """The observed state of a DistributedSGDJob, written by the operator."""

    # The failure policy edits this model; `to_wire()` is what the operator patches.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    phase: Phase | None = Field(
        None,
        description="Pending, Running, Restarting, Succeeded, Failed or Suspended; the "
        "conditions say why.",
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Latest observations, one per type (metav1.Condition)."
    )
    restarts: int = Field(
        0, description="Gang restarts after failed workers; the job fails after backoffLimit."
    )
    disruptions: int = Field(
        0,
        description="Gang restarts caused by disruptions; they do not count against backoffLimit.",
    )
    workers: WorkerCounts = Field(
        default_factory=WorkerCounts, description="Trainer pods of the current gang by phase."
    )
    progress: Progress | None = Field(
        None, description="Training progress scraped from node 0's metrics endpoint."
    )
    start_time: str | None = Field(
        None,
        description="When the first gang was created (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    completion_time: str | None = Field(
        None,
        description="When the job Succeeded or Failed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, description="metadata.generation the operator last acted on."
    )
    applied_spec: AppliedSpec | None = Field(
        None, description="The immutable sections the running gang was built from."
    )
    results: RunResults | None = Field(
        None,
        description=(
            "Set when the job Succeeded: summary.json's figures and the test-accuracy curve, "
            "from rank 0's termination message (at most 4096 bytes: the curve evenly decimated)."
        ),
    )

    def condition(self, kind: str) -> Condition | None:
        """The condition of type `kind`, if set."""
        return next((c for c in self.conditions if c.type == kind), None)

    def is_true(self, kind: str) -> bool:
        found = self.condition(kind)
        return found is not None and found.status == "True"

    def to_wire(self) -> dict:
        """The camelCase JSON form the operator writes: unset (None) fields and an empty
        syncRounds are left out, so a merge patch never erases what it does not know."""
        wire = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if "progress" in wire and not wire["progress"].get("syncRounds"):
            wire["progress"].pop("syncRounds", None)
        return wire
