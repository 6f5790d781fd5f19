"""Kubernetes' own rules for the values `spec.template` passes into the pods, checked up front.

The template's free-form fields (labels, env, volumes, resources, …) are
copied into every pod. Without these checks `dsgd validate` accepts values
the API server then refuses when the operator creates the pods, so the job
never starts. The rules are the API server's (k8s.io/apimachinery validation,
k8s.io/kubernetes pkg/apis/core/validation, Kubernetes 1.37) for the values a
user writes by hand; tests/test_server_validation.py checks them against a
real server with generated manifests.

This module must not import `dsgd_operator.api` (api imports it, through
pod_layout).
"""

from __future__ import annotations

import re
from typing import Any

Loc = tuple[str | int, ...]
Errors = list[tuple[Loc, str]]

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
#: Printable ASCII but '=' (RelaxedEnvironmentVariableValidation, GA in 1.34).
_ENV_NAME = re.compile(r"[ -<>-~]+")
_NATIVE_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_GPU = "nvidia.com/gpu"
_TOLERATION_OPERATORS = ("Exists", "Equal")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
#: Pod fields the downward API serves (`fieldRef.fieldPath`, apiVersion v1): to env
#: variables, and to files of a downwardAPI volume; both also take one label or
#: annotation, `metadata.labels['<key>']`.
_ENV_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)
_VOLUME_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
)
_SUBSCRIPTED_FIELD = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]", re.DOTALL)
#: The API server's cap on all annotations of an object together.
_ANNOTATIONS_MAX_BYTES = 256 * 1024


def is_dns_label(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 63 and bool(_DNS_LABEL.fullmatch(value))


def is_dns_subdomain(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(value))


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a label/annotation key (`[prefix/]name`), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return f"{key!r}: the prefix before '/' must be a DNS subdomain (e.g. example.com)"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (
            f"{key!r} is not a valid key: at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit, with an optional DNS prefix and '/'"
        )
    return None


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        return (
            f"{value!r} is not a valid label value: at most 63 letters, digits, '-', '_' or "
            "'.', starting and ending with a letter or digit (or empty)"
        )
    return None


def label_errors(field: str, labels: dict[str, str]) -> Errors:
    """Problems of a label map (labels, nodeSelector): keys and values."""
    errors: Errors = []
    for key, value in labels.items():
        problem = qualified_name_problem(key) or label_value_problem(value)
        if problem:
            errors.append(((field, key), problem))
    return errors


def annotation_errors(annotations: dict[str, str]) -> Errors:
    errors: Errors = [
        (("annotations", key), problem)
        for key in annotations
        if (problem := qualified_name_problem(key))
    ]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > _ANNOTATIONS_MAX_BYTES:
        errors.append((("annotations",), f"{size} bytes; at most {_ANNOTATIONS_MAX_BYTES}"))
    return errors


def env_errors(env: list[dict[str, Any]]) -> Errors:
    """Names the server refuses (empty, '=', not printable ASCII) and value with valueFrom."""
    errors: Errors = []
    for index, var in enumerate(env):
        name = var.get("name")
        if isinstance(name, str) and name and not _ENV_NAME.fullmatch(name):
            errors.append(
                (
                    ("env", index, "name"),
                    f"{name!r} is not a valid environment variable name: printable ASCII "
                    "characters other than '='",
                )
            )
        if var.get("value") and var.get("valueFrom") is not None:
            errors.append((("env", index, "valueFrom"), "set either value or valueFrom, not both"))
        field_ref = (var.get("valueFrom") or {}).get("fieldRef")
        if isinstance(field_ref, dict):
            loc: Loc = ("env", index, "valueFrom", "fieldRef")
            errors += field_ref_errors(loc, field_ref, _ENV_FIELD_PATHS)
    return errors


def field_ref_errors(loc: Loc, field_ref: dict[str, Any], paths: tuple[str, ...]) -> Errors:
    """A downward-API `fieldRef` names a pod field the server serves, in apiVersion v1."""
    errors: Errors = []
    version = field_ref.get("apiVersion")
    if version not in (None, "", "v1"):
        errors.append(((*loc, "apiVersion"), f"{version!r}: the downward API serves only v1"))
    path = field_ref.get("fieldPath")
    if not isinstance(path, str):
        return errors
    subscripted = _SUBSCRIPTED_FIELD.fullmatch(path)
    if subscripted is not None:
        problem = qualified_name_problem(subscripted.group(2))
        if problem is not None:
            errors.append(((*loc, "fieldPath"), problem))
    elif path not in paths:
        errors.append(
            (
                (*loc, "fieldPath"),
                f"{path!r} is not a field the downward API serves here: one of "
                f"{', '.join(paths)}, metadata.labels['<key>'] or metadata.annotations['<key>']",
            )
        )
    return errors


def volume_errors(volumes: list[dict[str, Any]]) -> Errors:
    """Volume names must be DNS labels; each volume has exactly one source."""
    errors: Errors = []
    for index, volume in enumerate(volumes):
        name = volume.get("name")
        if isinstance(name, str) and name and not is_dns_label(name):
            errors.append(
                (
                    ("volumes", index, "name"),
                    f"{name!r} is not a DNS label: at most 63 lower-case letters, digits and "
                    "'-', starting and ending with a letter or digit",
                )
            )
        # Every field of a core/v1 Volume but `name` is a source; a volume has exactly one.
        sources = sorted(key for key in volume if key != "name")
        if len(sources) != 1:
            found = f"it has {', '.join(sources)}" if sources else "it has none"
            errors.append(
                (
                    ("volumes", index),
                    f"a volume needs exactly one source (emptyDir, persistentVolumeClaim, "
                    f"configMap, …); {found}",
                )
            )
        items = (volume.get("downwardAPI") or {}).get("items") or []
        for item_index, item in enumerate(items if isinstance(items, list) else []):
            field_ref = item.get("fieldRef") if isinstance(item, dict) else None
            if isinstance(field_ref, dict):
                loc: Loc = ("volumes", index, "downwardAPI", "items", item_index, "fieldRef")
                errors += field_ref_errors(loc, field_ref, _VOLUME_FIELD_PATHS)
    return errors


def mount_errors(mounts: list[dict[str, Any]]) -> Errors:
    errors: Errors = []
    for index, mount in enumerate(mounts):
        sub_path = mount.get("subPath")
        if isinstance(sub_path, str) and (sub_path.startswith("/") or ".." in sub_path.split("/")):
            errors.append(
                (
                    ("volumeMounts", index, "subPath"),
                    f"{sub_path!r} must be a relative path without '..'",
                )
            )
    return errors


def resource_name_problem(name: str) -> str | None:
    if name in _NATIVE_RESOURCES or name.startswith("hugepages-"):
        return None
    if "/" not in name:
        return (
            f"{name!r} is not a container resource: use cpu, memory, ephemeral-storage, "
            "hugepages-<size> or a domain-prefixed extended resource (example.com/foo)"
        )
    return qualified_name_problem(name)


def _overcommittable(name: str) -> bool:
    """cpu, memory, ephemeral-storage; extended resources and huge pages are not."""
    return name in _NATIVE_RESOURCES


def resource_amount_errors(resources: dict[str, Any], quantities: dict[Loc, Any]) -> Errors:
    """Names, signs, requests ≤ limits; `quantities` maps (section, name) to parsed amounts.

    Resources that cannot be overcommitted (extended ones such as
    example.com/foo, and hugepages-<size>) need a limit, and a request equal
    to it; extended ones are whole numbers, huge pages whole pages, and huge
    pages need a cpu or memory amount too.
    """
    errors: Errors = []
    names = {name for _, name in quantities}
    for (section, name), amount in quantities.items():
        loc: Loc = ("resources", section, name)
        given = resources[section][name]
        problem = resource_name_problem(str(name))
        if problem:
            errors.append((loc, problem))
        elif amount < 0:
            errors.append((loc, f"{given!r} is negative"))
        elif "/" in name and amount != amount.to_integral_value():
            errors.append((loc, f"{given!r}: extended resources are whole numbers"))
        elif name.startswith("hugepages-") and (page := _page_size(name)) and amount % page:
            errors.append((loc, f"{given!r} is not a whole number of {name[10:]} pages"))
    for (section, name), request in quantities.items():
        # The GPU count is the topology's: the builder sets its limit (dsgd_operator.pod_layout).
        if section != "requests" or _overcommittable(str(name)) or name == _GPU:
            continue
        limit = quantities.get(("limits", name))
        if limit is None:
            errors.append(
                (
                    ("resources", "limits", name),
                    f"{name} cannot be overcommitted: give a limit (the request defaults to it)",
                )
            )
        elif request != limit:
            errors.append(
                (
                    ("resources", "requests", name),
                    f"must equal the limit {resources['limits'][name]!r}",
                )
            )
    for (section, name), request in quantities.items():
        limit = quantities.get(("limits", name))
        if (
            section == "requests"
            and _overcommittable(str(name))
            and limit is not None
            and request > limit
        ):
            errors.append(
                (
                    ("resources", "requests", name),
                    f"{resources['requests'][name]!r} is more than the limit "
                    f"{resources['limits'][name]!r}",
                )
            )
    if any(str(n).startswith("hugepages-") for n in names) and not names & {"cpu", "memory"}:
        errors.append((("resources",), "huge pages need a cpu or memory amount too"))
    return errors


def _page_size(name: str) -> Any:
    from dsgd_operator.pod_layout import parse_quantity

    try:
        return parse_quantity(name.removeprefix("hugepages-"))
    except ValueError:
        return None


def toleration_errors(tolerations: list[dict[str, Any]]) -> Errors:
    errors: Errors = []
    for index, toleration in enumerate(tolerations):
        key, operator = toleration.get("key"), toleration.get("operator") or "Equal"
        effect, value = toleration.get("effect"), toleration.get("value")
        if key and (problem := qualified_name_problem(str(key))):
            errors.append((("tolerations", index, "key"), problem))
        if operator not in _TOLERATION_OPERATORS:
            errors.append(
                (("tolerations", index, "operator"), f"{operator!r}: use Exists or Equal")
            )
        elif operator == "Exists" and value:
            errors.append((("tolerations", index, "value"), "must be empty with operator Exists"))
        elif operator == "Equal" and not key:
            errors.append((("tolerations", index, "key"), "operator Equal needs a key"))
        elif operator == "Equal" and value and (problem := label_value_problem(str(value))):
            errors.append((("tolerations", index, "value"), problem))
        if effect and effect not in _TAINT_EFFECTS:
            errors.append(
                (("tolerations", index, "effect"), f"{effect!r}: use {', '.join(_TAINT_EFFECTS)}")
            )
        if toleration.get("tolerationSeconds") is not None and effect != "NoExecute":
            errors.append(
                (("tolerations", index, "tolerationSeconds"), "only with effect NoExecute")
            )
    return errors


def image_problem(image: str) -> str | None:
    if image != image.strip():
        return f"{image!r} must not have leading or trailing whitespace"
    return None
