"""Reading DistributedSGDJob manifests from files and dicts, with user-facing errors.

Every front door (`dsgd validate/render/run`, the operator) goes through
`parse_job`, so they all refuse the same input with the same messages: one
line per problem, naming the file and the field path (`spec.topology.nodes`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.yaml_reader import MAX_BYTES, YamlProblem, read_documents


@dataclass(frozen=True)
class ManifestError(Exception):
    """A manifest that cannot be used; `problems` are `field.path: message` lines."""

    source: str
    problems: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {problem}" for problem in self.problems)


def format_loc(loc: Iterable[Any]) -> str:
    """('spec', 'optimizer', 'milestones', 1) -> 'spec.optimizer.milestones[1]'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def describe_validation_error(error: ValidationError) -> tuple[str, ...]:
    """One `path: message` line per pydantic error, in the manifest's field names."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif item["type"] == "literal_error":
            message = f"{message}, got {item['input']!r}"
        lines.append(f"{format_loc(item['loc'])}: {message}")
    return tuple(lines)


@functools.cache
def _job_schema() -> dict[str, Any]:
    from dsgd_operator.crd import openapi_schema  # crd imports the models; so late

    return openapi_schema()


def as_the_server_reads(value: Any, schema: dict[str, Any]) -> Any:
    """`value` as the API server validates it against `schema` (the CRD's), in two ways.

    A `null` for a field the schema declares is gone: the server prunes a null of
    a declared, non-nullable field (none of ours is nullable) and then applies
    the field's default, as the models do with an absent field. Nulls elsewhere
    (list items, free-form objects) stay, to be refused or kept as the server does.

    A whole number written as a float (`2.0`) in an integer field is that
    integer: the server's schema validation accepts it (`2.5` stays, and is
    refused). (A CEL rule that reads the field still sees a float and fails:
    tests/test_crd_agreement.py, SERVER_ONLY_WHOLE_FLOAT.)
    """
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None:
            return {
                key: as_the_server_reads(item, properties.get(key, {}))
                for key, item in value.items()
                if not (item is None and key in properties)
            }
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            return {key: as_the_server_reads(item, values) for key, item in value.items()}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [as_the_server_reads(item, schema["items"]) for item in value]
    if (
        schema.get("type") == "integer"
        and isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
    ):
        return int(value)
    return value


def parse_job(document: Any, source: str = "<manifest>") -> DistributedSGDJob:
    """Validate one manifest document, or raise ManifestError naming every bad field.

    Exactly what the API server with our CRD accepts (tests/test_crd_server.py):
    strict types (no "2" for 2, no "true" or 1 for true), a null read as an
    absent field whose default applies, 2.0 read as 2 (`as_the_server_reads`).
    """
    if not isinstance(document, dict):
        raise ManifestError(
            source, (f"expected a mapping (a Kubernetes object), got {type(document).__name__}",)
        )
    if document.get("kind") != "DistributedSGDJob":
        raise ManifestError(
            source, (f"kind: expected DistributedSGDJob, got {document.get('kind')!r}",)
        )
    document = as_the_server_reads(document, _job_schema())
    try:
        # strict: no "2" for 2 or "true" for true; the API server would refuse them.
        return DistributedSGDJob.model_validate(document, strict=True)
    except ValidationError as error:
        raise ManifestError(source, describe_validation_error(error)) from None


def read_manifest_documents(path: str | Path) -> list[Any]:
    """The non-empty YAML documents of a file (dsgd_operator.yaml_reader's rules).

    Raises ManifestError, one line, for a missing, unreadable or refused file.
    """
    source = str(path)
    try:
        with open(path, "rb") as file:
            # One byte more than the reader allows is enough to know it is too large.
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ManifestError(
                source, (f"larger than {MAX_BYTES // 1024} KiB; no Kubernetes object is",)
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(source, ("no such file",)) from None
    except IsADirectoryError:
        raise ManifestError(source, ("is a directory, not a file",)) from None
    except OSError as error:
        raise ManifestError(source, (f"cannot read: {error.strerror or error}",)) from None
    except UnicodeDecodeError as error:
        raise ManifestError(
            source, (f"not UTF-8 text (byte {error.start}: {error.reason})",)
        ) from None
    try:
        return read_documents(text)
    except YamlProblem as problem:
        raise ManifestError(source, (str(problem),)) from None


def load_jobs(path: str | Path) -> list[DistributedSGDJob]:
    """All DistributedSGDJobs of a YAML (or JSON) file, possibly multi-document.

    Raises ManifestError for a missing or unreadable file, YAML that the reader
    refuses (dsgd_operator.yaml_reader), a file without jobs, or any invalid
    job (all problems of all documents at once).
    """
    source = str(path)
    documents = read_manifest_documents(path)
    if not documents:
        raise ManifestError(source, ("no DistributedSGDJob in this file",))
    jobs, problems = [], []
    for index, document in enumerate(documents):
        where = source if len(documents) == 1 else f"{source}[{index}]"
        try:
            jobs.append(parse_job(document, where))
        except ManifestError as error:
            problems.extend(
                error.problems
                if len(documents) == 1
                else [f"(document {index}) {p}" for p in error.problems]
            )
    if problems:
        raise ManifestError(source, tuple(problems))
    return jobs
