"""One reconcile pass of an SGDExperiment: read, plan (pure), then act with API calls.

Read: the experiment (validated with every trial, and the installation's template
policy), its children (DistributedSGDJobs labelled `dsgd.io/experiment=<name>`
and controlled by it: its uid in their ownerReferences). Plan:
`experiments.plan.plan_experiment` decides which trials to create and the phase.
Act: create those children (`grid.trial_job`: labelled with experiment, cell and
seed, owned by the experiment; a 409 means "already there"), then write the
status: phase, conditions, counts, the trials that ended (`finishedTrials`) and
the per-cell `results` (`experiments.trial_results`).

Every step is idempotent, as the job's: a pass cut off anywhere runs again.
Trials that ended are remembered in the status, so a child deleted later (its
template's ttlSecondsAfterFinished) is neither recreated nor lost from the
results. The children are deleted with the experiment by the garbage collector.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from dsgd_contract.experiment import EXPERIMENT_LABEL
from dsgd_contract.job_status import (
    FAILED,
    INVALID,
    RECONCILE_ERROR,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL_PHASES,
)

from dsgd_operator import api
from dsgd_operator.experiments.api import KIND, PLURAL, SGDExperiment, SGDExperimentStatus
from dsgd_operator.experiments.grid import expand_trials, trial_job
from dsgd_operator.experiments.manifest import parse_experiment, trial_policy_problems
from dsgd_operator.experiments.plan import plan_experiment
from dsgd_operator.experiments.trial_results import (
    best_cell,
    cell_results,
    finished_trial,
    job_results,
)
from dsgd_operator.manifest import ManifestError
from dsgd_operator.reconcile.in_memory import ExperimentRuntime, OperatorContext
from dsgd_operator.reconcile.kube import ApiError
from dsgd_operator.reconcile.status import set_condition
from dsgd_operator.template_policy import DEFAULT_POLICY, TemplatePolicy

#: The condition each phase sets True (the others of these are set False): `kubectl wait
#: --for=condition=Succeeded sgdexperiment/NAME` works as for a job.
PHASE_CONDITIONS = {
    "Running": RUNNING,
    "Suspended": SUSPENDED,
    "Succeeded": SUCCEEDED,
    "Failed": FAILED,
}


def parse_experiment_body(
    body: Mapping[str, Any], policy: TemplatePolicy = DEFAULT_POLICY
) -> tuple[SGDExperiment | None, tuple[str, ...]]:
    """The experiment from kopf's body, or None and why the operator refuses it: its
    spec's problems (naming the trial's axis values and the field), or what the
    installation's template policy does not allow in a trial."""
    document = {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in body}
    name = (body.get("metadata") or {}).get("name", "?")
    try:
        experiment = parse_experiment(document, source=f"{KIND} {name}")
    except ManifestError as error:
        return None, error.problems
    refused = trial_policy_problems([experiment], policy)
    return (None, tuple(refused)) if refused else (experiment, ())


def controlled_by(child: Mapping[str, Any], uid: str | None) -> bool:
    """Whether `child` names the object with `uid` as its controller."""
    owners = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(o.get("controller") and o.get("uid") == uid for o in owners)


def _phase_of(child: Mapping[str, Any]) -> str | None:
    return (child.get("status") or {}).get("phase")


async def reconcile_experiment(
    ctx: OperatorContext,
    runtime: ExperimentRuntime,
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter,
) -> None:
    """One pass for the experiment in `body` (see the module docstring)."""
    namespace, name = runtime.namespace, runtime.name
    metadata = body.get("metadata") or {}
    generation, uid = metadata.get("generation"), metadata.get("uid")
    if runtime.status is None:
        runtime.status = SGDExperimentStatus.model_validate(body.get("status") or {})
    status = runtime.status.model_copy(deep=True)
    now = datetime.now(UTC)

    def condition(kind: str, value: bool, reason: str, message: str) -> bool:
        return set_condition(status.conditions, kind, value, reason, message, now, generation)

    experiment, problems = parse_experiment_body(body, ctx.options.template_policy)
    if experiment is None:
        message = "; ".join(problems)
        condition(INVALID, True, "InvalidSpec", message)
        status.phase = status.phase or "Pending"
        await _write_status(ctx, runtime, status)
        _event_once(runtime, body, "Warning", "InvalidSpec", f"experiment refused: {message}")
        return
    if status.is_true(INVALID):
        condition(INVALID, False, "Valid", "the spec is accepted")
    children = await ctx.kube.list_objects(
        api.API_VERSION, api.PLURAL, namespace, {EXPERIMENT_LABEL: name}
    )
    owned = {c["metadata"]["name"]: c for c in children if controlled_by(c, uid)}
    trials = {trial.name(name): trial for trial in expand_trials(experiment.spec)}
    finished = {entry.name: entry for entry in status.finished_trials if entry.name in trials}
    for child_name, child in owned.items():
        phase = _phase_of(child)
        if child_name in trials and phase in TERMINAL_PHASES and child_name not in finished:
            entry = finished_trial(experiment, trials[child_name], phase, job_results(child))
            finished[child_name] = entry
    phases = {n: _phase_of(c) for n, c in owned.items()}
    phases.update({n: entry.phase for n, entry in finished.items()})
    plan = plan_experiment(experiment, phases)
    try:
        for trial in plan.create:
            created = await ctx.kube.create(trial_job(experiment, trial), namespace)
            trial_name = trial.name(name)
            if not created and trial_name not in owned:
                _event_once(
                    runtime, body, "Warning", "TrialNameTaken",
                    f"a DistributedSGDJob {trial_name} that this experiment does not own "
                    "exists: delete or rename it, or rename the experiment",
                )  # fmt: skip
    except ApiError as error:
        if error.refused:
            message = f"{error.status} {error.reason}: {error.message}"
            condition(RECONCILE_ERROR, True, error.reason, message)
            await _write_status(ctx, runtime, status)
            _event_once(runtime, body, "Warning", "ApiRefused", message)
        raise  # the loop retries with a backoff
    if status.is_true(RECONCILE_ERROR):
        condition(RECONCILE_ERROR, False, "Reconciled", "every trial job was accepted")
    if plan.create:
        names = ", ".join(trial.name(name) for trial in plan.create)
        kopf.event(body, type="Normal", reason="TrialsCreated", message=f"created {names}")
    previous = status.phase
    status.phase = plan.phase
    status.trials = plan.trials
    status.finished_trials = [finished[n] for n in trials if n in finished]
    status.results = cell_results(experiment, status.finished_trials)
    status.best = best_cell(status.results) or status.best
    status.observed_generation = generation
    for phase, kind in PHASE_CONDITIONS.items():
        if phase == plan.phase or status.is_true(kind):
            condition(kind, phase == plan.phase, plan.phase, plan.reason)
    await _write_status(ctx, runtime, status)
    if previous != plan.phase and plan.phase in TERMINAL_PHASES:
        level = "Normal" if plan.phase == "Succeeded" else "Warning"
        kopf.event(body, type=level, reason=plan.phase, message=plan.reason)
        logger.info(f"experiment {plan.phase}: {plan.reason}")


async def _write_status(
    ctx: OperatorContext, runtime: ExperimentRuntime, status: SGDExperimentStatus
) -> None:
    if status != runtime.status:
        wire = status.to_wire()
        await ctx.kube.patch_status(api.API_VERSION, PLURAL, runtime.namespace, runtime.name, wire)
        runtime.status = status


def _event_once(
    runtime: ExperimentRuntime, body: Mapping[str, Any], type_: str, reason: str, message: str
) -> None:
    key = f"{reason}/{message}"
    if key not in runtime.posted:
        kopf.event(body, type=type_, reason=reason, message=message)
        runtime.posted.add(key)
