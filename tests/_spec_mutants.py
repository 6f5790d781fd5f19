"""Generated mutants of job manifests at the JSON level, over every field the CRD declares.

`spec_mutants(examples, count, seed)` returns `count` manifests, each an
example (or the empty spec) with one to three fields, chosen among every field
path of the CRD's spec schema, set to an odd value of the field's JSON type
or of another one: nulls, bools in integer fields, 1.0 for 1, numbers past
int64, strings with a trailing newline, unknown keys, boundary values (the
schema's own minimum and maximum, and one beyond). Deterministic for a seed.
Shared by the pydantic-only count (tests/test_models_strictness.py) and the
comparison with the real API server (tests/test_crd_agreement.py).
"""

from __future__ import annotations

import copy
import random
from typing import Any

from dsgd_operator.crd import openapi_schema

Manifest = dict[str, Any]
Path = tuple[str, ...]

INTEGERS: list[Any] = [None, 0, 1, 2, 3, -1, 1.0, 2.5, True, "2", 2**31 - 1, 2**31, 2**53 + 1]
INTEGERS += [2**63 - 1, 2**63, 10**12, 10**15, 10**20, 315_360_000, 315_360_001]
NUMBERS: list[Any] = [None, 0, 0.0, 1, 0.5, 1.5, -0.1, 0.999, True, "0.1", 1e308, 100, 1e-320]
BOOLEANS: list[Any] = [None, True, False, "true", 1, 0]
STRINGS: list[Any] = [None, "", " ", "x\n", "ok", "UPPER", "a" * 300, 5, True, "/abs", "rel"]
STRINGS += ["pkg.mod:fn", "pkg.mod:fn\n", "ü", "a.b", "/checkpoints/x", "/etc/dsgd/x"]
ARRAYS: list[Any] = [None, [], [0.5], [0.25, 0.5], [None], [0.5, 0.25], "x", {}, [1], [0.1] * 33]
OBJECTS: list[Any] = [None, {}, [], "x", 3, {"unknown": 1}]
MAPS: list[Any] = [None, {}, {"a": "b"}, {"a": None}, {"a": 1}, {"app name": "x"}, []]
FREE_FORM: list[Any] = [None, {}, [], [{}], [None], [{"name": "x"}], "x"]


def field_paths(schema: dict[str, Any], prefix: Path = ()) -> list[tuple[Path, dict[str, Any]]]:
    """Every (path, schema) below `schema`, objects included, in schema order."""
    found = []
    for name, child in schema.get("properties", {}).items():
        path = (*prefix, name)
        found.append((path, child))
        found += field_paths(child, path)
    return found


def odd_values(schema: dict[str, Any]) -> list[Any]:
    """Values worth trying for a field of this schema: its own kind first, then others."""
    kind = schema.get("type")
    if "enum" in schema:
        own = [*schema["enum"], "unknown", None, schema["enum"][0] + "\n"]
    elif kind == "integer":
        own = [
            *INTEGERS,
            *(schema[b] + d for b, d in (("minimum", -1), ("maximum", 1)) if b in schema),
        ]
    elif kind == "number":
        own = NUMBERS
    elif kind == "boolean":
        own = BOOLEANS
    elif kind == "string":
        own = STRINGS
    elif kind == "array":
        own = ARRAYS if schema.get("items", {}).get("type") == "number" else FREE_FORM
    elif schema.get("properties"):
        own = OBJECTS
    elif isinstance(schema.get("additionalProperties"), dict):
        own = MAPS
    else:
        own = FREE_FORM
    return [*own, None, True, 7, "text", [], {}]


def set_path(manifest: Manifest, path: Path, value: Any) -> None:
    """Set `path` (below spec) to `value`, making objects on the way (or replacing non-objects)."""
    node = manifest.setdefault("spec", {})
    for name in path[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[path[-1]] = value


def spec_mutants(examples: list[Manifest], count: int, seed: int) -> list[Manifest]:
    """`count` mutants of `examples` (each in turn, the empty spec among them)."""
    spec_schema = openapi_schema()["properties"]["spec"]
    fields = field_paths(spec_schema)
    r = random.Random(seed)
    bases = [*examples, {**copy.deepcopy(examples[0]), "spec": {}}]
    result = []
    for index in range(count):
        manifest = copy.deepcopy(bases[index % len(bases)])
        for _ in range(r.randint(1, 3)):
            path, schema = r.choice(fields)
            if r.random() < 0.05:
                path = (*path[:-1], "unknownField")  # strict field validation refuses it
            set_path(manifest, path, copy.deepcopy(r.choice(odd_values(schema))))
        result.append(manifest)
    return result
