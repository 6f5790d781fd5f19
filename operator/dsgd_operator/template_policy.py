"""What an installation lets `spec.template` (and `spec.image`) carry into its pods.

Anyone allowed to create a DistributedSGDJob in a namespace gets pods built
from its template. Some of what a pod can say is power over the node or the
namespace, not over the job: a network or host volume, a ServiceAccount and
its token, a toleration of every taint, a system priority class, an image from
anywhere. The platform decides, in the operator's settings (Helm values
`templatePolicy`, env DSGD_TEMPLATE_POLICY as JSON); the operator refuses a job
that asks for more (condition Invalid, a Warning Event), and `dsgd validate
--policy FILE` refuses it the same way, each problem one line naming the field.

The defaults are the Pod Security "restricted" volume types, no
serviceAccountName, no host-level tolerations, any priority class but the
system ones, any image. What is refused whatever the policy (securityContext,
hostPath, host namespaces, security-profile annotations) is
dsgd_operator.pod_layout's.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from dsgd_operator.api import DistributedSGDJob

#: The volume types of the Pod Security Standards' "restricted" profile.
RESTRICTED_VOLUME_TYPES = (
    "configMap",
    "emptyDir",
    "projected",
    "secret",
    "downwardAPI",
    "persistentVolumeClaim",
    "ephemeral",
    "csi",
)
#: Any name (in allowedServiceAccounts, allowedPriorityClasses).
ANY = "*"
#: PriorityClasses Kubernetes reserves for the node's own critical pods.
SYSTEM_PRIORITY_PREFIX = "system-"
#: Taints that keep work off nodes that are unhealthy, cordoned or reserved for the control
#: plane; tolerating them (or every taint) is power over the node, not over the job.
HOST_TAINT_PREFIXES = ("node.kubernetes.io/", "node-role.kubernetes.io/")
#: ... except the time-bounded tolerations Kubernetes itself adds to every pod.
DEFAULT_TIMED_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")

Loc = tuple[str | int, ...]


class TemplatePolicy(BaseModel):
    """An installation's template policy; every field is a Helm value under templatePolicy."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    allowed_volume_types: tuple[str, ...] = Field(
        RESTRICTED_VOLUME_TYPES, description="Volume sources template.volumes may use."
    )
    allowed_service_accounts: tuple[str, ...] = Field(
        (), description="Names template.serviceAccountName may take; ['*']: any; []: none."
    )
    allow_service_account_tokens: bool = Field(
        False, description="Whether projected volumes may mint serviceAccountToken sources."
    )
    allow_secret_references: bool = Field(
        True, description="Whether template.env may read Secrets (valueFrom.secretKeyRef)."
    )
    allow_host_level_tolerations: bool = Field(
        False,
        description="Whether tolerations may tolerate every taint, or node-health and "
        "node-role taints (node.kubernetes.io/*, node-role.kubernetes.io/*).",
    )
    allowed_priority_classes: tuple[str, ...] = Field(
        (ANY,),
        description="Names scheduling.priorityClassName may take; '*': any but the system-* "
        "classes, which must be listed by name.",
    )
    allowed_image_prefixes: tuple[str, ...] = Field(
        (),
        description="Registries/repositories spec.image must start with (at a '/', ':' or "
        "'@' boundary); []: any image.",
    )

    @classmethod
    def from_json(cls, text: str) -> TemplatePolicy:
        """The policy in DSGD_TEMPLATE_POLICY; ValueError, one line per problem, if malformed."""
        try:
            return cls.model_validate(json.loads(text))
        except (ValueError, ValidationError) as error:
            raise ValueError(f"template policy: {_one_line(error)}") from None

    @classmethod
    def from_document(cls, document: Any) -> TemplatePolicy:
        """The policy of a Helm values document (its `templatePolicy`), or of the policy itself."""
        if isinstance(document, dict) and "templatePolicy" in document:
            document = document["templatePolicy"] or {}
        try:
            return cls.model_validate(document if document is not None else {})
        except ValidationError as error:
            raise ValueError(f"template policy: {_one_line(error)}") from None


def _one_line(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(policy)'}: {item['msg']}"
            for item in error.errors()
        )
    return str(error)


DEFAULT_POLICY = TemplatePolicy()


def policy_problems(job: DistributedSGDJob, policy: TemplatePolicy) -> tuple[str, ...]:
    """`spec.field.path: message` for everything in the job that `policy` does not allow."""
    spec, template = job.spec, job.spec.template
    errors: list[tuple[Loc, str]] = []
    errors += _volume_errors(template.volumes, policy)
    if template.service_account_name and not _allowed(
        template.service_account_name, policy.allowed_service_accounts
    ):
        errors.append(
            (
                ("template", "serviceAccountName"),
                f"{template.service_account_name!r} is not allowed by this installation "
                f"(templatePolicy.allowedServiceAccounts: {list(policy.allowed_service_accounts)})",
            )
        )
    if not policy.allow_secret_references:
        for index, var in enumerate(template.env):
            if isinstance(var.get("valueFrom"), dict) and "secretKeyRef" in var["valueFrom"]:
                errors.append(
                    (
                        ("template", "env", index, "valueFrom", "secretKeyRef"),
                        "reading Secrets is not allowed by this installation "
                        "(templatePolicy.allowSecretReferences)",
                    )
                )
    if not policy.allow_host_level_tolerations:
        for index, toleration in enumerate(template.tolerations):
            if _host_level(toleration):
                errors.append(
                    (
                        ("template", "tolerations", index),
                        f"{toleration} tolerates node-level taints (every taint, node health or "
                        "node role); not allowed by this installation "
                        "(templatePolicy.allowHostLevelTolerations)",
                    )
                )
    priority = spec.scheduling.priority_class_name
    if priority and not _priority_allowed(priority, policy.allowed_priority_classes):
        errors.append(
            (
                ("scheduling", "priorityClassName"),
                f"{priority!r} is not allowed by this installation "
                f"(templatePolicy.allowedPriorityClasses: {list(policy.allowed_priority_classes)}"
                "; '*' excludes the system-* classes)",
            )
        )
    if spec.image and not _image_allowed(spec.image, policy.allowed_image_prefixes):
        errors.append(
            (
                ("image",),
                f"{spec.image!r} is not from an allowed registry "
                f"(templatePolicy.allowedImagePrefixes: {list(policy.allowed_image_prefixes)})",
            )
        )
    return tuple(f"{_path(loc)}: {message}" for loc, message in errors)


def _path(loc: Loc) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _allowed(name: str, allowed: tuple[str, ...]) -> bool:
    return ANY in allowed or name in allowed


def _priority_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    if name in allowed:
        return True
    return ANY in allowed and not name.startswith(SYSTEM_PRIORITY_PREFIX)


def _image_allowed(image: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `image` lies under one of `prefixes`, at a boundary: `reg.io/team` allows
    `reg.io/team/x:1` and `reg.io/team:1`, not `reg.io/team-evil/x`."""
    if not prefixes:
        return True
    for prefix in prefixes:
        if image == prefix or (
            image.startswith(prefix) and (prefix[-1] in "/:@" or image[len(prefix)] in "/:@")
        ):
            return True
    return False


def _host_level(toleration: dict[str, Any]) -> bool:
    key = toleration.get("key") or ""
    if not key:
        return toleration.get("operator") == "Exists"  # an empty key with Exists: every taint
    if key in DEFAULT_TIMED_TAINTS and toleration.get("tolerationSeconds") is not None:
        return False
    return key.startswith(HOST_TAINT_PREFIXES)


def _volume_errors(volumes: list[dict[str, Any]], policy: TemplatePolicy) -> list[tuple[Loc, str]]:
    errors: list[tuple[Loc, str]] = []
    allowed = set(policy.allowed_volume_types)
    for index, volume in enumerate(volumes):
        for source in sorted(key for key in volume if key != "name"):
            if source not in allowed:
                errors.append(
                    (
                        ("template", "volumes", index, source),
                        f"{source} volumes are not allowed by this installation "
                        f"(templatePolicy.allowedVolumeTypes: {', '.join(sorted(allowed))})",
                    )
                )
        projected = volume.get("projected")
        sources = projected.get("sources") if isinstance(projected, dict) else None
        if policy.allow_service_account_tokens or not isinstance(sources, list):
            continue
        for position, item in enumerate(sources):
            if isinstance(item, dict) and "serviceAccountToken" in item:
                errors.append(
                    (
                        ("template", "volumes", index, "projected", "sources", position),
                        "a serviceAccountToken would give the pods an API token although dsgd "
                        "mounts none; not allowed by this installation "
                        "(templatePolicy.allowServiceAccountTokens)",
                    )
                )
    return errors
