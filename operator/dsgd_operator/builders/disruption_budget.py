"""The job's PodDisruptionBudget: a running gang is not drained one pod at a time.

A gang is all or nothing: evicting one pod restarts every pod from the last
checkpoint. With minAvailable = every member (nodes, and a downpour-sgd job's
parameter servers), the Eviction API (`kubectl drain`, the
cluster autoscaler) refuses, with 429, to evict any pod of a healthy gang;
pods that are not Ready yet may still be evicted (they hold no progress). An
administrator who must drain now deletes the PDB; the eviction then counts as
a disruption, not a failure (status.disruptions, not backoffLimit).
"""

from __future__ import annotations

from dsgd_contract.pod import job_labels

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders.metadata import object_meta


def build_pod_disruption_budget(job: DistributedSGDJob) -> dict:
    """policy/v1 PodDisruptionBudget named after the job, over all its pods."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(job, job.name),
        "spec": {
            "minAvailable": job.spec.topology.gang_members,
            "selector": {"matchLabels": job_labels(job.name)},
            # Pods that never became Ready may go: they hold no training progress.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
