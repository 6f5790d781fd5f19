"""The API permissions the operator needs: the Helm chart's RBAC must grant exactly these.

Tests render the chart and compare its (Cluster)Role rules with
`required_permissions()`, and on a real API server compare them with the
requests the operator made (the audit log), so a handler that starts touching
a new resource fails CI until the chart follows, and a right nobody uses shows.
"""

from __future__ import annotations

from typing import NamedTuple

from dsgd_operator import api
from dsgd_operator.experiments.api import PLURAL as EXPERIMENT_PLURAL


class Permission(NamedTuple):
    api_group: str  # "" for the core group
    resource: str  # plural, with "/subresource" where one is meant
    verbs: tuple[str, ...]


# No `get` anywhere: the operator lists and watches, creates (409 = exists), patches and
# deletes (404 = gone); it never reads one object back (checked against the audit log).
_WATCH = ("list", "watch")

#: Namespaced resources, in every namespace the operator serves.
JOB_PERMISSIONS: list[Permission] = [
    # Our jobs: watched, created as an experiment's trials, deleted after their TTL;
    # patched only to drop the finalizer that operators before 0.2 put on them (kopf does
    # that by itself).
    Permission(api.GROUP, api.PLURAL, (*_WATCH, "create", "patch", "delete")),
    Permission(api.GROUP, f"{api.PLURAL}/status", ("patch",)),
    # Experiments: watched; their status written. Their trials go with them through
    # ownerReferences (the garbage collector), so they are never deleted by us.
    Permission(api.GROUP, EXPERIMENT_PLURAL, _WATCH),
    Permission(api.GROUP, f"{EXPERIMENT_PLURAL}/status", ("patch",)),
    # What a job becomes. Only pods are deleted by the operator (gang restarts,
    # cleanPodPolicy, suspend); everything goes with the job through ownerReferences
    # (the garbage collector).
    Permission("", "pods", (*_WATCH, "create", "delete")),
    Permission("", "services", ("create",)),
    Permission("", "configmaps", ("create",)),
    Permission("policy", "poddisruptionbudgets", ("create",)),
    Permission("scheduling.volcano.sh", "podgroups", ("create",)),
    Permission("scheduling.x-k8s.io", "podgroups", ("create",)),
    # Kubernetes Events on the jobs (kopf posts them through the core API).
    Permission("", "events", ("create",)),
]

#: kopf peering among replicas: watch the peering object, patch our entry into its status.
_PEERING_VERBS = ("list", "watch", "patch")

#: Cluster-wide installs only: kopf notices CRDs (re)installed; the ClusterKopfPeering.
#: Namespaced installs need nothing cluster-scoped (kopf's scanning is off there).
CLUSTER_WIDE_PERMISSIONS: list[Permission] = [
    Permission("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
    Permission("kopf.dev", "clusterkopfpeerings", _PEERING_VERBS),
]

#: Namespaced installs: the KopfPeering of each served namespace.
NAMESPACED_PEERING = Permission("kopf.dev", "kopfpeerings", _PEERING_VERBS)


def required_permissions(namespaced: bool) -> list[Permission]:
    """Everything the operator needs: in each served namespace when `namespaced`, else
    cluster-wide (one ClusterRole)."""
    if namespaced:
        return [*JOB_PERMISSIONS, NAMESPACED_PEERING]
    return [*CLUSTER_WIDE_PERMISSIONS, *JOB_PERMISSIONS]


#: A cluster-wide install's permissions.
REQUIRED_PERMISSIONS: list[Permission] = required_permissions(namespaced=False)
