"""Reading status.progress from a trainer exposition (shared by `dsgd run` and the operator)."""

from __future__ import annotations

import pytest
from dsgd_operator.trainer_progress import parse_progress, scrape_progress

EXPOSITION = """\
# HELP dsgd_epoch Epochs done, fractional.
# TYPE dsgd_epoch gauge
dsgd_epoch{rank="0"} 2.5
dsgd_epoch{rank="1"} 2.25
# TYPE dsgd_steps_total counter
dsgd_steps_total{rank="1"} 90.0
dsgd_steps_total{rank="0"} 100.0
# TYPE dsgd_train_loss gauge
dsgd_train_loss{rank="0"} 0.42
dsgd_train_loss{rank="1"} NaN
# TYPE dsgd_test_accuracy gauge
dsgd_test_accuracy{rank="0"} 0.875
# TYPE dsgd_samples_per_second gauge
dsgd_samples_per_second{rank="0"} 1234.5
# TYPE dsgd_sync_rounds_total counter
dsgd_sync_rounds_total{rank="0",scope="global"} 25.0
dsgd_sync_rounds_total{rank="0",scope="intra_node"} 75.0
dsgd_sync_rounds_total{rank="1",scope="global"} 999.0
# TYPE dsgd_communicated_bytes_total counter
dsgd_communicated_bytes_total{rank="0",scope="global"} 1000.0
dsgd_communicated_bytes_total{rank="0",scope="intra_node"} 300.0
"""


def test_rank_zeros_series_become_progress() -> None:
    progress = parse_progress(EXPOSITION)
    assert progress.epoch == 2.5
    assert progress.step == 100
    assert progress.train_loss == 0.42
    assert progress.test_accuracy == 0.875
    assert progress.samples_per_second == 1234.5
    assert progress.sync_rounds == {"global": 25, "intra_node": 75}
    assert progress.communicated_bytes == 1300
    wire = progress.model_dump(by_alias=True)
    assert wire["trainLoss"] == 0.42 and wire["communicatedBytes"] == 1300


def test_missing_series_stay_unset_and_non_finite_values_are_skipped() -> None:
    progress = parse_progress('# TYPE dsgd_train_loss gauge\ndsgd_train_loss{rank="0"} NaN\n')
    assert progress.train_loss is None
    assert progress.step is None and progress.communicated_bytes is None
    assert progress.sync_rounds == {}


def test_garbage_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_progress("this is { not an exposition\n")


def test_scrape_of_a_closed_port_is_none(free_port) -> None:  # type: ignore[no-untyped-def]
    assert scrape_progress(f"http://127.0.0.1:{free_port()}/metrics", timeout=0.5) is None


def test_skipped_checkpoints_become_one_warning_event_per_attempt() -> None:
    """The trainer cannot post Events: node 0's counter of skipped checkpoints makes the
    operator post one (dsgd_operator.reconcile.progress_scrape)."""
    from dsgd_operator.reconcile.progress_scrape import checkpoint_fallback_event

    resumed = parse_progress(
        EXPOSITION + 'dsgd_checkpoints_skipped_total{rank="0"} 1.0\n'
        'dsgd_checkpoints_skipped_total{rank="1"} 2.0\n'
    )
    assert resumed.checkpoints_skipped == 1
    event = checkpoint_fallback_event(resumed, attempt=2)
    assert (event.type, event.reason, event.key) == (
        "Warning",
        "CheckpointFallback",
        "checkpoint-fallback/2",
    )
    assert "the newest 1 were unusable" in event.message
    assert checkpoint_fallback_event(parse_progress(EXPOSITION), attempt=2) is None
