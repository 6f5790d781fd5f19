"""monitoring.podMonitor.perRankSeries, run by a real Prometheus on a real trainer exposition.

The ranks of a 4-rank gang serve their series (dsgd_trainer.metrics); Prometheus scrapes
them with the rendered PodMonitor's metricRelabelings, and its TSDB says which ranks were
kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests._helm_chart import objects_of_kind
from tests._polling import wait_until
from tests._prometheus import PrometheusServer, relabel_configs

pytestmark = pytest.mark.slow
RANKS = 4


def _rank_exposition(rank: int) -> bytes:
    from dsgd_trainer.metrics import RankProgress, TrainerMetrics

    registry = CollectorRegistry()
    trainer = TrainerMetrics(rank=rank, registry=registry)
    trainer.publish(RankProgress(epoch=1.0, steps=10, samples=320, learning_rate=0.1,
                                 train_loss=0.5))  # fmt: skip
    trainer.observe_step(0.05)
    return generate_latest(registry)


def _serve(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def rank_targets() -> Iterator[list[str]]:
    """One endpoint per rank of the gang (the series are the same as one pod serving all)."""
    servers = [_serve(_rank_exposition(rank)) for rank in range(RANKS)]
    yield [f"127.0.0.1:{server.server_address[1]}" for server in servers]
    for server in servers:
        server.shutdown()


def _kept_ranks(
    tmp_path: Path, targets: list[str], free_port: Callable[[], int], per_rank: bool
) -> set[str]:
    values = {"monitoring": {"podMonitor": {"enabled": True, "perRankSeries": per_rank}}}
    (monitor,) = objects_of_kind("PodMonitor", values)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    config: dict = {"job_name": "trainers", "static_configs": [{"targets": targets}]}
    if endpoint.get("metricRelabelings"):
        config["metric_relabel_configs"] = relabel_configs(endpoint["metricRelabelings"])
    with PrometheusServer(tmp_path / str(per_rank), free_port(), [config]) as prometheus:
        result = wait_until(
            lambda: len(prometheus.query("up == 1")) == RANKS
            and prometheus.query("count by (rank) (dsgd_steps_total)"),
            30, "every target scraped",
        )  # fmt: skip
        buckets = prometheus.query("count(dsgd_step_duration_seconds_bucket)")
    assert buckets, "the histogram was scraped"
    return {sample["metric"]["rank"] for sample in result}


def test_per_rank_series_are_kept_by_default_and_dropped_to_rank_0_on_request(
    tmp_path: Path, rank_targets: list[str], free_port: Callable[[], int]
) -> None:
    assert _kept_ranks(tmp_path, rank_targets, free_port, per_rank=True) == {"0", "1", "2", "3"}
    assert _kept_ranks(tmp_path, rank_targets, free_port, per_rank=False) == {"0"}
