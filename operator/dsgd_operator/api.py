"""The `DistributedSGDJob` API (`dsgd.io/v1alpha1`) as pydantic models.

The spec embeds the contract's `TrainingConfig` sections
(`topology`, `algorithm`, `optimizer`, `training`) and adds what only the
cluster side needs: image, run policy, scheduling and pod template overrides.
The CRD in `crds/` is generated from these models (`dsgd_operator.crd`), so
the field descriptions here are what `kubectl explain` shows.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from dsgd_contract.config import (
    MAX_NODES,
    Algorithm,
    Optimizer,
    SpecModel,
    Topology,
    Training,
    TrainingConfig,
    raise_cross_field_errors,
)
from dsgd_contract.config_rules import cross_field_errors
from dsgd_contract.job_status import CONDITION_TYPES, Phase
from dsgd_contract.pod import GROUP, POD_NAME_INFIX
from dsgd_contract.run_results import RunResults
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dsgd_operator.pod_layout import pod_layout_errors, template_errors

VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DistributedSGDJob"
PLURAL = "distributedsgdjobs"
SINGULAR = "distributedsgdjob"
SHORT_NAMES = ["sgdjob", "dsgdjob"]

#: The trainer image when neither the spec nor the operator settings name one.
DEFAULT_IMAGE = "ghcr.io/dsgd-io/dsgd-trainer:0.1.0"

#: Pods are named `<job>-node-<i>` and double as DNS labels (hostname), which
#: Kubernetes caps at 63 characters; the longest suffix is "-node-" + the
#: digits of MAX_NODES - 1.
MAX_NAME_LENGTH = 63 - len(POD_NAME_INFIX) - len(str(MAX_NODES - 1))
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: Names of other Kubernetes objects (scheduler, PriorityClass, ServiceAccount).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

#: activeDeadlineSeconds and ttlSecondsAfterFinished at most: 10 years (365-day years).
#: Longer is a typo, and far longer used to overflow the operator's date arithmetic.
MAX_DURATION_SECONDS = 10 * 365 * 24 * 3600

#: Free-form Kubernetes objects: kept as given, checked by the API server when
#: the pods are created (and by kubernetes-validate in our tests).
K8sObject = dict[str, Any]


class RunPolicy(SpecModel):
    """What happens on failure and after the end, as in Kubeflow's RunPolicy."""

    backoff_limit: Annotated[int, Field(ge=0, le=100)] = Field(
        3, description="Gang restarts (the whole gang is recreated) before the job is Failed."
    )
    active_deadline_seconds: Annotated[int, Field(ge=1, le=MAX_DURATION_SECONDS)] | None = Field(
        None,
        description="Fail the job when it has been active longer than this (at most 10 years).",
    )
    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=MAX_DURATION_SECONDS)] | None = Field(
        None,
        description=(
            "Delete the finished job (and its objects) this long after it ended (at most 10 years)."
        ),
    )
    clean_pod_policy: Literal["Running", "All", "None"] = Field(
        "Running",
        description=(
            "Pods deleted when the job ends: Running (those still running), All, or None."
        ),
    )
    suspend: bool = Field(
        False, description="true deletes the pods and keeps the job; false recreates them."
    )


class Scheduling(SpecModel):
    """Scheduler settings; a gang scheduler gets a PodGroup with minMember = nodes."""

    scheduler_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Pod scheduler. volcano or scheduler-plugins also create the matching PodGroup "
            "so that the gang is scheduled all-or-nothing."
        ),
    )
    queue: str | None = Field(None, max_length=253, description="Volcano queue of the PodGroup.")
    priority_class_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="PriorityClass of the pods.",
    )


class PodTemplateOverrides(SpecModel):
    """Pod settings users need on GPU clusters, merged into every pod of the job.

    The security context is not overridable: pods always run non-root with no
    privilege escalation and no capabilities.
    """

    labels: dict[str, str] = Field(default_factory=dict, description="Extra pod labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Extra pod annotations.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Pod nodeSelector.")
    tolerations: list[K8sObject] = Field(default_factory=list, description="Pod tolerations.")
    affinity: K8sObject | None = Field(None, description="Pod affinity.")
    volumes: list[K8sObject] = Field(
        default_factory=list, description="Extra pod volumes (e.g. a PVC for /checkpoints)."
    )
    volume_mounts: list[K8sObject] = Field(
        default_factory=list, description="Extra volume mounts of the trainer container."
    )
    env: list[K8sObject] = Field(
        default_factory=list, description="Extra environment variables of the trainer container."
    )
    resources: K8sObject | None = Field(
        None,
        description=(
            "Trainer container resources; GPU requests from topology are added when gpu: true."
        ),
    )
    parameter_server_resources: K8sObject | None = Field(
        None,
        description=(
            "downpour-sgd: the parameter-server containers' resources (CPU pods; default: "
            "the installation's per-rank defaults)."
        ),
    )
    image_pull_secrets: list[K8sObject] = Field(
        default_factory=list, description="Secrets to pull the trainer image."
    )
    service_account_name: str | None = Field(
        None,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Service account of the pods.",
    )

    @model_validator(mode="after")
    def _no_collisions(self) -> PodTemplateOverrides:
        raise_cross_field_errors("PodTemplateOverrides", template_errors(self))
        return self


class DistributedSGDJobSpec(TrainingConfig):
    """The desired state of a DistributedSGDJob."""

    image: str | None = Field(
        None,
        min_length=1,
        pattern=r"^\S+$",
        description="Trainer image. Default: the operator's setting (Helm value trainerImage).",
    )
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Failure and cleanup.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Scheduling.")
    template: PodTemplateOverrides = Field(
        default_factory=PodTemplateOverrides, description="Pod overrides."
    )

    @model_validator(mode="after")
    def _pod_fits_topology(self) -> DistributedSGDJobSpec:
        raise_cross_field_errors("DistributedSGDJobSpec", pod_layout_errors(self))
        return self

    def training_config(self) -> TrainingConfig:
        """The part of the spec the trainer reads (the ConfigMap's JSON)."""
        return TrainingConfig(
            topology=self.topology,
            algorithm=self.algorithm,
            optimizer=self.optimizer,
            training=self.training,
        )


class ObjectMeta(BaseModel):
    """The metadata fields dsgd reads; everything else is kept as given."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    name: str = Field(description="Job name: a DNS label, short enough for pod hostnames.")
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(
                f"{name!r} is {len(name)} characters; at most {MAX_NAME_LENGTH} so that pod "
                f"hostnames <name>-node-<i> stay within 63"
            )
        if not re.fullmatch(NAME_PATTERN, name):  # match's $ would allow a trailing newline
            raise ValueError(
                f"{name!r} is not a DNS label: lower-case letters, digits and '-', "
                "starting with a letter and ending with a letter or digit"
            )
        return name


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


class DistributedSGDJob(BaseModel):
    """A whole `DistributedSGDJob` manifest."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_version: Literal["dsgd.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["DistributedSGDJob"]
    metadata: ObjectMeta
    spec: DistributedSGDJobSpec = Field(default_factory=DistributedSGDJobSpec)
    status: DistributedSGDJobStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def world_size(self) -> int:
        return self.spec.topology.world_size


__all__ = [
    "Algorithm",
    "AppliedSpec",
    "DistributedSGDJob",
    "DistributedSGDJobSpec",
    "DistributedSGDJobStatus",
    "Optimizer",
    "Topology",
    "Training",
    "cross_field_errors",
]
