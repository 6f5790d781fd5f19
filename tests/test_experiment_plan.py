"""The experiment planner: parallelism never exceeded, suspend, maxFailedTrials, phases.

The oracle is a simulation written here: a scheduler that asks the planner for
each pass, then lets children finish in an order drawn by a seeded generator;
at every step the number of unfinished children is checked against parallelism
and every trial must be created exactly once.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from dsgd_operator.experiments.manifest import parse_experiment
from dsgd_operator.experiments.plan import plan_experiment

NAMES = [f"x-c{c}-s{s}" for c in range(3) for s in (0, 1)]


def experiment(**spec: Any):
    return parse_experiment(
        {
            "apiVersion": "dsgd.io/v1alpha1",
            "kind": "SGDExperiment",
            "metadata": {"name": "x"},
            "spec": {
                "template": {
                    "training": {"model": "mlp", "epochs": 2},
                    "optimizer": {"warmupEpochs": 0},
                },
                "axes": [{"field": "topology.nodes", "values": [1, 2, 3]}],
                "seeds": [0, 1],
                **spec,
            },
        }
    )


@pytest.mark.parametrize("parallelism", [1, 2, 4, 10])
def test_parallelism_is_never_exceeded_and_every_trial_runs_once(parallelism: int) -> None:
    rng = random.Random(parallelism)
    exp = experiment(parallelism=parallelism)
    children: dict[str, str | None] = {}
    created: list[str] = []
    while True:
        plan = plan_experiment(exp, children)
        for trial in plan.create:
            name = trial.name("x")
            assert name not in children
            children[name] = None  # created, no status yet
            created.append(name)
        unfinished = [n for n, p in children.items() if p not in ("Succeeded", "Failed")]
        assert len(unfinished) <= parallelism
        assert plan.trials.running == len(unfinished)
        if plan.phase == "Succeeded":
            break
        assert plan.phase == "Running"
        # Some running child moves on: first to Running, then to Succeeded.
        name = rng.choice(unfinished)
        children[name] = "Succeeded" if children[name] == "Running" else "Running"
    assert created == NAMES  # grid order, each once
    assert plan.trials.model_dump() == {"total": 6, "running": 0, "succeeded": 6, "failed": 0}


def test_a_new_experiment_creates_its_first_parallelism_trials_at_once() -> None:
    plan = plan_experiment(experiment(parallelism=2), {})
    assert [t.name("x") for t in plan.create] == NAMES[:2]
    assert plan.phase == "Running" and plan.trials.running == 2


def test_suspended_experiment_starts_nothing_and_lets_running_trials_finish() -> None:
    fresh = plan_experiment(experiment(suspend=True, parallelism=3), {})
    assert (fresh.create, fresh.phase) == ([], "Suspended")
    plan = plan_experiment(
        experiment(suspend=True, parallelism=3), {NAMES[0]: "Running", NAMES[1]: "Succeeded"}
    )
    assert (plan.create, plan.phase, plan.trials.running) == ([], "Suspended", 1)
    resumed = plan_experiment(
        experiment(parallelism=3), {NAMES[0]: "Running", NAMES[1]: "Succeeded"}
    )
    assert [t.name("x") for t in resumed.create] == NAMES[2:4]


def test_failures_beyond_max_failed_trials_fail_the_experiment() -> None:
    children = {NAMES[0]: "Failed", NAMES[1]: "Running"}
    tolerated = plan_experiment(experiment(parallelism=2, maxFailedTrials=1), children)
    assert tolerated.phase == "Running" and [t.name("x") for t in tolerated.create] == [NAMES[2]]
    failed = plan_experiment(experiment(parallelism=2, maxFailedTrials=0), children)
    assert (failed.create, failed.phase) == ([], "Failed")
    assert "more than maxFailedTrials (0)" in failed.reason
    # All ended with failures within the limit: the experiment succeeded.
    ended = {name: "Succeeded" for name in NAMES} | {NAMES[3]: "Failed"}
    assert plan_experiment(experiment(maxFailedTrials=1), ended).phase == "Succeeded"


def test_children_that_are_not_trials_are_ignored() -> None:
    plan = plan_experiment(experiment(parallelism=1), {"someone-else": "Running"})
    assert [t.name("x") for t in plan.create] == [NAMES[0]]
