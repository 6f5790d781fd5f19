"""The trainer's Prometheus metrics, in process: names, labels, and what a publish exports."""

from __future__ import annotations

import pytest
from dsgd_contract.metrics import EXPORTED_METRICS
from dsgd_trainer.metrics import RankProgress, TrainerMetrics
from prometheus_client import CollectorRegistry


def progress(steps: int, rounds: int, sent: int, **gauges: float) -> RankProgress:
    return RankProgress(
        epoch=steps / 8,
        steps=steps,
        samples=32 * steps,
        learning_rate=gauges.get("lr", 0.1),
        train_loss=gauges.get("loss", 1.0),
        train_accuracy=0.5,
        samples_per_second=1000.0,
        sync_rounds={"global": rounds, "intra_node": 2 * rounds},
        communicated_bytes={"global": sent, "intra_node": 0},
        communication_seconds=0.1 * rounds,
        compute_seconds=0.5 * steps,
    )


def test_every_contract_metric_is_exported_with_a_rank_label() -> None:
    registry = CollectorRegistry()
    metrics = TrainerMetrics(rank=3, registry=registry)
    metrics.publish(progress(steps=1, rounds=1, sent=10))
    metrics.publish_evaluation(0.5, 0.9)
    metrics.observe_step(0.01)
    families = {family.name: family for family in registry.collect()}
    exported = {
        name + "_total" if family.type == "counter" else name for name, family in families.items()
    }
    assert exported == set(EXPORTED_METRICS)
    for family in families.values():
        for sample in family.samples:
            assert sample.labels["rank"] == "3", sample


def test_counters_advance_by_what_is_new_and_gauges_hold_the_latest() -> None:
    registry = CollectorRegistry()
    metrics = TrainerMetrics(rank=0, registry=registry)
    # A resumed run's first publish carries the checkpoint's totals: counters are job totals.
    metrics.publish(progress(steps=16, rounds=5, sent=500, loss=2.0))
    metrics.publish(progress(steps=24, rounds=8, sent=800, loss=1.5, lr=0.01))

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"rank": "0", **labels})

    assert value("dsgd_steps_total") == 24
    assert value("dsgd_samples_total") == 24 * 32
    assert value("dsgd_sync_rounds_total", scope="global") == 8
    assert value("dsgd_sync_rounds_total", scope="intra_node") == 16
    assert value("dsgd_communicated_bytes_total", scope="global") == 800
    assert value("dsgd_communication_seconds_total") == pytest.approx(0.8)
    assert value("dsgd_compute_seconds_total") == 12.0
    assert value("dsgd_epoch") == 3.0
    assert value("dsgd_train_loss") == 1.5
    assert value("dsgd_learning_rate") == 0.01


def test_step_durations_fall_into_buckets_from_milliseconds_to_a_minute() -> None:
    registry = CollectorRegistry()
    metrics = TrainerMetrics(rank=1, registry=registry)
    for seconds in (0.0008, 0.003, 0.2, 45.0):
        metrics.observe_step(seconds)

    def bucket(le: str) -> float | None:
        labels = {"rank": "1", "le": le}
        return registry.get_sample_value("dsgd_step_duration_seconds_bucket", labels)

    assert bucket("0.001") == 1
    assert bucket("0.005") == 2
    assert bucket("0.25") == 3
    assert bucket("30.0") == 3
    assert bucket("60.0") == 4
