"""Object metadata shared by every child of a job: namespace, labels, owner."""

from __future__ import annotations

from dsgd_contract.pod import job_labels

from dsgd_operator import api
from dsgd_operator.api import DistributedSGDJob


def owner_references(job: DistributedSGDJob) -> list[dict]:
    """The job as controlling owner, so that deleting it deletes its children.

    Empty when the job has no uid (a manifest rendered before it was applied):
    an ownerReference without a uid is refused by the API server.
    """
    if not job.metadata.uid:
        return []
    return [
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "name": job.name,
            "uid": job.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


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
