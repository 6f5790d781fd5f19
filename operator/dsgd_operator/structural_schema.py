"""Pydantic models → Kubernetes *structural* OpenAPI v3 schemas (for CRDs).

The API server accepts only a subset of JSON Schema in a CustomResourceDefinition
and requires it to be structural: every node has a `type`, no `$ref`, no
`anyOf` unions of types, objects either list their `properties` or say
`x-kubernetes-preserve-unknown-fields`. `structural_schema(model)` turns what
pydantic generates into that form and refuses (CrdSchemaError) whatever it
cannot translate faithfully, so a model change that the CRD cannot express
fails `make crds` instead of producing a CRD the API server would reject.

Translation rules:
- `$ref`s are inlined; the referring field's own keys (description, default) win.
- `anyOf [X, null]` (an `Optional` field) becomes X *without* `nullable`: the
  API server then prunes an explicit `null` before defaulting and validation,
  which is what the models do with `None` (unset). Marking it nullable would
  hand CEL rules a null they cannot even compare against (CEL's type checker
  refuses `int == null`).
- `additionalProperties: true` (a free-form Kubernetes object such as a
  toleration) becomes `x-kubernetes-preserve-unknown-fields: true`;
  `additionalProperties: false` is dropped (the API server prunes or, with
  kubectl's strict field validation, refuses unknown fields by itself).
- JSON Schema 2020-12 numeric `exclusiveMinimum: n` becomes OpenAPI v3's
  `minimum: n, exclusiveMinimum: true`; `const: v` becomes `enum: [v]`.
- `Any` (an empty schema) becomes `x-kubernetes-preserve-unknown-fields: true`
  without a type: any JSON value, kept as given.
- `title`s are dropped; descriptions are kept for `kubectl explain`.
- integers say `format: int64`, what the API server stores them as (the
  models give every spec integer a maximum well inside it).
- Defaults made by a `default_factory` are included: a model section whose
  factory is the section's own class gets that section's complete default
  (wire names, nested sections included). Not `default: {}`: the API server
  validates a CRD's defaults, CEL rules included, without applying the nested
  defaults to them, so `{}` would fail every rule that reads a member.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

#: Keywords copied as they are: the subset of OpenAPI v3 a CRD schema allows
#: that pydantic emits for our field types.
PASSTHROUGH_KEYWORDS = frozenset(
    {
        "type",
        "description",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "required",
        "format",
    }
)
DROPPED_KEYWORDS = frozenset({"title", "$defs"})

#: The order keys are written in, so that the generated YAML reads well.
KEY_ORDER = (
    "type",
    "format",
    "description",
    "default",
    "enum",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
)


class CrdSchemaError(ValueError):
    """A model uses a JSON Schema construct that a CRD cannot express."""


class _WithFactoryDefaults(GenerateJsonSchema):
    """Pydantic's generator, plus defaults that come from a `default_factory`."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()
        if isinstance(value, BaseModel):
            if value != type(value)():
                raise CrdSchemaError(
                    f"default_factory {factory!r} builds a non-default {type(value).__name__}; "
                    "a CRD can only express that section's own field defaults"
                )
            return value.model_dump(mode="json", by_alias=True, exclude_none=True)
        return value if value is not None else NoDefault


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of `model` (wire names, defaults included)."""
    generated = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    return _convert(generated, generated.get("$defs", {}), where=model.__name__)


def _convert(node: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    if "$ref" in node:
        node = dict(node)
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        return _convert({**target, **node}, defs, where)
    if "anyOf" in node:
        node = dict(node)
        variants = [v for v in node.pop("anyOf") if v.get("type") != "null"]
        if len(variants) != 1:
            raise CrdSchemaError(f"{where}: a union of several types cannot be structural")
        if node.get("default", NoDefault) is None:
            del node["default"]
        return _convert({**variants[0], **node}, defs, where)

    if not set(node) - DROPPED_KEYWORDS - {"description"}:
        # `Any` (e.g. an experiment axis's values): any JSON value, kept as given.
        return {**node_description(node), "x-kubernetes-preserve-unknown-fields": True}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED_KEYWORDS:
            continue
        if key == "properties":
            out[key] = {
                name: _convert(prop, defs, f"{where}.{name}") for name, prop in value.items()
            }
        elif key == "items":
            out[key] = _convert(value, defs, f"{where}[]")
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif value is not False:
                out[key] = _convert(value, defs, f"{where}{{}}")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "default":
            if value is not None:
                out[key] = value
        elif key in PASSTHROUGH_KEYWORDS:
            out[key] = value
        else:
            raise CrdSchemaError(f"{where}: JSON Schema keyword {key!r} has no CRD equivalent")
    if "type" not in out:
        raise CrdSchemaError(f"{where}: no type (structural schemas need one on every node)")
    if out["type"] == "integer":
        out.setdefault("format", "int64")
    return dict(sorted(out.items(), key=lambda item: KEY_ORDER.index(item[0])))


def node_description(node: dict[str, Any]) -> dict[str, Any]:
    return {"description": node["description"]} if "description" in node else {}


def strip_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of `schema` without any `default` (for parts the API server must not fill in)."""
    out = {key: value for key, value in schema.items() if key != "default"}
    if "properties" in out:
        out["properties"] = {name: strip_defaults(p) for name, p in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = strip_defaults(out[key])
    return out
