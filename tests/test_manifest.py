"""The API models and the manifest loader: defaults, cross-field rules, user-facing errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dsgd_contract.config import TrainingConfig
from dsgd_operator.api import MAX_NAME_LENGTH, DistributedSGDJob
from dsgd_operator.manifest import ManifestError, load_jobs, parse_job

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def manifest(**spec: object) -> dict:
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": "job"},
        "spec": spec,
    }


def problems(document: object) -> tuple[str, ...]:
    with pytest.raises(ManifestError) as caught:
        parse_job(document, "job.yaml")
    return caught.value.problems


def test_defaults_follow_the_design_card() -> None:
    job = parse_job(manifest())
    spec = job.spec
    assert (spec.topology.nodes, spec.topology.processes_per_node, spec.topology.gpu) == (
        1,
        1,
        False,
    )
    assert spec.algorithm.name == "local-sgd"
    assert spec.optimizer.scaling == "linear"
    assert spec.optimizer.milestones == [0.5, 0.75]
    assert spec.training.model == "resnet20"
    assert spec.run_policy.backoff_limit == 3
    assert spec.run_policy.clean_pod_policy == "Running"
    assert spec.training.resolved_output_dir == spec.training.checkpoint_dir


def test_wire_form_is_camel_case_and_round_trips() -> None:
    job = parse_job(manifest(topology={"nodes": 2, "processesPerNode": 2}))
    wire = job.spec.training_config().to_wire()
    assert wire["topology"] == {
        "nodes": 2,
        "processesPerNode": 2,
        "gpu": False,
        "parameterServers": 0,
    }
    assert "batchSizePerProcess" in wire["training"]
    assert TrainingConfig.model_validate(wire) == job.spec.training_config()


def test_post_local_switch_defaults_to_first_milestone() -> None:
    job = parse_job(manifest(algorithm={"name": "post-local-sgd"}, training={"epochs": 300}))
    assert job.spec.switch_epoch == 150


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"topology": {"nodes": 0}},
            "spec.topology.nodes: Input should be greater than or equal to 1",
        ),
        (
            {"topology": {"nodes": 100000}},
            "spec.topology.nodes: Input should be less than or equal",
        ),
        (
            {"algorithm": {"localSteps": "four"}},
            "spec.algorithm.localSteps: Input should be a valid integer",
        ),
        ({"algorithm": {"localStep": 3}}, "spec.algorithm.localStep: unknown field"),
        ({"algorithm": {"name": "downpour"}}, "spec.algorithm.name: Input should be"),
        (
            {"optimizer": {"learningRate": -1}},
            "spec.optimizer.learningRate: Input should be greater than 0",
        ),
        (
            {"optimizer": {"milestones": [0.75, 0.5]}},
            "spec.optimizer.milestones: must be strictly increasing",
        ),
        (
            {"optimizer": {"milestones": [0.5, 1.5]}},
            "spec.optimizer.milestones[1]: Input should be less than 1",
        ),
        (
            {"optimizer": {"momentum": 0, "nesterov": True}},
            "spec.optimizer.nesterov: Nesterov momentum needs momentum > 0",
        ),
        (
            {"training": {"model": "resnet-9000"}},
            "spec.training.model: unknown model 'resnet-9000'",
        ),
        (
            {"training": {"dataset": {"name": "imagenet"}}},
            "spec.training.dataset.name: unknown dataset",
        ),
        (
            {"runPolicy": {"cleanPodPolicy": "Some"}},
            "spec.runPolicy.cleanPodPolicy: Input should be",
        ),
        (
            {"algorithm": {"name": "hierarchical-local-sgd"}, "topology": {"nodes": 2}},
            "spec.topology.processesPerNode: hierarchical-local-sgd needs more than one process",
        ),
        (
            {"algorithm": {"name": "hierarchical-local-sgd"}, "topology": {"processesPerNode": 2}},
            "spec.topology.nodes: hierarchical-local-sgd needs more than one node",
        ),
        (
            {"algorithm": {"name": "mini-batch-sgd", "compression": "sign"}},
            "spec.algorithm.compression: sign compression applies only to local-sgd",
        ),
        (
            {
                "algorithm": {"name": "post-local-sgd", "switchEpoch": 10},
                "training": {"epochs": 10},
            },
            "spec.algorithm.switchEpoch: the switch point (epoch 10) must lie inside training",
        ),
        (
            {"algorithm": {"name": "post-local-sgd"}, "optimizer": {"milestones": []}},
            "spec.algorithm.switchEpoch: post-local-sgd needs a switch epoch",
        ),
        (
            {"algorithm": {"name": "local-sgd", "switchEpoch": 3}},
            "spec.algorithm.switchEpoch: only post-local-sgd has a switch epoch",
        ),
        (
            {"optimizer": {"warmupEpochs": 20}, "training": {"epochs": 10}},
            "spec.optimizer.warmupEpochs: 20 warm-up epochs is longer than training.epochs (10)",
        ),
    ],
)
def test_bad_specs_are_refused_with_the_field_path(spec: dict, expected: str) -> None:
    found = problems(manifest(**spec))
    assert any(line.startswith(expected) for line in found), found


def test_every_cross_field_problem_is_reported_at_once() -> None:
    found = problems(
        manifest(
            algorithm={"name": "hierarchical-local-sgd", "compression": "ef-sign"},
            topology={"nodes": 1, "processesPerNode": 1},
        )
    )
    assert {line.split(":")[0] for line in found} == {
        "spec.topology.nodes",
        "spec.topology.processesPerNode",
        "spec.algorithm.compression",
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Upper", "is not a DNS label"),
        ("-leading", "is not a DNS label"),
        ("9starts-with-digit", "is not a DNS label"),
        ("a" * (MAX_NAME_LENGTH + 1), f"at most {MAX_NAME_LENGTH}"),
    ],
)
def test_job_names_must_make_valid_pod_hostnames(name: str, expected: str) -> None:
    document = manifest()
    document["metadata"]["name"] = name
    (line,) = problems(document)
    assert line.startswith("metadata.name: ") and expected in line


def test_longest_allowed_name_fits_every_pod_hostname() -> None:
    document = manifest(topology={"nodes": 512})
    document["metadata"]["name"] = "a" * MAX_NAME_LENGTH
    job = parse_job(document)
    assert len(f"{job.name}-node-{job.spec.topology.nodes - 1}") <= 63


def test_wrong_kind_and_non_mapping_documents() -> None:
    assert problems({"kind": "Pod"}) == ("kind: expected DistributedSGDJob, got 'Pod'",)
    assert problems(["a", "list"])[0].startswith("expected a mapping")


def test_load_jobs_reports_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_jobs(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: dsgd.io/v1alpha1\nkind: [unclosed\n")
    with pytest.raises(ManifestError) as caught:
        load_jobs(broken)
    assert str(caught.value).startswith(f"{broken}: line ")
    assert "malformed YAML" in str(caught.value)
    empty = tmp_path / "empty.yaml"
    empty.write_text("---\n")
    with pytest.raises(ManifestError, match="no DistributedSGDJob"):
        load_jobs(empty)


def test_load_jobs_reads_every_document_and_names_the_bad_one(tmp_path: Path) -> None:
    good, bad = manifest(), manifest(topology={"nodes": -1})
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([good, bad]))
    with pytest.raises(ManifestError) as caught:
        load_jobs(path)
    assert caught.value.problems == (
        "(document 1) spec.topology.nodes: Input should be greater than or equal to 1",
    )
    path.write_text(yaml.safe_dump_all([good, good]))
    assert [job.name for job in load_jobs(path)] == ["job", "job"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    jobs = load_jobs(path)
    assert jobs and all(isinstance(job, DistributedSGDJob) for job in jobs)


def test_a_minimal_one_epoch_job_is_valid_with_the_default_warmup() -> None:
    """A default never refuses a spec: no warm-up given, one epoch, half an epoch of warm-up."""
    job = parse_job(manifest(training={"epochs": 1}))
    assert job.spec.optimizer.warmup_epochs is None
    assert job.spec.warmup_epochs == 0.5
    assert parse_job(manifest(training={"epochs": 40})).spec.warmup_epochs == 5
    assert parse_job(manifest(optimizer={"warmupEpochs": 0})).spec.warmup_epochs == 0
