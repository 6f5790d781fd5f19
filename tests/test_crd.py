"""The generated CRD: up to date, structural, valid, and exactly as strict as the models.

These tests need no server: the generator's output and its own checks. Whether
the real kube-apiserver accepts the CRD and agrees with the models on every
manifest is tests/test_crd_server.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from dsgd_operator import crd
from dsgd_operator.structural_schema import CrdSchemaError, structural_schema
from pydantic import BaseModel

CRD = crd.build_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]
SPEC_SCHEMA = SCHEMA["properties"]["spec"]


def join_path(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (path, node) of a schema; `[]` marks list items, `{}` map values."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, join_path(path, name))
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


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
        "categories": ["all", "dsgd"],
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
    default = [c["name"] for c in columns.values() if not c.get("priority")]
    assert default == ["Algorithm", "Nodes", "Phase", "Epoch", "Test-Acc", "Restarts", "Age"]
    wide = [c["name"] for c in columns.values() if c.get("priority") == 1]
    assert wide == ["GPU", "Procs/Node", "Reason"]
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }
    for name, column in columns.items():
        if name not in ("Age", "Reason"):  # Reason: a filter, tested on the server
            assert schema_at(column["jsonPath"])["type"] == column["type"], name


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


def test_every_default_is_valid_for_its_field() -> None:
    """The server checks it too, but only by refusing the whole CRD; this names the field."""
    defaults = [(path, node) for path, node in walk(SPEC_SCHEMA, "spec") if "default" in node]
    assert len(defaults) > 30
    for path, node in defaults:
        problems = list(jsonschema.Draft4Validator(node).iter_errors(node["default"]))
        assert problems == [], path
