"""What an installation gives every trainer pod that its job does not say: resources, scratch
size limits, the image pull policy (Helm values `trainerPods`, env DSGD_POD_DEFAULTS as JSON).

Without them a pod whose template names no resources is BestEffort (the first
to be evicted under pressure, scheduled anywhere), its emptyDirs may fill a
node's disk, and a moved `:latest` tag is never pulled again. A job keeps the
last word: a resource it names in `template.resources` (as a request or a
limit) is left entirely to it; the GPUs always come from the topology.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from dsgd_operator.pod_layout import parse_quantity

#: What pod defaults may name; GPUs come from the topology, never from defaults.
DEFAULTABLE_RESOURCES = ("cpu", "memory", "ephemeral-storage")

PullPolicyRule = Literal["Default", "AlwaysUnlessDigest", "Always", "IfNotPresent", "Never"]


class PodDefaults(BaseModel):
    """An installation's defaults for trainer pods; each field is a Helm value of trainerPods."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    requests_per_process: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "2Gi"},
        description="Requests of the trainer container per rank (× processesPerNode).",
    )
    limits_per_process: dict[str, str] = Field(
        default_factory=lambda: {"memory": "8Gi"},
        description="Limits of the trainer container per rank (× processesPerNode).",
    )
    tmp_size_limit: str | None = Field(
        "8Gi", description='sizeLimit of the /tmp emptyDir ("" or null: none).'
    )
    scratch_size_limit: str | None = Field(
        "32Gi",
        description="sizeLimit of the emptyDirs dsgd mounts at checkpointDir and outputDir "
        'when no template volume covers them ("" or null: none).',
    )
    image_pull_policy: PullPolicyRule = Field(
        "Default",
        description="Default: as Kubernetes defaults it (Always for :latest or no tag, else "
        "IfNotPresent); AlwaysUnlessDigest: Always unless the image is pinned by digest; "
        "or one policy for every image.",
    )

    @field_validator("requests_per_process", "limits_per_process")
    @classmethod
    def _quantities(cls, amounts: dict[str, str]) -> dict[str, str]:
        for name, amount in amounts.items():
            if name not in DEFAULTABLE_RESOURCES:
                raise ValueError(f"{name}: use {', '.join(DEFAULTABLE_RESOURCES)}")
            if parse_quantity(amount) <= 0:
                raise ValueError(f"{name}: {amount!r} must be positive")
        return amounts

    @field_validator("tmp_size_limit", "scratch_size_limit")
    @classmethod
    def _size(cls, size: str | None) -> str | None:
        # "" as well as null: Helm drops a null value and keeps the chart's default.
        if not size:
            return None
        if parse_quantity(size) <= 0:
            raise ValueError(f"{size!r} must be a positive quantity (or null for none)")
        return size

    def model_post_init(self, _context: object) -> None:
        for name, limit in self.limits_per_process.items():
            request = self.requests_per_process.get(name)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"requestsPerProcess.{name} {request!r} is more than limitsPerProcess {limit!r}"
                )

    @classmethod
    def from_json(cls, text: str) -> PodDefaults:
        """The defaults in DSGD_POD_DEFAULTS; ValueError, one line, when malformed."""
        try:
            return cls.model_validate(json.loads(text))
        except ValidationError as error:
            details = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or '(defaults)'}: "
                f"{item['msg'].removeprefix('Value error, ')}"
                for item in error.errors()
            )
            raise ValueError(f"trainer pod defaults: {details}") from None
        except ValueError as error:
            raise ValueError(f"trainer pod defaults: {error}") from None


def scaled(amount: str, processes: int) -> Decimal:
    """A per-rank amount for a pod of `processes` ranks."""
    return parse_quantity(amount) * processes


def image_pull_policy(image: str, rule: PullPolicyRule) -> str:
    """The container's imagePullPolicy for `image` under `rule`.

    Default is what the API server's own defaulting picks (tests/test_pod_defaults.py
    asks it): Always when the tag is `latest`, written or implied (no tag and no
    digest), else IfNotPresent, so `name:latest@sha256:...` is Always too.
    AlwaysUnlessDigest: Always unless the image is pinned by a digest.
    """
    if rule in ("Always", "IfNotPresent", "Never"):
        return rule
    name, _, digest = image.partition("@")
    if rule == "AlwaysUnlessDigest":
        return "IfNotPresent" if digest else "Always"
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ("" if digest else "latest")
    return "Always" if tag == "latest" else "IfNotPresent"
