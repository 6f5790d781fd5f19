"""The generated CRD: up to date, structural, valid, and exactly as strict as the models.

The key property: the CRD (OpenAPI checks + CEL rules, run by the emulated API
server of tests/_crd_helpers.py after it applied the schema defaults) refuses
exactly the manifests the pydantic models refuse, at the same field paths.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dsgd_operator import crd
from dsgd_operator.api import MAX_NAME_LENGTH, DistributedSGDJobSpec
from dsgd_operator.manifest import ManifestError, parse_job
from dsgd_operator.structural_schema import CrdSchemaError, structural_schema
from pydantic import BaseModel

from tests._crd_helpers import (
    apiserver_errors,
    apply_defaults,
    compiled,
    error_paths,
    walk,
)

CRD = crd.build_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]


def job(spec: dict[str, Any] | None = None, name: str = "job") -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name, "namespace": "default"},
    }
    if spec is not None:
        manifest["spec"] = spec
    return manifest


def pydantic_errors(manifest: dict[str, Any]) -> tuple[str, ...]:
    try:
        parse_job(manifest)
    except ManifestError as error:
        return error.problems
    return ()


def without_nulls(value: Any) -> Any:
    """The wire form as the API server stores it: unset (None) fields are absent."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


# --- the committed file -------------------------------------------------------------------


def test_committed_crd_file_is_up_to_date() -> None:
    assert crd.CRD_FILE.exists(), f"{crd.CRD_FILE} is missing: run `make crds`"
    committed = crd.CRD_FILE.read_text(encoding="utf-8")
    assert committed == crd.render_crd(), (
        f"{crd.CRD_FILE} is stale (the models changed): run `make crds` "
        "(python -m dsgd_operator.crd) and commit the result"
    )
    assert yaml.safe_load(committed) == CRD


def test_check_mode_fails_on_a_missing_or_stale_file(tmp_path, capsys) -> None:
    target = tmp_path / "crds" / "crd.yaml"
    assert crd.main(["--output", str(target), "--check"]) == 1
    assert "missing" in capsys.readouterr().err
    assert crd.main(["--output", str(target)]) == 0
    assert crd.main(["--output", str(target), "--check"]) == 0
    target.write_text(target.read_text().replace("minimum: 1", "minimum: 2", 1))
    assert crd.main(["--output", str(target), "--check"]) == 1
    assert "make crds" in capsys.readouterr().err


# --- the CRD object -----------------------------------------------------------------------


def test_crd_names_scope_version_and_subresources() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "distributedsgdjobs.dsgd.io"
    assert spec["group"] == "dsgd.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "DistributedSGDJob",
        "listKind": "DistributedSGDJobList",
        "plural": "distributedsgdjobs",
        "singular": "distributedsgdjob",
        "shortNames": ["sgdjob", "dsgdjob"],
        "categories": ["dsgd"],
    }
    assert [(v["name"], v["served"], v["storage"]) for v in spec["versions"]] == [
        ("v1alpha1", True, True)
    ]
    assert VERSION["subresources"] == {"status": {}}


def schema_at(json_path: str) -> dict[str, Any]:
    node = SCHEMA
    for name in json_path.strip(".").split("."):
        node = node["properties"][name]
    return node


def test_printer_columns_point_at_fields_of_their_type() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Algorithm", "Nodes", "Phase", "Epoch", "Test-Acc", "Restarts", "Age"]
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    for name, column in columns.items():
        if name != "Age":
            assert schema_at(column["jsonPath"])["type"] == column["type"], name


def test_crd_validates_against_the_kubernetes_openapi_schema() -> None:
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(CRD, version, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(CRD))
    broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "x-kubernetes-validations"
    ][0]["fieldpath"] = ".topology"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


# --- structural schema --------------------------------------------------------------------

FORBIDDEN_KEYWORDS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const"}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
RULE_KEYS = {"rule", "message", "messageExpression", "fieldPath", "reason", "optionalOldSelf"}


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """What the API server's structural-schema and rule checks would refuse."""
    problems = []
    for path, node in walk(schema):
        where = path or "(root)"
        problems += [f"{where}: {key}" for key in FORBIDDEN_KEYWORDS & node.keys()]
        if node.get("type") not in TYPES:
            problems.append(f"{where}: type {node.get('type')!r}")
        if node.get("type") == "object":
            kinds = [k for k in ("properties", "additionalProperties") if k in node]
            if len(kinds) > 1:
                problems.append(f"{where}: both properties and additionalProperties")
            # The root's metadata is the API server's own ObjectMeta: `type: object` suffices.
            unknown_kept = node.get("x-kubernetes-preserve-unknown-fields") or path == "metadata"
            if not kinds and not unknown_kept:
                problems.append(f"{where}: object without properties or preserve-unknown")
            if not isinstance(node.get("additionalProperties", {}), dict):
                problems.append(f"{where}: boolean additionalProperties")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{where}: array without items")
        for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
            if bound in node and (node[bound] is not True or limit not in node):
                problems.append(f"{where}: {bound} must be true next to {limit}")
        if "nullable" in node and "type" not in node:
            problems.append(f"{where}: nullable without type")
        for rule in node.get("x-kubernetes-validations", []):
            if not rule.keys() <= RULE_KEYS or not rule.get("message"):
                problems.append(f"{where}: rule {rule}")
            if "\n" in rule.get("message", ""):
                problems.append(f"{where}: line break in message {rule['message']!r}")
            if "fieldPath" in rule:
                target = node
                for name in rule["fieldPath"].strip(".").split("."):
                    target = target.get("properties", {}).get(name, {})
                if not target:
                    problems.append(f"{where}: fieldPath {rule['fieldPath']} is not in the schema")
    root_metadata = schema["properties"]["metadata"]
    if root_metadata != {"type": "object"}:
        problems.append("metadata: the API server owns it; only name may be restricted")
    return problems


def test_schema_is_structural() -> None:
    assert structural_problems(SCHEMA) == []


def test_structural_checker_finds_problems() -> None:
    bad = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "a": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "b": {"type": "object"},
            "c": {"type": "integer", "exclusiveMinimum": 0},
            "d": {
                "type": "object",
                "properties": {"e": {"type": "string"}},
                "x-kubernetes-validations": [{"rule": "true", "message": "m", "fieldPath": ".f"}],
            },
        },
    }
    assert structural_problems(bad) == [
        "a: anyOf",
        "a: type None",
        "b: object without properties or preserve-unknown",
        "c: exclusiveMinimum must be true next to minimum",
        "d: fieldPath .f is not in the schema",
    ]


def test_status_keeps_unknown_fields_and_has_no_defaults() -> None:
    status = SCHEMA["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert {"phase", "conditions", "restarts", "workers", "progress"} <= status["properties"].keys()
    assert [path for path, node in walk(status) if "default" in node] == []


def test_free_form_kubernetes_objects_are_preserved() -> None:
    template = SPEC_SCHEMA["properties"]["template"]["properties"]
    for field in ("tolerations", "volumes", "volumeMounts", "env", "imagePullSecrets"):
        assert template[field]["items"] == {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }, field
    for field in ("affinity", "resources"):
        assert template[field]["x-kubernetes-preserve-unknown-fields"] is True, field
    for field in ("labels", "annotations", "nodeSelector"):
        assert template[field]["additionalProperties"] == {"type": "string"}, field


def test_every_spec_field_has_a_description_for_kubectl_explain() -> None:
    missing = [path for path, node in walk(SPEC_SCHEMA, "spec") if "description" not in node]
    assert [p for p in missing if not p.endswith(("[]", "{}"))] == []


def test_generator_refuses_what_a_crd_cannot_express() -> None:
    class Union(BaseModel):
        value: int | str

    with pytest.raises(CrdSchemaError, match="value"):
        structural_schema(Union)


# --- defaults -----------------------------------------------------------------------------


def test_crd_defaults_equal_the_model_defaults() -> None:
    assert apply_defaults({}, SPEC_SCHEMA) == without_nulls(DistributedSGDJobSpec().to_wire())
    assert apply_defaults({"kind": "x"}, SCHEMA)["spec"] == apply_defaults({}, SPEC_SCHEMA)


def test_every_default_is_valid_for_its_field() -> None:
    defaults = [(path, node) for path, node in walk(SPEC_SCHEMA, "spec") if "default" in node]
    assert len(defaults) > 30
    for path, node in defaults:
        problems = list(jsonschema.Draft4Validator(node).iter_errors(node["default"]))
        assert problems == [], path


# --- CEL rules agree with the models ------------------------------------------------------


def test_every_cel_expression_compiles() -> None:
    expressions = [
        rule[key]
        for _, node in walk(SCHEMA)
        for rule in node.get("x-kubernetes-validations", [])
        for key in ("rule", "messageExpression")
        if key in rule
    ]
    assert len(expressions) >= 14
    for expression in expressions:
        compiled(expression)


HIERARCHICAL = {"name": "hierarchical-local-sgd"}
POST_LOCAL = {"name": "post-local-sgd"}
SHORT = {"warmupEpochs": 0}  # the default 5 warm-up epochs would outlast short runs

ACCEPTED: dict[str, dict[str, Any]] = {
    "all defaults": {},
    "mini-batch": {"algorithm": {"name": "mini-batch-sgd"}, "topology": {"nodes": 4}},
    "hierarchical 2x2": {
        "algorithm": HIERARCHICAL,
        "topology": {"nodes": 2, "processesPerNode": 2},
    },
    "local sign": {"algorithm": {"name": "local-sgd", "compression": "sign"}},
    "post-local ef-sign": {"algorithm": {**POST_LOCAL, "compression": "ef-sign"}},
    "post-local switch": {"algorithm": {**POST_LOCAL, "switchEpoch": 299}},
    "post-local no milestones but switch": {
        "algorithm": {**POST_LOCAL, "switchEpoch": 10},
        "optimizer": {"milestones": []},
    },
    "post-local 1.5 rounds to 2 of 3": {
        "algorithm": POST_LOCAL,
        "optimizer": {**SHORT, "milestones": [0.5]},
        "training": {"epochs": 3},
    },
    "post-local 4.5 rounds to even 4 of 5": {
        "algorithm": POST_LOCAL,
        "optimizer": {**SHORT, "milestones": [0.9]},
        "training": {"epochs": 5},
    },
    "post-local 0.6 rounds to 1": {
        "algorithm": POST_LOCAL,
        "optimizer": {**SHORT, "milestones": [0.3]},
        "training": {"epochs": 2},
    },
    "no nesterov without momentum": {"optimizer": {"momentum": 0, "nesterov": False}},
    "warm-up as long as training": {"optimizer": {"warmupEpochs": 10}, "training": {"epochs": 10}},
    "no milestones": {"optimizer": {"milestones": []}},
    "plug-ins": {
        "training": {"model": "lab.models:build", "dataset": {"name": "lab.data:load"}},
    },
    "explicit nulls are unset": {
        "algorithm": {"switchEpoch": None},
        "training": {"outputDir": None},
        "image": None,
    },
    "pod overrides": {
        "image": "registry.example/trainer:1",
        "template": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": "ckpt"}}],
            "resources": {"limits": {"cpu": "4"}},
            "nodeSelector": {"gpu": "a100"},
        },
        "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "All"},
        "scheduling": {"schedulerName": "volcano", "queue": "research"},
    },
}

# Each case breaks one rule; the expected paths are where both must report it.
REFUSED: dict[str, tuple[dict[str, Any], set[str]]] = {
    "hierarchical on one node": (
        {"algorithm": HIERARCHICAL, "topology": {"nodes": 1, "processesPerNode": 2}},
        {"spec.topology.nodes"},
    ),
    "hierarchical with one process per node": (
        {"algorithm": HIERARCHICAL, "topology": {"nodes": 2}},
        {"spec.topology.processesPerNode"},
    ),
    "hierarchical on the default topology": (
        {"algorithm": HIERARCHICAL},
        {"spec.topology.nodes", "spec.topology.processesPerNode"},
    ),
    "compressed mini-batch": (
        {"algorithm": {"name": "mini-batch-sgd", "compression": "sign"}},
        {"spec.algorithm.compression"},
    ),
    "compressed hierarchical": (
        {
            "algorithm": {**HIERARCHICAL, "compression": "ef-sign"},
            "topology": {"nodes": 2, "processesPerNode": 2},
        },
        {"spec.algorithm.compression"},
    ),
    "switch epoch without post-local": (
        {"algorithm": {"name": "local-sgd", "switchEpoch": 3}},
        {"spec.algorithm.switchEpoch"},
    ),
    "switch epoch at the end": (
        {"algorithm": {**POST_LOCAL, "switchEpoch": 300}},
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local without any switch point": (
        {"algorithm": POST_LOCAL, "optimizer": {"milestones": []}},
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local 1.5 rounds to even 2 of 2": (
        {
            "algorithm": POST_LOCAL,
            "optimizer": {**SHORT, "milestones": [0.75]},
            "training": {"epochs": 2},
        },
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local 3.5 rounds to 4 of 4": (
        {
            "algorithm": POST_LOCAL,
            "optimizer": {**SHORT, "milestones": [0.875]},
            "training": {"epochs": 4},
        },
        {"spec.algorithm.switchEpoch"},
    ),
    "post-local 0.5 rounds to even 0": (
        {
            "algorithm": POST_LOCAL,
            "optimizer": {**SHORT, "milestones": [0.25]},
            "training": {"epochs": 2},
        },
        {"spec.algorithm.switchEpoch"},
    ),
    "warm-up longer than training": (
        {"optimizer": {"warmupEpochs": 10.5}, "training": {"epochs": 10}},
        {"spec.optimizer.warmupEpochs"},
    ),
    "default warm-up longer than a short run": (
        {"training": {"epochs": 3}},
        {"spec.optimizer.warmupEpochs"},
    ),
    "nesterov without momentum": (
        {"optimizer": {"momentum": 0}},
        {"spec.optimizer.nesterov"},
    ),
    "decreasing milestones": (
        {"optimizer": {"milestones": [0.75, 0.5]}},
        {"spec.optimizer.milestones"},
    ),
    "repeated milestone": (
        {"optimizer": {"milestones": [0.5, 0.5]}},
        {"spec.optimizer.milestones"},
    ),
    "milestone at the end": (
        {"optimizer": {"milestones": [0.5, 1.0]}},
        {"spec.optimizer.milestones[1]"},
    ),
    "too many milestones": (
        {"optimizer": {"milestones": [i / 100 for i in range(1, 34)]}},
        {"spec.optimizer.milestones"},
    ),
    "no nodes": ({"topology": {"nodes": 0}}, {"spec.topology.nodes"}),
    "too many nodes": ({"topology": {"nodes": 513}}, {"spec.topology.nodes"}),
    "momentum of one": ({"optimizer": {"momentum": 1.0}}, {"spec.optimizer.momentum"}),
    "zero learning rate": ({"optimizer": {"learningRate": 0}}, {"spec.optimizer.learningRate"}),
    "unknown algorithm": ({"algorithm": {"name": "downpour"}}, {"spec.algorithm.name"}),
    "unknown dataset": (
        {"training": {"dataset": {"name": "imagenet"}}},
        {"spec.training.dataset.name"},
    ),
    "unknown model": ({"training": {"model": "resnet50"}}, {"spec.training.model"}),
    "empty checkpoint dir": ({"training": {"checkpointDir": ""}}, {"spec.training.checkpointDir"}),
    "unknown clean pod policy": (
        {"runPolicy": {"cleanPodPolicy": "Sometimes"}},
        {"spec.runPolicy.cleanPodPolicy"},
    ),
    "typo in a field name": ({"topology": {"gpus": True}}, {"spec.topology.gpus"}),
    "wrong type": ({"topology": {"nodes": "two"}}, {"spec.topology.nodes"}),
}

NAMES = {
    "j": True,
    "job-1": True,
    "a" * MAX_NAME_LENGTH: True,
    "a" * (MAX_NAME_LENGTH + 1): False,
    "Job": False,
    "1job": False,
    "job-": False,
    "my.job": False,
}


@pytest.mark.parametrize("spec", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_crd_and_models_accept_the_same_specs(spec: dict[str, Any]) -> None:
    manifest = job(spec)
    assert pydantic_errors(manifest) == ()
    assert apiserver_errors(manifest, SCHEMA) == []
    # The API server's defaults give exactly what the model hands the trainer.
    stored = apply_defaults(manifest, SCHEMA)["spec"]
    assert stored == without_nulls(parse_job(manifest).spec.to_wire())


@pytest.mark.parametrize(("spec", "paths"), REFUSED.values(), ids=REFUSED.keys())
def test_crd_and_models_refuse_the_same_specs(spec: dict[str, Any], paths: set[str]) -> None:
    manifest = job(spec)
    from_models = pydantic_errors(manifest)
    from_crd = apiserver_errors(manifest, SCHEMA)
    assert error_paths(from_models) == paths, from_models
    assert error_paths(from_crd) == paths, from_crd


@pytest.mark.parametrize(("name", "valid"), NAMES.items(), ids=NAMES.keys())
def test_crd_and_models_agree_on_job_names(name: str, valid: bool) -> None:
    manifest = job({}, name=name)
    expected = set() if valid else {"metadata.name"}
    assert error_paths(pydantic_errors(manifest)) == expected
    assert error_paths(apiserver_errors(manifest, SCHEMA)) == expected


def test_cel_messages_say_what_pydantic_says() -> None:
    """Static messages are pydantic's own; computed ones name the offending values."""
    cases = {
        "hierarchical on the default topology": None,
        "switch epoch without post-local": None,
        "post-local without any switch point": None,
        "nesterov without momentum": None,
        "compressed mini-batch": None,
        "switch epoch at the end": "(epoch 300)",
        "post-local 3.5 rounds to 4 of 4": "between 1 and training.epochs - 1 (3)",
        "warm-up longer than training": "longer than training.epochs (10)",
    }
    for case, fragment in cases.items():
        manifest = job(REFUSED[case][0])
        from_crd = sorted(apiserver_errors(manifest, SCHEMA))
        if fragment is None:
            assert from_crd == sorted(pydantic_errors(manifest)), case
        else:
            assert len(from_crd) == 1 and fragment in from_crd[0], (case, from_crd)


# --- transition rules ---------------------------------------------------------------------

RUNNING = {"algorithm": {"name": "local-sgd"}, "topology": {"nodes": 2}}


@pytest.mark.parametrize(
    ("update", "paths"),
    [
        ({"topology": {"nodes": 3}}, {"spec.topology"}),
        ({"topology": {"nodes": 2, "gpu": True}}, {"spec.topology"}),
        ({"topology": {"nodes": 2}, "algorithm": {"localSteps": 8}}, {"spec.algorithm"}),
        ({"topology": {"nodes": 2}, "algorithm": {"name": "mini-batch-sgd"}}, {"spec.algorithm"}),
        # Spelling out a default changes nothing; other sections may change.
        ({"topology": {"nodes": 2, "processesPerNode": 1}, "algorithm": {}}, set()),
        ({"topology": {"nodes": 2}, "runPolicy": {"suspend": True}}, set()),
        # The trainer's settings: its checkpoints were made under them.
        ({"topology": {"nodes": 2}, "training": {"epochs": 400}}, {"spec.training"}),
        ({"topology": {"nodes": 2}, "optimizer": {"learningRate": 0.5}}, {"spec.optimizer"}),
        ({"topology": {"nodes": 2}, "template": {"nodeSelector": {"a": "b"}}}, set()),
    ],
)
def test_the_trainers_sections_are_immutable(update: dict[str, Any], paths: set[str]) -> None:
    errors = apiserver_errors(job(update), SCHEMA, old=job(RUNNING))
    assert error_paths(errors) == paths, errors
    assert all("immutable" in error for error in errors)
    # A create (no old object) never runs transition rules.
    assert apiserver_errors(job(update), SCHEMA) == []
