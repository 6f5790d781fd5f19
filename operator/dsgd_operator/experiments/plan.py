"""The experiment's reconcile decisions, pure: which child jobs to create now, and its status.

Input: the experiment and what its children (DistributedSGDJobs labelled
`dsgd.io/experiment=<name>`) report: name → phase (None while a new child has no
status yet). Output: the trials to create, in grid order, and the status counts
and phase. The operator's pass (`reconcile/experiment_reconciler.py`) lists the
children, creates them (owned by the experiment, `grid.trial_job`) and writes
the status; `dsgd experiment run` follows the same rules locally.

Rules, as Katib's and Kubernetes Job's: at most `parallelism` children are not
finished at any time; more than `maxFailedTrials` failed children fail the
experiment and start nothing more (running ones are left to finish); `suspend`
starts nothing (running ones finish); the experiment succeeds when every trial
ended and at most `maxFailedTrials` failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dsgd_contract.experiment import ExperimentPhase
from dsgd_contract.job_status import TERMINAL_PHASES

from dsgd_operator.experiments.api import SGDExperiment, TrialCounts
from dsgd_operator.experiments.grid import Trial, expand_trials


@dataclass(frozen=True)
class ExperimentPlan:
    """What one reconcile pass does: create these trials; write this phase and these counts."""

    create: list[Trial]
    phase: ExperimentPhase
    trials: TrialCounts
    reason: str


def plan_experiment(
    experiment: SGDExperiment, children: Mapping[str, str | None]
) -> ExperimentPlan:
    """The pass's decisions for `experiment`, given its children's phases by name.

    Children whose names are not trials of the grid are ignored (not counted).
    """
    spec = experiment.spec
    trials = expand_trials(spec)
    names = {trial.name(experiment.name): trial for trial in trials}
    phases = {name: phase for name, phase in children.items() if name in names}
    succeeded = sum(phase == "Succeeded" for phase in phases.values())
    failed = sum(phase == "Failed" for phase in phases.values())
    running = sum(phase not in TERMINAL_PHASES for phase in phases.values())
    missing = [trial for name, trial in names.items() if name not in phases]

    def plan(create: list[Trial], phase: ExperimentPhase, reason: str) -> ExperimentPlan:
        counts = TrialCounts(
            total=len(trials), running=running + len(create), succeeded=succeeded, failed=failed
        )
        return ExperimentPlan(create, phase, counts, reason)

    if failed > spec.max_failed_trials:
        return plan(
            [],
            "Failed",
            f"{failed} trial(s) failed, more than maxFailedTrials ({spec.max_failed_trials})",
        )
    if not missing and running == 0:
        return plan([], "Succeeded", f"{succeeded} of {len(trials)} trials succeeded")
    if spec.suspend:
        return plan([], "Suspended", f"suspended: {running} trial(s) still running")
    create = missing[: max(spec.parallelism - running, 0)]
    started = phases or create
    return plan(
        create,
        "Running" if started else "Pending",
        f"{succeeded + failed} of {len(trials)} trials ended",
    )
