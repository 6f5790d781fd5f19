"""What the Kubernetes API server does with a custom resource on create/update, in Python.

No API server runs on these machines, so tests/test_crd.py checks the generated
CRD against this emulation of the steps the apiextensions server takes for a
request (k8s.io/apiextensions-apiserver, in that order):

1. strict field validation (kubectl's default): fields the schema does not
   declare are refused (`unknown_field_errors`);
2. `null`s of non-nullable fields are pruned, then schema defaults are applied,
   nested ones after their parent's (`apply_defaults`);
3. the OpenAPI v3 checks: types, bounds, enums, patterns, sizes
   (`schema_errors`, via jsonschema's Draft 4 validator, whose boolean
   `exclusiveMinimum` is OpenAPI v3's);
4. the CEL `x-kubernetes-validations` of every node that has a value, with
   `self` typed from the schema as the API server types it (integer → int,
   number → double), transition rules only when there is an old value
   (`cel_errors`, evaluated with cel-python). CEL is skipped when step 3 found
   a type error, as the API server does.

Errors come back as `path: message` lines in the manifest's field names, the
format of `dsgd_operator.manifest` errors, so tests can compare the two.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Iterator
from typing import Any

import celpy
import jsonschema
from celpy import celtypes
from dsgd_operator.manifest import format_loc

Schema = dict[str, Any]
ValidationRule = dict[str, str]


def join_path(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def unknown_field_errors(value: Any, schema: Schema, path: str = "") -> list[str]:
    """Fields the schema does not declare (kubectl's default --validate=strict refuses them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return []
    errors: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        properties = schema.get("properties")
        for key, item in value.items():
            if properties is not None:
                if key in properties:
                    errors += unknown_field_errors(item, properties[key], join_path(path, key))
                elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                    errors.append(f"{join_path(path, key)}: unknown field")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += unknown_field_errors(
                    item, schema["additionalProperties"], join_path(path, key)
                )
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += unknown_field_errors(item, schema["items"], join_path(path, index))
    return errors


def apply_defaults(value: Any, schema: Schema) -> Any:
    """A copy of `value` with non-nullable nulls pruned and the schema defaults applied."""
    value = copy.deepcopy(value)
    _default_in_place(value, schema)
    return value


def _default_in_place(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in [k for k, v in value.items() if v is None and not _nullable(properties, k)]:
            if "default" not in properties.get(key, {}):
                del value[key]
        for key, prop in properties.items():
            if "default" in prop and value.get(key) is None:
                value[key] = copy.deepcopy(prop["default"])
        for key, item in value.items():
            if key in properties:
                _default_in_place(item, properties[key])
            elif isinstance(schema.get("additionalProperties"), dict):
                _default_in_place(item, schema["additionalProperties"])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default_in_place(item, schema["items"])


def _nullable(properties: dict[str, Schema], key: str) -> bool:
    return bool(properties.get(key, {}).get("nullable"))


def schema_errors(value: Any, schema: Schema) -> tuple[list[str], bool]:
    """OpenAPI v3 validation errors, and whether any is a type error (which blocks CEL)."""
    validator = jsonschema.Draft4Validator(schema)
    errors, blocking = [], False
    for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path)):
        errors.append(f"{format_loc(error.absolute_path)}: {error.message}")
        blocking = blocking or error.validator == "type"
    return errors, blocking


# --- CEL ---------------------------------------------------------------------------------


def _is_sorted(values: celtypes.ListType) -> celtypes.BoolType:
    """Kubernetes' CEL list library `isSorted()` (not part of standard CEL)."""
    return celtypes.BoolType(all(a <= b for a, b in itertools.pairwise(values)))


KUBERNETES_CEL_FUNCTIONS = {"isSorted": _is_sorted}


@functools.cache
def compiled(expression: str) -> celpy.Runner:
    """A cel-python program for one rule or message expression (parse errors raise)."""
    environment = celpy.Environment()
    return environment.program(environment.compile(expression), functions=KUBERNETES_CEL_FUNCTIONS)


def to_cel(value: Any, schema: Schema) -> Any:
    """`value` as the API server hands it to CEL: typed by the schema, not by the JSON."""
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None and isinstance(schema.get("additionalProperties"), dict):
            properties = {key: schema["additionalProperties"] for key in value}
        if properties is None:
            return celpy.json_to_cel(value)
        return celtypes.MapType(
            {
                celtypes.StringType(key): to_cel(item, properties[key])
                for key, item in value.items()
                if key in properties
            }
        )
    if kind == "array" and isinstance(value, list):
        return celtypes.ListType([to_cel(item, schema.get("items", {})) for item in value])
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if kind == "integer":
        return celtypes.IntType(value)
    return celpy.json_to_cel(value)


def evaluate(expression: str, self_value: Any, old_value: Any = None) -> Any:
    activation = {"self": self_value}
    if old_value is not None:
        activation["oldSelf"] = old_value
    return compiled(expression).evaluate(activation)


def is_transition_rule(rule: ValidationRule) -> bool:
    return "oldSelf" in rule["rule"]


def rules_with_values(
    value: Any, schema: Schema, old: Any = None, path: str = ""
) -> Iterator[tuple[str, ValidationRule, Any, Any]]:
    """(node path, rule, CEL self, CEL oldSelf or None) for every rule that applies to `value`."""
    for rule in schema.get("x-kubernetes-validations", []):
        if is_transition_rule(rule) and old is None:
            continue
        old_cel = to_cel(old, schema) if old is not None else None
        yield path, rule, to_cel(value, schema), old_cel
    if isinstance(value, dict):
        for key, prop in schema.get("properties", {}).items():
            if key in value:
                old_item = old.get(key) if isinstance(old, dict) else None
                yield from rules_with_values(value[key], prop, old_item, join_path(path, key))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from rules_with_values(item, schema["items"], None, join_path(path, index))


def rule_message(rule: ValidationRule, self_value: Any, old_value: Any = None) -> str:
    """The message the API server reports: `messageExpression` if set, else `message`."""
    if "messageExpression" not in rule:
        return rule["message"]
    message = evaluate(rule["messageExpression"], self_value, old_value)
    assert isinstance(message, str), f"{rule['messageExpression']} -> {message!r}"
    return str(message)


def cel_errors(value: Any, schema: Schema, old: Any = None) -> list[str]:
    """`path: message` for every CEL rule that `value` (defaulted) breaks.

    The path is where the API server reports the error: the rule's node plus
    its `fieldPath`. A rule that cannot be evaluated (e.g. mixed types) raises,
    since the API server would refuse every such object with an opaque error.
    """
    errors = []
    for node_path, rule, self_value, old_value in rules_with_values(value, schema, old):
        result = evaluate(rule["rule"], self_value, old_value)
        assert isinstance(result, celtypes.BoolType), f"{rule['rule']} -> {result!r}"
        if not result:
            reported = node_path + rule.get("fieldPath", "")
            message = rule_message(rule, self_value, old_value)
            # A root rule (about metadata.name) has no fieldPath: its message names the field.
            assert message.startswith(f"{reported}: " if reported else "metadata."), message
            errors.append(message)
    return errors


def apiserver_errors(manifest: dict[str, Any], schema: Schema, old: Any = None) -> list[str]:
    """Everything the emulated API server refuses in `manifest` (empty: it is stored)."""
    errors = unknown_field_errors(manifest, schema)
    defaulted = apply_defaults(manifest, schema)
    found, blocking = schema_errors(defaulted, schema)
    errors += found
    if not blocking:
        old_defaulted = apply_defaults(old, schema) if old is not None else None
        errors += cel_errors(defaulted, schema, old_defaulted)
    return errors


def error_paths(lines: list[str] | tuple[str, ...]) -> set[str]:
    """The field paths of `path: message` lines."""
    return {line.split(": ", 1)[0] for line in lines}


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every (path, node) of a schema; `[]` marks list items, `{}` map values."""
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from walk(prop, join_path(path, name))
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")
