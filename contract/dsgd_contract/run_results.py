"""A finished run's results as the operator reads them: the pod's termination message.

The trainer's rank 0 writes summary.json and metrics.jsonl to its output
directory (`dsgd_contract.experiment`); on a cluster that directory is a volume
the operator never mounts. So rank 0 also writes a compact copy of the results
to the file named by RESULTS_MESSAGE_ENV, which the pod builders set to the
trainer container's `terminationMessagePath`: Kubernetes copies that file into
the finished pod's `status.containerStatuses[].state.terminated.message`
(at most MAX_MESSAGE_BYTES), where the operator reads it and stores it, expanded,
in the job's `status.results` (`RunResults`). `SGDExperiment`s aggregate those.

The message is JSON: `{"v": 1, "summary": {...}, "curve": [[...], ...], "evaluations": N}`
with the summary's SUMMARY_FIELDS and its per-scope counts SCOPE_FIELDS (camelCase, as
in the status) and one row per kept evaluation in CURVE_FIELDS' order. A curve too
long for the limit is decimated to evenly spaced evaluations, always keeping the
first and the last; `evaluations` says how many there were. Figures derived from
the curve (time, samples and bytes to a target accuracy) are then read at the kept
evaluations. Numbers are rounded to 6 significant digits (counts stay exact). The
per-scope counts give way before the last curve point does (never with dsgd's four
scopes).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

#: Where Kubernetes reads a container's termination message unless the pod says otherwise.
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
#: The kubelet keeps at most this many bytes of a container's termination message.
MAX_MESSAGE_BYTES = 4096
#: The file rank 0 writes the message to (unset: `dsgd run`, whose results are on disk).
RESULTS_MESSAGE_ENV = "DSGD_RESULTS_MESSAGE_PATH"
FORMAT_VERSION = 1

#: One curve point per evaluation, in this order in the message (metrics.jsonl's keys).
CURVE_FIELDS = (
    "epoch",
    "samples",
    "wall_seconds",
    "train_loss",
    "test_accuracy",
    "communicated_bytes",
)
#: summary.json's figures carried in the message (and in the job's status.results).
SUMMARY_FIELDS = (
    "epochs",
    "steps",
    "samples",
    "final_train_loss",
    "final_train_accuracy",
    "final_test_loss",
    "final_test_accuracy",
    "communicated_bytes",
    "sync_rounds",
    "samples_per_second",
    "wall_seconds",
)
#: summary.json's counts by traffic scope (global, intra_node, and downpour-sgd's push and
#: fetch: dsgd_contract.metrics.SCOPES), carried as objects of scope → count.
SCOPE_FIELDS = ("sync_rounds", "communicated_bytes_by_scope")


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class CurvePoint(_Wire):
    """One evaluation: where the run was and how the model did."""

    epoch: float = Field(description="Epochs done at this evaluation.")
    samples: int = Field(description="Training samples seen by all ranks so far.")
    wall_seconds: float = Field(description="Seconds since the run started (rank 0).")
    train_loss: float | None = Field(None, description="Mean training loss since the last one.")
    test_accuracy: float | None = Field(None, description="Test accuracy of the synced model.")
    communicated_bytes: int = Field(description="Bytes rank 0 sent in collectives so far.")


class RunResults(_Wire):
    """A succeeded run's results: summary.json's figures and the evaluation curve."""

    epochs: float | None = Field(None, description="Epochs trained.")
    steps: int | None = Field(None, description="Optimizer steps.")
    samples: int | None = Field(None, description="Training samples seen by all ranks.")
    final_train_loss: float | None = Field(None, description="Training loss at the end.")
    final_train_accuracy: float | None = Field(
        None, description="Training accuracy at the end (over the last evaluation's batches)."
    )
    final_test_loss: float | None = Field(None, description="Test loss at the end.")
    final_test_accuracy: float | None = Field(None, description="Test accuracy at the end.")
    communicated_bytes: int | None = Field(None, description="Bytes rank 0 sent, all scopes.")
    sync_rounds: dict[str, int] = Field(
        default_factory=dict,
        description="Rank 0's sync rounds by scope (global, intra_node, push, fetch).",
    )
    communicated_bytes_by_scope: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "Bytes rank 0 sent by scope: global, intra_node, and downpour-sgd's push "
            "(gradients to the parameter servers) and fetch (parameters from them)."
        ),
    )
    samples_per_second: float | None = Field(None, description="Training throughput, all ranks.")
    wall_seconds: float | None = Field(None, description="Seconds from start to end (rank 0).")
    evaluations: int = Field(0, description="Evaluations the run made (the curve may keep fewer).")
    curve: list[CurvePoint] = Field(
        default_factory=list,
        description="Test accuracy per evaluation (evenly decimated to fit 4096 bytes).",
    )

    def summary(self) -> dict[str, Any]:
        """summary.json's keys (snake_case) for the figures and per-scope counts carried."""
        return {key: getattr(self, key) for key in (*SUMMARY_FIELDS, *SCOPE_FIELDS)}

    def records(self) -> list[dict[str, Any]]:
        """The curve as metrics.jsonl records (snake_case keys)."""
        return [point.model_dump() for point in self.curve]


def _rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    if isinstance(value, float):
        return None  # NaN and infinities are not JSON
    return value


def _kept(count: int, keep: int) -> list[int]:
    """`keep` evenly spaced indices of `count`, the first and the last among them."""
    if keep >= count:
        return list(range(count))
    if keep <= 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (keep - 1)) for i in range(keep)})


def encode_results(
    summary: dict[str, Any], records: list[dict[str, Any]], limit: int = MAX_MESSAGE_BYTES
) -> str:
    """The message for `summary` (summary.json) and `records` (metrics.jsonl): at most
    `limit` bytes, the curve decimated as needed (see the module docstring)."""
    head = {to_camel(key): _rounded(summary.get(key)) for key in SUMMARY_FIELDS}
    for key in SCOPE_FIELDS:
        head[to_camel(key)] = {
            str(scope): int(count) for scope, count in (summary.get(key) or {}).items()
        }
    rows = [[_rounded(record.get(key)) for key in CURVE_FIELDS] for record in records]

    def message(keep: int) -> str:
        curve = [rows[i] for i in _kept(len(rows), keep)] if rows else []
        body = {"v": FORMAT_VERSION, "summary": head, "curve": curve, "evaluations": len(rows)}
        return json.dumps(body, separators=(",", ":"))

    def longest_fitting() -> str:
        low, high = 0, len(rows)  # the most points that fit: a binary search on the count
        while low < high:
            middle = (low + high + 1) // 2
            if len(message(middle).encode()) <= limit:
                low = middle
            else:
                high = middle - 1
        return message(low)

    text = longest_fitting()
    if len(text.encode()) > limit:  # counts of very many scopes; never in practice
        for key in SCOPE_FIELDS:
            head[to_camel(key)] = {}
        text = longest_fitting()
    return text


def decode_results(message: str | None) -> RunResults | None:
    """The RunResults of a termination message, or None when it is not one of ours."""
    if not message:
        return None
    try:
        body = json.loads(message)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("v") != FORMAT_VERSION:
        return None
    rows = body.get("curve") or []
    try:
        curve = [
            CurvePoint.model_validate(dict(zip(CURVE_FIELDS, row, strict=True))) for row in rows
        ]
        return RunResults.model_validate(
            {
                **(body.get("summary") or {}),
                "curve": curve,
                "evaluations": body.get("evaluations") or len(rows),
            }
        )
    except (ValidationError, TypeError, ValueError):
        return None
