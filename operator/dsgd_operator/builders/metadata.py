"""Object metadata shared by every child of a job: namespace, labels, owner."""

from __future__ import annotations

from dsgd_contract.experiment import TRIAL_LABELS
from dsgd_contract.pod import job_labels

from dsgd_operator import api
from dsgd_operator.api import DistributedSGDJob


def controller_references(api_version: str, kind: str, name: str, uid: str | None) -> list[dict]:
    """An object as its children's controlling owner, so that deleting it deletes them
    (the garbage collector). Empty without a uid (a manifest rendered before it was
    applied): an ownerReference without one is refused by the API server."""
    if not uid:
        return []
    return [
        {
            "apiVersion": api_version,
            "kind": kind,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def owner_references(job: DistributedSGDJob) -> list[dict]:
    """The job as controlling owner of its pods, Service, ConfigMap, ..."""
    return controller_references(api.API_VERSION, api.KIND, job.name, job.metadata.uid)


def inherited_labels(job: DistributedSGDJob) -> dict[str, str]:
    """The job's labels its pods carry too: a trial's experiment, cell and seed, so that
    the trainers' series can be selected by them (PodMonitor podTargetLabels, dashboards)."""
    return {key: value for key, value in job.metadata.labels.items() if key in TRIAL_LABELS}


def object_meta(
    job: DistributedSGDJob,
    name: str,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict:
    """metadata for a child named `name`: the job's namespace (when set), labels, owner."""
    meta: dict = {"name": name}
    if job.metadata.namespace:
        meta["namespace"] = job.metadata.namespace
    meta["labels"] = dict(labels) if labels is not None else job_labels(job.name)
    if annotations:
        meta["annotations"] = dict(annotations)
    owners = owner_references(job)
    if owners:
        meta["ownerReferences"] = owners
    return meta
