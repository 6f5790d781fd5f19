"""The API permissions the operator needs: the Helm chart's RBAC must grant exactly these.

A test renders the chart and compares its (Cluster)Role rules with this list, so
a handler that starts touching a new resource fails CI until the chart follows.
"""

from __future__ import annotations

from typing import NamedTuple

from dsgd_operator import api


class Permission(NamedTuple):
    api_group: str  # "" for the core group
    resource: str  # plural, with "/subresource" where one is meant
    verbs: tuple[str, ...]


_WATCH = ("get", "list", "watch")

REQUIRED_PERMISSIONS: list[Permission] = [
    # Our jobs: watched, finalizer and kopf's annotations patched, deleted after their TTL.
    Permission(api.GROUP, api.PLURAL, (*_WATCH, "patch", "delete")),
    Permission(api.GROUP, f"{api.PLURAL}/status", ("get", "patch")),
    # What a job becomes.
    Permission("", "pods", (*_WATCH, "create", "delete")),
    Permission("", "services", ("get", "create", "delete")),
    Permission("", "configmaps", ("get", "create", "delete")),
    Permission("policy", "poddisruptionbudgets", ("create", "delete")),
    Permission("scheduling.volcano.sh", "podgroups", ("get", "create", "delete")),
    Permission("scheduling.x-k8s.io", "podgroups", ("get", "create", "delete")),
    # Kubernetes Events on the jobs (kopf posts them through the core API).
    Permission("", "events", ("create",)),
    # kopf: notices CRDs (re)installed and namespaces appearing.
    Permission("apiextensions.k8s.io", "customresourcedefinitions", _WATCH),
    Permission("", "namespaces", _WATCH),
]
