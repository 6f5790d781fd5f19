"""status.appliedSpec: the sections a running gang was made from, kept while it runs.

A gang's checkpoints were made under its topology, algorithm, optimizer and
training sections; a change of them in the spec is refused (reported, and the
gang kept) until the job ends.
"""

from __future__ import annotations

from dsgd_contract.job_status import TERMINAL_PHASES

from dsgd_operator.api import Algorithm, DistributedSGDJob, Optimizer, Topology, Training

#: Sections that shape the gang; changing them would need new pods.
IMMUTABLE_SECTIONS = ("topology", "algorithm", "optimizer", "training")


def applied_spec(job: DistributedSGDJob) -> dict:
    """status.appliedSpec for a gang created from `job`: its immutable sections, wire form."""
    return {section: getattr(job.spec, section).to_wire() for section in IMMUTABLE_SECTIONS}


def effective_job(
    job: DistributedSGDJob, status: dict
) -> tuple[DistributedSGDJob, tuple[str, ...]]:
    """The job to act on, and the problems of a refused change of an immutable section.

    Once a gang was created (status.appliedSpec) and until the job ends, the sections
    the trainer reads (topology, algorithm, optimizer, training) stay as applied: its
    checkpoints were made under them. A changed spec is reported and the gang kept.
    """
    applied = status.get("appliedSpec")
    if not applied or status.get("phase") in TERMINAL_PHASES:
        return job, ()
    problems = []
    for section in IMMUTABLE_SECTIONS:
        wanted = getattr(job.spec, section).to_wire()
        running = applied.get(section)
        if running is not None and wanted != running:
            problems.append(
                f"spec.{section} is immutable while the job runs: the gang runs {running}, "
                f"the spec now asks for {wanted}; the change is ignored (delete and recreate "
                "the job to change it)"
            )
    if not problems:
        return job, ()
    section_models = {
        "topology": Topology,
        "algorithm": Algorithm,
        "optimizer": Optimizer,
        "training": Training,
    }
    spec = job.spec.model_copy(
        update={
            section: section_models[section].model_validate(applied[section])
            for section in IMMUTABLE_SECTIONS
            if section in applied
        }
    )
    return job.model_copy(update={"spec": spec}), tuple(problems)
