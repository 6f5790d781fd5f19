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
from dsgd_contract.pod import GROUP, POD_NAME_INFIX
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dsgd_operator.api_status import DistributedSGDJobStatus
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
    "DistributedSGDJob",
    "DistributedSGDJobSpec",
    "Optimizer",
    "Topology",
    "Training",
    "cross_field_errors",
]
