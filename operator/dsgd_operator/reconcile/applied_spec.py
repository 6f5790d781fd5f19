"""status.appliedSpec: the sections a running gang was made from, kept while it runs.

A gang's checkpoints were made under its topology, algorithm, optimizer and
training sections; a change of them in the spec is refused (reported, and the
gang kept) until the job ends.
"""

from __future__ import annotations

from dsgd_contract.job_status import TERMINAL_PHASES

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.api_status import AppliedSpec, DistributedSGDJobStatus

#: Sections that shape the gang; changing them would need new pods.
IMMUTABLE_SECTIONS = ("topology", "algorithm", "optimizer", "training")


def applied_spec(job: DistributedSGDJob) -> AppliedSpec:
    """status.appliedSpec for a gang created from `job`: its immutable sections."""
    return AppliedSpec(**{section: getattr(job.spec, section) for section in IMMUTABLE_SECTIONS})


def effective_job(
    job: DistributedSGDJob, status: DistributedSGDJobStatus
) -> tuple[DistributedSGDJob, tuple[str, ...]]:
    """The job to act on, and the problems of a refused change of an immutable section.

    Once a gang was created (status.appliedSpec) and until the job ends, the sections
    the trainer reads (topology, algorithm, optimizer, training) stay as applied: its
    checkpoints were made under them. A changed spec is reported and the gang kept.
    Sections are compared in wire form, defaults included.
    """
    applied = status.applied_spec
    if applied is None or status.phase in TERMINAL_PHASES:
        return job, ()
    problems = []
    kept = {}
    for section in IMMUTABLE_SECTIONS:
        running = getattr(applied, section)
        if running is None:
            continue
        kept[section] = running
        wanted = getattr(job.spec, section).to_wire()
        if wanted != running.to_wire():
            problems.append(
                f"spec.{section} is immutable while the job runs: the gang runs "
                f"{running.to_wire()}, the spec now asks for {wanted}; the change is ignored "
                "(delete and recreate the job to change it)"
            )
    if not problems:
        return job, ()
    spec = job.spec.model_copy(update=kept)
    return job.model_copy(update={"spec": spec}), tuple(problems)
