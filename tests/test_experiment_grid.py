"""SGDExperiment: grid expansion (cross product, zip, seeds), up-front validation, the CRD file.

The oracles are written out by hand: the expected cells of small grids, the
messages a user must see, and the job rules themselves (`parse_job` on every
rendered trial).
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any

import pytest
import yaml
from dsgd_contract.experiment import CELL_LABEL, EXPERIMENT_LABEL, MAX_TRIALS, SEED_LABEL
from dsgd_operator.cli import main as dsgd
from dsgd_operator.experiments import crd as experiment_crd
from dsgd_operator.experiments.grid import expand_cells, expand_trials, trial_job
from dsgd_operator.experiments.manifest import load_manifests, parse_experiment
from dsgd_operator.manifest import ManifestError, parse_job

from tests.conftest import EXAMPLES

TEMPLATE = {
    "topology": {"nodes": 2},
    "optimizer": {"warmupEpochs": 0},
    "training": {"model": "mlp", "dataset": {"name": "digits"}, "epochs": 4},
}
MINI_BATCH = {"name": "mini-batch-sgd"}
LOCAL_16 = {"name": "local-sgd", "localSteps": 16}


def experiment(name: str = "lin", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "SGDExperiment",
        "metadata": {"name": name},
        "spec": {"template": copy.deepcopy(TEMPLATE), **spec},
    }


def refusal(document: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as caught:
        parse_experiment(document, "exp.yaml")
    return str(caught.value)


def test_cross_product_first_axis_slowest_and_seeds_replicate_every_cell() -> None:
    axes = [
        {"field": "algorithm", "values": [MINI_BATCH, LOCAL_16]},
        {"field": "topology.nodes", "values": [2, 4, 8]},
    ]
    parsed = parse_experiment(experiment(axes=axes, seeds=[7, 3]))
    cells = expand_cells(parsed.spec.axes)
    assert [(c.id, c.values["algorithm"], c.values["topology.nodes"]) for c in cells] == [
        ("c0", MINI_BATCH, 2),
        ("c1", MINI_BATCH, 4),
        ("c2", MINI_BATCH, 8),
        ("c3", LOCAL_16, 2),
        ("c4", LOCAL_16, 4),
        ("c5", LOCAL_16, 8),
    ]
    trials = expand_trials(parsed.spec)
    assert [(t.cell.id, t.seed) for t in trials] == [
        (f"c{i}", seed) for i in range(6) for seed in (7, 3)
    ]
    c4 = trials[9]
    assert (c4.cell.id, c4.seed) == ("c4", 3)
    assert c4.spec.topology.nodes == 4
    assert c4.spec.algorithm.name == "local-sgd" and c4.spec.algorithm.local_steps == 16
    assert c4.spec.training.seed == 3
    # The template's other fields are kept; the whole algorithm block is replaced.
    assert c4.spec.training.model == "mlp" and c4.spec.optimizer.warmup_epochs == 0
    assert trials[0].spec.algorithm.local_steps == 4  # mini-batch: the default, not 16


def test_zip_pairs_values_instead_of_adding_a_dimension() -> None:
    """Lin et al.'s "mini-batch with B = H·B_loc": H and the batch move together."""
    axes = [
        {"field": "algorithm.localSteps", "values": [1, 4, 16], "name": "H"},
        {"field": "training.batchSizePerProcess", "values": [16, 64, 256], "zip": "H"},
        {"field": "optimizer.learningRate", "values": [0.05, 0.1]},
        {"field": "optimizer.momentum", "values": [0.3, 0.5, 0.9], "zip": "H"},
    ]
    parsed = parse_experiment(experiment(axes=axes))
    cells = expand_cells(parsed.spec.axes)
    got = [
        (
            c.values["H"],
            c.values["training.batchSizePerProcess"],
            c.values["optimizer.learningRate"],
            c.values["optimizer.momentum"],
        )
        for c in cells
    ]
    assert got == [
        (1, 16, 0.05, 0.3),
        (1, 16, 0.1, 0.3),
        (4, 64, 0.05, 0.5),
        (4, 64, 0.1, 0.5),
        (16, 256, 0.05, 0.9),
        (16, 256, 0.1, 0.9),
    ]
    # Axis order of each cell's values is the order written, whatever the dimensions.
    assert list(cells[0].values) == [
        "H",
        "training.batchSizePerProcess",
        "optimizer.learningRate",
        "optimizer.momentum",
    ]


@pytest.mark.parametrize(
    ("axes", "expected"),
    [
        (
            [
                {"field": "algorithm.localSteps", "values": [1, 4], "name": "H"},
                {"field": "training.batchSizePerProcess", "values": [16], "zip": "H"},
            ],
            "exp.yaml: spec.axes[1].values: zipped with 'H', so it needs 2 values, not 1",
        ),
        (
            [{"field": "topology.nodes", "values": [2], "zip": "nodes"}],
            "exp.yaml: spec.axes[0].zip: no axis named 'nodes' (axes: topology.nodes)",
        ),
        (
            [
                {"field": "topology.nodes", "values": [2]},
                {"field": "topology.nodes", "values": [4]},
            ],
            "exp.yaml: spec.axes[1]: another axis is already named 'topology.nodes'; name one",
        ),
        (
            [{"field": "training.seed", "values": [1, 2]}],
            "exp.yaml: spec.axes[0].field: training.seed: the seed is not an axis: "
            "list replicates in spec.seeds",
        ),
        (
            [{"field": "runPolicy.backoffLimit", "values": [1]}],
            "exp.yaml: spec.axes[0].field: String should match pattern",
        ),
    ],
    ids=["zip-length", "zip-unknown", "duplicate", "seed-axis", "not-a-training-section"],
)
def test_inconsistent_axes_are_refused_naming_the_axis(axes, expected) -> None:
    assert refusal(experiment(axes=axes)).startswith(expected)


def test_one_bad_combination_refuses_the_experiment_naming_its_values_and_field() -> None:
    axes = [
        {"field": "algorithm", "values": [LOCAL_16, {"name": "hierarchical-local-sgd"}]},
        {"field": "topology.nodes", "values": [1, 2]},
    ]
    document = experiment(axes=axes, seeds=[0, 1])
    document["spec"]["template"]["topology"]["processesPerNode"] = 2
    message = refusal(document)
    # Only hierarchical on one node is invalid: one cell, both its seeds, the job's field.
    assert message == (
        "exp.yaml: spec.axes: cell c2 (algorithm=hierarchical-local-sgd, topology.nodes=1), "
        "seed(s) 0, 1: topology.nodes: hierarchical-local-sgd needs more than one node "
        "(with one node it is local-sgd)"
    )


def test_a_template_invalid_alone_is_fine_when_every_trial_is_valid() -> None:
    """hierarchical-local-sgd needs 2+ nodes; the template leaves nodes to the axis."""
    document = experiment(axes=[{"field": "topology.nodes", "values": [2, 4]}])
    document["spec"]["template"] = {
        "topology": {"nodes": 1, "processesPerNode": 2},
        "algorithm": {"name": "hierarchical-local-sgd"},
        "training": {"model": "mlp", "epochs": 2},
        "optimizer": {"warmupEpochs": 0},
    }
    with pytest.raises(ManifestError):
        parse_job(
            {
                "apiVersion": "dsgd.io/v1alpha1",
                "kind": "DistributedSGDJob",
                "metadata": {"name": "alone"},
                "spec": document["spec"]["template"],
            }
        )
    assert len(expand_trials(parse_experiment(document).spec)) == 2


def test_a_template_problem_is_reported_once_at_the_template() -> None:
    document = experiment(axes=[{"field": "algorithm", "values": [MINI_BATCH, LOCAL_16]}])
    document["spec"]["template"]["training"]["epochz"] = 3
    document["spec"]["template"]["topology"]["nodes"] = "2"
    assert refusal(document).splitlines() == [
        "exp.yaml: spec.template: topology.nodes: Input should be a valid integer",
        "exp.yaml: spec.template: training.epochz: unknown field",
    ]


def test_a_bad_value_of_a_one_value_axis_is_the_axiss_not_the_templates() -> None:
    """Every trial shares the problem, but the template alone does not have it."""
    message = refusal(experiment(axes=[{"field": "topology.nodes", "values": [0]}]))
    assert message.startswith("exp.yaml: spec.axes: cell c0 (topology.nodes=0), seed(s) 0: ")
    assert "topology.nodes" in message.removeprefix("exp.yaml: spec.axes: cell c0")


def test_an_axis_value_of_the_wrong_type_is_refused_strictly() -> None:
    message = refusal(experiment(axes=[{"field": "topology.nodes", "values": [2, "4"]}]))
    assert message == (
        "exp.yaml: spec.axes: cell c1 (topology.nodes=4), seed(s) 0: "
        "topology.nodes: Input should be a valid integer"
    )


def test_the_grid_size_limit_says_how_big_the_grid_is() -> None:
    axes = [
        {"field": "optimizer.learningRate", "values": [0.01 * (i + 1) for i in range(50)]},
        {"field": "training.batchSizePerProcess", "values": list(range(1, 11))},
    ]
    message = refusal(experiment(axes=axes, seeds=[0, 1, 2]))
    assert message == (
        "exp.yaml: spec.axes: the grid has 50 × 10 cells × 3 seeds = 1500 trials; "
        f"at most {MAX_TRIALS}: drop values or axes, or split the experiment"
    )


def test_seeds_are_distinct_and_names_leave_room_for_trial_suffixes() -> None:
    assert refusal(experiment(seeds=[1, 2, 1])) == (
        "exp.yaml: spec.seeds: each seed once; repeated: [1]"
    )
    long_name = "e" * 45
    message = refusal(experiment(name=long_name, seeds=[123456]))
    assert message.startswith("exp.yaml: metadata.name: trial jobs are named")
    assert f"'{long_name}-c0-s123456' would be 56 characters; at most 54" in message


def test_render_prints_one_valid_labelled_job_per_trial(tmp_path, capsys) -> None:
    axes = [
        {"field": "algorithm", "values": [MINI_BATCH, LOCAL_16]},
        {"field": "training.batchSizePerProcess", "values": [16, 32]},
    ]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment(axes=axes, seeds=[0, 5])))
    assert dsgd(["validate", str(path)]) == 0
    assert "experiment lin: 2 × 2 cells × 2 seed(s) = 8 trials" in capsys.readouterr().out
    assert dsgd(["render", str(path)]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    jobs = [parse_job(d) for d in documents]  # the job rules, independently of the grid
    assert [j.name for j in jobs] == [f"lin-c{c}-s{s}" for c in range(4) for s in (0, 5)]
    assert jobs[5].metadata.labels == {EXPERIMENT_LABEL: "lin", CELL_LABEL: "c2", SEED_LABEL: "5"}
    assert (jobs[5].spec.algorithm.local_steps, jobs[5].spec.training.batch_size_per_process) == (
        16,
        16,
    )
    assert {j.spec.training.seed for j in jobs} == {0, 5}
    assert dsgd(["render", str(path), "--namespace", "team"]) == 0
    namespaces = {d["metadata"]["namespace"] for d in yaml.safe_load_all(capsys.readouterr().out)}
    assert namespaces == {"team"}


def test_validate_names_the_bad_field_and_run_points_to_experiment_run(tmp_path, capsys) -> None:
    bad = experiment(axes=[{"field": "topology.nodes", "values": [0, 2]}])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert dsgd(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: spec.axes: cell c0 (topology.nodes=0), seed(s) 0: topology.nodes:" in err
    assert "Traceback" not in err
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(experiment()))
    assert dsgd(["run", str(good)]) == 1
    assert "is an SGDExperiment; run it with `dsgd experiment run`" in capsys.readouterr().err


def test_every_experiment_example_is_valid() -> None:
    examples = sorted((EXAMPLES / "experiments").glob("*.yaml"))
    assert examples
    for path in examples:
        _, experiments = load_manifests(path)
        assert len(experiments) == 1
        for trial in expand_trials(experiments[0].spec):
            assert parse_job(trial_job(experiments[0], trial)).spec == trial.spec


def test_the_committed_crd_files_are_generated_from_the_models() -> None:
    assert experiment_crd.stale_files(experiment_crd.render_crd()) == [], "run `make crds`"


JUNK = [None, 0, -1, 2.5, "", "x", True, [], [1, "a"], {}, {"name": "local-sgd"}, 2**70]


def mutants(document: Any, rng: random.Random, count: int) -> list[Any]:
    """Copies of `document` with one node (any depth) replaced by junk, or deleted."""
    paths: list[tuple] = []

    def walk(node: Any, path: tuple) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*path, key))
        elif isinstance(node, list):
            for index, child in enumerate(node):
                walk(child, (*path, index))

    walk(document, ())
    out = []
    for _ in range(count):
        copied = copy.deepcopy(document)
        path = rng.choice(paths[1:])
        parent = copied
        for part in path[:-1]:
            parent = parent[part]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(JUNK))
        out.append(copied)
    return out


def test_mutated_experiments_are_refused_in_lines_never_with_a_traceback() -> None:
    """Every mutant is either valid or a ManifestError whose lines name a field path."""
    document = yaml.safe_load(
        (EXAMPLES / "experiments" / "digits-local-vs-minibatch.yaml").read_text()
    )
    document["spec"]["axes"].append(
        {"field": "training.batchSizePerProcess", "values": [8, 16, 32], "zip": "algorithm"}
    )
    refused = 0
    for mutant in mutants(document, random.Random(10), 400):
        try:
            parse_experiment(mutant, "m.yaml")
        except ManifestError as error:
            refused += 1
            for problem in error.problems:
                assert re.match(r"^(\(document\)|kind|apiVersion|metadata|spec)[.:\[ ]", problem), (
                    problem
                )
    assert refused > 200  # most junk is caught (some replacements are harmless)


def test_an_axis_inside_a_template_field_that_is_not_a_mapping_is_refused() -> None:
    document = experiment(axes=[{"field": "algorithm.localSteps", "values": [4, 16]}])
    document["spec"]["template"]["algorithm"] = "local-sgd"
    assert refusal(document) == (
        "exp.yaml: spec.template: algorithm: must be a mapping: an axis sets "
        "algorithm.localSteps inside it"
    )


def test_trials_are_read_as_the_api_server_reads_a_job() -> None:
    """A null is the default, 2.0 in an integer field is 2: as for job manifests."""
    document = experiment(axes=[{"field": "topology.nodes", "values": [2.0, None]}])
    document["spec"]["template"]["training"]["batchSizePerProcess"] = None
    trials = expand_trials(parse_experiment(document).spec)
    assert [t.spec.topology.nodes for t in trials] == [2, 1]
    assert trials[0].spec.training.batch_size_per_process == 128  # the default
    assert refusal(experiment(axes=[{"field": "topology.nodes", "values": [2.5]}])).endswith(
        "topology.nodes: Input should be a valid integer"
    )


def test_validate_with_a_policy_refuses_an_experiment_whose_trials_it_refuses(
    tmp_path, capsys
) -> None:
    """The helm values' default templatePolicy allows no serviceAccountName in pods."""
    document = experiment(axes=[{"field": "algorithm", "values": [MINI_BATCH, LOCAL_16]}])
    document["spec"]["template"]["template"] = {"serviceAccountName": "root-ish"}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(document))
    values = tmp_path / "values.yaml"
    values.write_text((EXAMPLES.parent / "helm" / "dsgd" / "values.yaml").read_text())
    assert dsgd(["validate", str(path)]) == 0  # the spec alone is valid
    capsys.readouterr()
    assert dsgd(["validate", "--policy", str(values), str(path)]) == 1
    assert capsys.readouterr().err == (
        f"{path}: experiment lin: spec.template.template.serviceAccountName: 'root-ish' is not "
        "allowed by this installation (templatePolicy.allowedServiceAccounts: [])\n"
    )  # one line for both trials, at the experiment's field
