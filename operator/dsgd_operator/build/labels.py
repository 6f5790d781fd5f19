"""The labels that tie a job's objects to it and tell its pods apart."""

from __future__ import annotations

from dsgd_operator.api import GROUP

JOB_NAME_LABEL = f"{GROUP}/job-name"
NODE_RANK_LABEL = f"{GROUP}/node-rank"
#: The gang attempt (status.restarts): a recreated gang is told apart from the
#: old one while the old pods are still terminating.
ATTEMPT_LABEL = f"{GROUP}/attempt"


def job_labels(job_name: str) -> dict[str, str]:
    """Labels on every object of the job; also the selector of its pods."""
    return {JOB_NAME_LABEL: job_name}


def pod_labels(job_name: str, node_rank: int, attempt: int) -> dict[str, str]:
    return {
        **job_labels(job_name),
        NODE_RANK_LABEL: str(node_rank),
        ATTEMPT_LABEL: str(attempt),
    }
