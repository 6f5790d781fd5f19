"""Reading SGDExperiment manifests, with the same one-line-per-problem errors as jobs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.experiments.api import KIND, SGDExperiment
from dsgd_operator.experiments.grid import expand_trials, trial_job
from dsgd_operator.manifest import (
    ManifestError,
    as_the_server_reads,
    describe_validation_error,
    parse_job,
    read_manifest_documents,
)
from dsgd_operator.template_policy import TemplatePolicy, policy_problems


def parse_experiment(document: Any, source: str = "<manifest>") -> SGDExperiment:
    """Validate one SGDExperiment document (every trial included), or raise ManifestError."""
    if not isinstance(document, dict) or document.get("kind") != KIND:
        got = document.get("kind") if isinstance(document, dict) else type(document).__name__
        raise ManifestError(source, (f"kind: expected {KIND}, got {got!r}",))
    # As the API server reads it (nulls of declared fields pruned, 2.0 in an integer
    # field read as 2), the job manifests' rule; trials get the same in grid.
    document = as_the_server_reads(document, _experiment_schema())
    try:
        return SGDExperiment.model_validate(document, strict=True)
    except ValidationError as error:
        raise ManifestError(source, describe_validation_error(error)) from None


@functools.cache
def _experiment_schema() -> dict[str, Any]:
    from dsgd_operator.experiments.crd import openapi_schema  # crd imports the models

    return openapi_schema()


def load_experiment(path: str | Path) -> SGDExperiment:
    """The one SGDExperiment of a YAML file; ManifestError for anything else."""
    documents = read_manifest_documents(path)
    if len(documents) != 1:
        raise ManifestError(
            str(path), (f"holds {len(documents)} documents; an experiment file holds one",)
        )
    return parse_experiment(documents[0], str(path))


def is_experiment(document: Any) -> bool:
    return isinstance(document, dict) and document.get("kind") == KIND


def load_manifests(path: str | Path) -> tuple[list[DistributedSGDJob], list[SGDExperiment]]:
    """The jobs and experiments of a (multi-document) file, for `dsgd validate/render/run`.

    Raises ManifestError with every problem of every document at once.
    """
    return parse_manifests(read_manifest_documents(path), str(path))


def parse_manifests(
    documents: list[Any], source: str
) -> tuple[list[DistributedSGDJob], list[SGDExperiment]]:
    """The jobs and experiments among `documents` (read from `source`, read once: a pipe
    such as /dev/stdin cannot be read again); ManifestError with every problem at once."""
    if not documents:
        raise ManifestError(source, ("no DistributedSGDJob in this file",))
    jobs, experiments, problems = [], [], []
    for index, document in enumerate(documents):
        where = source if len(documents) == 1 else f"{source}[{index}]"
        try:
            if is_experiment(document):
                experiments.append(parse_experiment(document, where))
            else:
                jobs.append(parse_job(document, where))
        except ManifestError as error:
            prefix = "" if len(documents) == 1 else f"(document {index}) "
            problems.extend(prefix + problem for problem in error.problems)
    if problems:
        raise ManifestError(source, tuple(problems))
    return jobs, experiments


def trial_policy_problems(experiments: list[SGDExperiment], policy: TemplatePolicy) -> list[str]:
    """The policy's refusals of the experiments' trial jobs, each problem once."""
    problems: dict[str, None] = {}
    for experiment in experiments:
        for trial in expand_trials(experiment.spec):
            job = parse_job(trial_job(experiment, trial))
            for problem in policy_problems(job, policy):
                # The trial's spec.x is the experiment's spec.template.x.
                where = "spec.template." + problem.removeprefix("spec.")
                problems[f"experiment {experiment.name}: {where}"] = None
    return list(problems)
