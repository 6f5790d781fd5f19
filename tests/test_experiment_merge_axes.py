"""SGDExperiment axes with `merge: true`: values merged into their field (RFC 7386), and
axes without a field whose values are partial job specs, so that one cell (Downpour SGD
with its parameter servers and its optimizer) can differ from the others in several
sections at once.

The oracles: RFC 7386's own examples (its Appendix A), the expected trial specs
written out by hand, and the job rules (`parse_job` on every rendered trial).
"""

from __future__ import annotations

from typing import Any

import pytest
from dsgd_operator.experiments.grid import expand_trials, merge_patch, trial_job
from dsgd_operator.experiments.manifest import parse_experiment
from dsgd_operator.manifest import parse_job

from tests.test_experiment_grid import experiment, refusal

DOWNPOUR = {"name": "downpour-sgd", "fetchSteps": 4, "pushSteps": 4, "serverOptimizer": "adagrad"}
DOWNPOUR_CELL = {
    "algorithm": DOWNPOUR,
    "topology": {"parameterServers": 2},
    "optimizer": {
        "learningRate": 0.01,
        "scaling": "none",
        "momentum": 0,
        "nesterov": False,
        "milestones": [],
    },
}
VARIANTS = [{"algorithm": {"name": "mini-batch-sgd"}}, {"algorithm": {"name": "local-sgd"}}]


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [  # RFC 7386, Appendix A, every example
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_is_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def test_a_partial_spec_axis_gives_one_cell_its_own_sections() -> None:
    """Downpour next to mini-batch and local SGD: the other cells keep the template's
    optimizer and no parameter servers; the Downpour cell gets its own."""
    document = experiment(
        axes=[{"name": "variant", "merge": True, "values": [*VARIANTS, DOWNPOUR_CELL]}]
    )
    document["spec"]["template"]["optimizer"] = {
        "learningRate": 0.05,
        "warmupEpochs": 0,
        "milestones": [0.5, 0.75],
    }
    parsed = parse_experiment(document)
    trials = expand_trials(parsed.spec)
    names = [t.spec.algorithm.name for t in trials]
    assert names == ["mini-batch-sgd", "local-sgd", "downpour-sgd"]
    for trial in trials[:2]:
        optimizer = trial.spec.optimizer
        assert (optimizer.learning_rate, optimizer.scaling) == (0.05, "linear")
        assert (optimizer.momentum, optimizer.milestones) == (0.9, [0.5, 0.75])
        assert trial.spec.topology.parameter_servers == 0
    downpour = trials[2].spec
    assert downpour.topology.parameter_servers == 2 and downpour.topology.nodes == 2
    assert (downpour.algorithm.fetch_steps, downpour.algorithm.push_steps) == (4, 4)
    assert downpour.algorithm.server_optimizer == "adagrad"
    optimizer = downpour.optimizer
    assert (optimizer.learning_rate, optimizer.scaling, optimizer.momentum) == (0.01, "none", 0)
    assert (optimizer.nesterov, optimizer.milestones) == (False, [])
    assert optimizer.warmup_epochs == 0  # the template's, merged under the cell's
    assert downpour.training.model == "mlp"
    for trial in trials:  # every child job passes the job's own rules
        parse_job(trial_job(parsed, trial))
    assert trials[2].cell.describe().startswith("variant=(algorithm=downpour-sgd(fetchSteps=4")


def test_replacing_the_algorithm_alone_cannot_make_a_downpour_cell() -> None:
    """Why merge exists: a plain algorithm axis leaves the template's other sections."""
    message = refusal(experiment(axes=[{"field": "algorithm", "values": [DOWNPOUR]}]))
    assert "topology.parameterServers: downpour-sgd needs at least one parameter server" in message


def test_a_merge_axis_on_a_field_keeps_the_rest_and_null_restores_a_default() -> None:
    document = experiment(
        axes=[
            {
                "field": "optimizer",
                "merge": True,
                "values": [{}, {"learningRate": 0.2, "milestones": None}],
            }
        ]
    )
    document["spec"]["template"]["optimizer"] = {"warmupEpochs": 0, "milestones": [0.75]}
    first, second = expand_trials(parse_experiment(document).spec)
    assert (first.spec.optimizer.learning_rate, first.spec.optimizer.milestones) == (0.1, [0.75])
    assert (second.spec.optimizer.learning_rate, second.spec.optimizer.milestones) == (
        0.2,
        [0.5, 0.75],  # the default: the template's value was removed
    )
    assert second.spec.optimizer.warmup_epochs == 0


@pytest.mark.parametrize(
    ("axis", "expected"),
    [
        ({"name": "v", "values": [{}]}, "spec.axes[0].field: required, unless merge: true"),
        (
            {"merge": True, "values": [{}]},
            "spec.axes[0].name: an axis without a field needs a name",
        ),
        (
            {"name": "v", "merge": True, "values": [3]},
            "spec.axes[0].values[0]: must be a mapping of spec sections",
        ),
        (
            {"name": "v", "merge": True, "values": [{"training": {"seed": 3}}]},
            "spec.axes[0].values[0]: training.seed: the seed is not an axis",
        ),
        (
            {"field": "training", "merge": True, "values": [{"seed": 3}]},
            "spec.axes[0].values[0]: training.seed: the seed is not an axis",
        ),
        (
            {"name": "v", "merge": True, "values": [{"runPolicy": {"backoffLimit": 1}}]},
            "spec.axes[0].values[0]: runPolicy.backoffLimit: an axis sets only topology, "
            "algorithm, optimizer, training",
        ),
    ],
    ids=["no-field", "no-name", "not-a-mapping", "seed", "seed-in-field", "other-section"],
)
def test_merge_axes_that_cannot_work_are_refused_naming_the_axis(axis, expected) -> None:
    assert f"exp.yaml: {expected}" in refusal(experiment(axes=[axis]))
