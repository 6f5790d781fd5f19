"""Reading DistributedSGDJob manifests from files and dicts, with user-facing errors.

Every front door (`dsgd validate/render/run`, the operator) goes through
`parse_job`, so they all refuse the same input with the same messages: one
line per problem, naming the file and the field path (`spec.topology.nodes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dsgd_operator.api import DistributedSGDJob


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


def parse_job(document: Any, source: str = "<manifest>") -> DistributedSGDJob:
    """Validate one manifest document, or raise ManifestError naming every bad field."""
    if not isinstance(document, dict):
        raise ManifestError(
            source, (f"expected a mapping (a Kubernetes object), got {type(document).__name__}",)
        )
    if document.get("kind") != "DistributedSGDJob":
        raise ManifestError(
            source, (f"kind: expected DistributedSGDJob, got {document.get('kind')!r}",)
        )
    try:
        # strict: no "2" for 2 or "true" for true; the API server would refuse them.
        return DistributedSGDJob.model_validate(document, strict=True)
    except ValidationError as error:
        raise ManifestError(source, describe_validation_error(error)) from None


def read_documents(path: str | Path) -> list[Any]:
    """The non-empty YAML (or JSON) documents of a file: the one place manifests are read.

    Raises ManifestError for a missing or unreadable file, broken YAML, or no document.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(source, ("no such file",)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(source, (f"cannot read: {error}",)) from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ManifestError(source, (f"{where}malformed YAML: {problem}",)) from None
    if not documents:
        raise ManifestError(source, ("no DistributedSGDJob in this file",))
    return documents


def load_jobs(path: str | Path) -> list[DistributedSGDJob]:
    """All DistributedSGDJobs of a YAML (or JSON) file, possibly multi-document.

    Raises ManifestError for a missing or unreadable file, broken YAML, a file
    without jobs, or any invalid job (all problems of all documents at once).
    """
    source = str(path)
    documents = read_documents(path)
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
