"""The results message a finished trainer leaves for the operator (dsgd_contract.run_results):
bounded by the kubelet's 4096 bytes, the curve decimated evenly, first and last kept.

The oracle for the numbers is the input itself (rounded to 6 significant digits by the
format); the trainer's own message is checked in tests/test_train.py.
"""

from __future__ import annotations

import itertools
import json
import random

import pytest
from dsgd_contract.run_results import (
    CURVE_FIELDS,
    MAX_MESSAGE_BYTES,
    decode_results,
    encode_results,
)


def run(evaluations: int, seed: int = 0) -> tuple[dict, list[dict]]:
    rng = random.Random(seed)
    records = [
        {
            "epoch": e,
            "step": 10 * e,
            "samples": 1280 * e,
            "wall_seconds": 3.21 * e + rng.random(),
            "train_loss": 2.3 / e + rng.random() / 100,
            "test_accuracy": 1 - 0.9 / e - rng.random() / 100,
            "communicated_bytes": 123_456_789 * e,
            "learning_rate": 0.1,
        }
        for e in range(1, evaluations + 1)
    ]
    last = records[-1] if records else {}
    summary = {
        "epochs": evaluations,
        "steps": 10 * evaluations,
        "samples": 1280 * evaluations,
        "final_train_loss": last.get("train_loss"),
        "final_train_accuracy": None if not records else 0.97 - rng.random() / 100,
        "final_test_loss": 0.25,
        "final_test_accuracy": last.get("test_accuracy"),
        "communicated_bytes": last.get("communicated_bytes", 0),
        "sync_rounds": {"global": 5 * evaluations, "intra_node": 0, "push": 0, "fetch": 0},
        "communicated_bytes_by_scope": {
            "global": last.get("communicated_bytes", 0),
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        },
        "samples_per_second": 1234.5,
        "wall_seconds": last.get("wall_seconds", 0.0),
        "algorithm": "local-sgd",  # not carried
    }
    return summary, records


@pytest.mark.parametrize("evaluations", [0, 1, 5, 40, 200, 5000])
def test_message_fits_the_kubelets_limit_and_round_trips(evaluations: int) -> None:
    summary, records = run(evaluations)
    message = encode_results(summary, records)
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    results = decode_results(message)
    assert results is not None and results.evaluations == evaluations
    for key, value in results.summary().items():
        assert value == pytest.approx(summary[key], rel=1e-5), key
    kept = results.records()
    if evaluations:
        # First and last evaluations always kept, in order, none twice.
        assert kept[0]["epoch"] == 1 and kept[-1]["epoch"] == evaluations
        epochs = [point["epoch"] for point in kept]
        assert epochs == sorted(set(epochs))
    by_epoch = {record["epoch"]: record for record in records}
    for point in kept:
        original = by_epoch[point["epoch"]]
        for key in CURVE_FIELDS:
            assert point[key] == pytest.approx(original[key], rel=1e-5), key


def test_a_short_curve_is_kept_whole_and_a_long_one_decimated_evenly() -> None:
    summary, records = run(30)
    assert decode_results(encode_results(summary, records)).records().__len__() == 30
    summary, records = run(1000)
    kept = [p["epoch"] for p in decode_results(encode_results(summary, records)).records()]
    assert 20 <= len(kept) < 1000
    gaps = {b - a for a, b in itertools.pairwise(kept)}
    assert max(gaps) - min(gaps) <= 1, gaps  # evenly spaced, up to rounding
    # As many points as fit: one more would not.
    longer = encode_results(summary, records, limit=MAX_MESSAGE_BYTES + 200)
    assert len(json.loads(longer)["curve"]) > len(kept)


def test_counts_of_too_many_scopes_are_dropped_to_keep_the_bound() -> None:
    summary, records = run(40)
    summary["communicated_bytes_by_scope"] = {f"scope-{i}": 10**12 + i for i in range(400)}
    message = encode_results(summary, records)
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    results = decode_results(message)
    assert results.communicated_bytes_by_scope == {} and results.sync_rounds == {}
    assert len(results.curve) == 40, "the curve fits once the counts are dropped"
    assert results.final_test_accuracy == pytest.approx(summary["final_test_accuracy"])


@pytest.mark.parametrize(
    "message",
    [
        None,
        "",
        "Error: out of memory",
        "[1, 2]",
        '{"v": 2, "summary": {}}',
        '{"v": 1, "curve": [[1]]}',
    ],
)
def test_a_message_that_is_not_ours_gives_no_results(message: str | None) -> None:
    assert decode_results(message) is None
