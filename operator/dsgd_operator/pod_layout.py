"""The pod's volumes, and the rules that `spec.template` must keep around the pod contract.

Every pod of a job mounts its ConfigMap read-only at /etc/dsgd, writable
emptyDirs at /tmp and /dev/shm (the root filesystem is read-only), and gets
the PET_* / DSGD_* environment that wires torchrun (paths and variables:
dsgd_contract.pod). `dsgd_operator.builders` lays pods out with these constants;
`dsgd_operator.api` checks the template overrides against them, so that
`dsgd validate` and the operator refuse a collision with its field path instead
of creating pods that cannot start or that silently lose our settings.

This module must not import `dsgd_operator.api` (api imports it); the models
are only read through their attributes.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from dsgd_contract.pod import (
    CONFIG_DIR,
    GROUP,
    RESERVED_ENV_NAMES,
    RESERVED_ENV_PREFIXES,
    SHM_DIR,
    TMP_DIR,
)

from dsgd_operator import kube_rules

if TYPE_CHECKING:
    from dsgd_operator.api import DistributedSGDJobSpec, PodTemplateOverrides

CONFIG_VOLUME = "dsgd-config"
TMP_VOLUME = "dsgd-tmp"
SHM_VOLUME = "dsgd-shm"
CHECKPOINT_VOLUME = "dsgd-checkpoints"
OUTPUT_VOLUME = "dsgd-output"
#: Every volume we add is named with this prefix, so user volumes may not be.
RESERVED_VOLUME_PREFIX = "dsgd-"

#: Mount points users may not take: ours would be hidden.
RESERVED_MOUNT_PATHS = (CONFIG_DIR, TMP_DIR, SHM_DIR)
#: Nor may anything be mounted below these (a read-only ConfigMap, shared memory).
RESERVED_MOUNT_TREES = (CONFIG_DIR, SHM_DIR)

RESERVED_LABEL_PREFIX = f"{GROUP}/"
#: Annotations that set a container's security profile (AppArmor `unconfined`, legacy
#: seccomp): dsgd sets the pods' profile, and the template may not loosen it.
SECURITY_PROFILE_ANNOTATIONS = (
    "container.apparmor.security.beta.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/",
)

GPU_RESOURCE = "nvidia.com/gpu"
RESOURCE_SECTIONS = ("limits", "requests", "claims")

Loc = tuple[str | int, ...]
Errors = list[tuple[Loc, str]]


def is_within(path: str, root: str) -> bool:
    """Whether absolute POSIX `path` is `root` or lies below it."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity ("500m", "4Gi", 2) as a number; ValueError if malformed."""
    # kubernetes is only imported when a template has resources: importing it
    # costs a third of a second, and most manifests never need it.
    from kubernetes.utils.quantity import parse_quantity as kubernetes_parse_quantity

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{value!r} is not a quantity")
    return kubernetes_parse_quantity(value)


def template_errors(template: PodTemplateOverrides) -> Errors:
    """Problems of `spec.template` on its own, as (path inside the template, message)."""
    volume_names = {_name(volume) for volume in template.volumes} - {None}
    return [
        *_label_errors(template.labels),
        *kube_rules.label_errors("labels", template.labels),
        *kube_rules.annotation_errors(template.annotations),
        *_security_annotation_errors(template.annotations),
        *kube_rules.label_errors("nodeSelector", template.node_selector),
        *_env_errors(template.env),
        *kube_rules.env_errors(template.env),
        *_volume_errors(template.volumes),
        *kube_rules.volume_errors(template.volumes),
        *_mount_errors(template.volume_mounts, volume_names),
        *kube_rules.mount_errors(template.volume_mounts),
        *_resources_errors(template.resources),
        *_parameter_server_resources_errors(template.parameter_server_resources),
        *kube_rules.toleration_errors(template.tolerations),
    ]


def pod_layout_errors(spec: DistributedSGDJobSpec) -> Errors:
    """Problems between the template, the topology and the training paths (spec-relative)."""
    errors: Errors = []
    for field, path in (
        ("checkpointDir", spec.training.checkpoint_dir),
        ("outputDir", spec.training.output_dir),
    ):
        if path is None:
            continue
        if not posixpath.isabs(path):
            errors.append(
                (
                    ("training", field),
                    f"{path!r} must be an absolute path: the pod's root filesystem is "
                    "read-only, only mounted directories are writable",
                )
            )
        elif any(is_within(path, root) for root in RESERVED_MOUNT_TREES):
            errors.append(
                (("training", field), f"{path!r} lies inside {_reserved_trees()}, which is ours")
            )
    resources = spec.template.resources or {}
    processes = spec.topology.processes_per_node
    for section in ("limits", "requests"):
        amounts = resources.get(section)
        if not isinstance(amounts, dict) or GPU_RESOURCE not in amounts:
            continue
        loc: Loc = ("template", "resources", section, GPU_RESOURCE)
        if not spec.topology.gpu:
            errors.append(
                (
                    loc,
                    "topology.gpu is false: set it to true to use GPUs (the GPUs per pod "
                    "are then topology.processesPerNode)",
                )
            )
            continue
        try:
            wanted = parse_quantity(amounts[GPU_RESOURCE])
        except ValueError:
            continue  # reported by template_errors
        if wanted != processes:
            errors.append(
                (
                    loc,
                    f"{amounts[GPU_RESOURCE]!r} contradicts topology.processesPerNode "
                    f"({processes}): each rank drives one GPU; leave it out, the builder "
                    "requests the GPUs",
                )
            )
    return errors


def _name(item: dict[str, Any]) -> str | None:
    """The item's name, or None when it has none worth the name (missing, empty, not text)."""
    name = item.get("name")
    return name if isinstance(name, str) and name else None


def _reserved_trees() -> str:
    return " or ".join(RESERVED_MOUNT_TREES)


def _label_errors(labels: dict[str, str]) -> Errors:
    return [
        (
            ("labels", key),
            f"labels under {RESERVED_LABEL_PREFIX} are set by dsgd (they select the job's pods)",
        )
        for key in labels
        if key.startswith(RESERVED_LABEL_PREFIX)
    ]


def _security_annotation_errors(annotations: dict[str, str]) -> Errors:
    return [
        (
            ("annotations", key),
            "security-profile annotations are refused: dsgd runs every pod with seccomp "
            "RuntimeDefault and no privileges, and the template cannot change that",
        )
        for key in annotations
        if key.startswith(SECURITY_PROFILE_ANNOTATIONS)
    ]


def _is_reserved_env(name: str) -> bool:
    return name.startswith(RESERVED_ENV_PREFIXES) or name in RESERVED_ENV_NAMES


def _env_errors(env: list[dict[str, Any]]) -> Errors:
    errors: Errors = []
    counts = Counter(_name(var) for var in env)
    for index, var in enumerate(env):
        name = _name(var)
        loc: Loc = ("env", index, "name")
        if name is None:
            errors.append((loc, "every environment variable needs a name"))
        elif _is_reserved_env(name):
            errors.append(
                (
                    loc,
                    f"{name} is set by dsgd: names starting with "
                    f"{' or '.join(RESERVED_ENV_PREFIXES)} and {', '.join(RESERVED_ENV_NAMES)} "
                    "wire torchrun and the trainer",
                )
            )
        elif counts[name] > 1:
            errors.append((loc, f"{name} is set more than once"))
    return errors


def _volume_errors(volumes: list[dict[str, Any]]) -> Errors:
    errors: Errors = []
    counts = Counter(_name(volume) for volume in volumes)
    for index, volume in enumerate(volumes):
        name = _name(volume)
        if name is None:
            errors.append((("volumes", index, "name"), "every volume needs a name"))
        elif name.startswith(RESERVED_VOLUME_PREFIX):
            errors.append(
                (
                    ("volumes", index, "name"),
                    f"{name!r}: volume names starting with {RESERVED_VOLUME_PREFIX!r} are "
                    "dsgd's own",
                )
            )
        elif counts[name] > 1:
            errors.append((("volumes", index, "name"), f"{name!r} is defined more than once"))
        if "hostPath" in volume:
            errors.append(
                (
                    ("volumes", index, "hostPath"),
                    "hostPath volumes are refused: they expose the node's filesystem to the "
                    "job and break the isolation between jobs; use a PersistentVolumeClaim",
                )
            )
    return errors


def _mount_errors(mounts: list[dict[str, Any]], volume_names: set[str]) -> Errors:
    errors: Errors = []
    for index, mount in enumerate(mounts):
        name, path = _name(mount), mount.get("mountPath")
        if name is None:
            errors.append((("volumeMounts", index, "name"), "every mount needs a volume name"))
        elif name not in volume_names:
            errors.append(
                (
                    ("volumeMounts", index, "name"),
                    f"{name!r} is not a volume of template.volumes"
                    + (f" (there: {', '.join(sorted(volume_names))})" if volume_names else ""),
                )
            )
        loc: Loc = ("volumeMounts", index, "mountPath")
        if not isinstance(path, str) or not posixpath.isabs(path):
            errors.append((loc, f"{path!r} is not an absolute path"))
        elif posixpath.normpath(path) in RESERVED_MOUNT_PATHS or any(
            is_within(path, root) for root in RESERVED_MOUNT_TREES
        ):
            errors.append(
                (
                    loc,
                    f"{path!r} is dsgd's: the config at {CONFIG_DIR}, scratch space at "
                    f"{TMP_DIR} and shared memory at {SHM_DIR} are mounted by dsgd",
                )
            )
    return errors


def _parameter_server_resources_errors(resources: dict[str, Any] | None) -> Errors:
    """parameterServerResources: what resources may say, and no GPU (servers are CPU pods)."""
    errors = [
        (("parameterServerResources", *loc[1:]), message)
        for loc, message in _resources_errors(resources)
    ]
    for section in ("limits", "requests"):
        amounts = (resources or {}).get(section)
        if isinstance(amounts, dict) and GPU_RESOURCE in amounts:
            errors.append(
                (
                    ("parameterServerResources", section, GPU_RESOURCE),
                    "parameter servers are CPU pods: they hold shards and apply updates",
                )
            )
    return errors


def _resources_errors(resources: dict[str, Any] | None) -> Errors:
    errors: Errors = []
    quantities: dict[Loc, Decimal] = {}
    for section, amounts in (resources or {}).items():
        if section not in RESOURCE_SECTIONS:
            errors.append(
                (("resources", section), f"unknown field; use {', '.join(RESOURCE_SECTIONS)}")
            )
        elif section != "claims":
            if not isinstance(amounts, dict):
                errors.append((("resources", section), 'expected a mapping such as {cpu: "2"}'))
                continue
            for resource, amount in amounts.items():
                try:
                    quantities[section, resource] = parse_quantity(amount)
                except ValueError:
                    errors.append(
                        (
                            ("resources", section, resource),
                            f"{amount!r} is not a Kubernetes quantity (e.g. 2, 500m, 4Gi)",
                        )
                    )
    return errors + kube_rules.resource_amount_errors(resources or {}, quantities)
