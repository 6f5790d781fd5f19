"""A gang that resumed from an older checkpoint gets a Warning Event on its job.

The trainer (no API access) counts the unusable checkpoints it skipped in
dsgd_checkpoints_skipped_total; the operator, really running against kmock,
scrapes node 0's page and posts CheckpointFallback once for the attempt. Node
0's page is a real TrainerMetrics registry served on a free loopback port, the
pod's `metrics` port pointed at it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dsgd_contract.pod import CONTAINER_NAME, METRICS_PORT_NAME
from dsgd_trainer.metrics import RankProgress, TrainerMetrics
from prometheus_client import CollectorRegistry, start_http_server

from tests._kmock_cluster import (  # noqa: F401  (fixtures)
    PODS,
    cluster_fixture,
    job_spec,
    operator_fixture,
    wait_for,
)
from tests.conftest import pick_free_port


@pytest.fixture
def resumed_rank_page() -> Iterator[int]:
    """Node 0's metrics: rank 0 resumed after skipping one corrupt checkpoint."""
    registry = CollectorRegistry()
    rank = TrainerMetrics(rank=0, registry=registry)
    rank.publish(RankProgress(epoch=2.0, steps=16, samples=512, learning_rate=0.1))
    rank.count_skipped_checkpoints(1)
    port = pick_free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port
    server.shutdown()
    thread.join(timeout=5)


async def test_a_checkpoint_fallback_becomes_a_warning_event(cluster, operator, resumed_rank_page):
    await cluster.create_job("resumed", job_spec())
    await wait_for(lambda: len(cluster.pods("resumed")) == 2, what="pods")
    ports = [{"name": METRICS_PORT_NAME, "containerPort": resumed_rank_page}]
    await cluster._call(
        "PATCH",
        cluster.path(PODS, "resumed-node-0"),
        {"spec": {"containers": [{"name": CONTAINER_NAME, "ports": ports}]}},
    )
    for pod in ("resumed-node-0", "resumed-node-1"):
        await cluster.set_pod(pod, "Running", pod_ip="127.0.0.1")
    await wait_for(
        lambda: "CheckpointFallback" in cluster.event_reasons("resumed"),
        what="a CheckpointFallback event",
    )
    (event,) = [e for e in cluster.events("resumed") if e["reason"] == "CheckpointFallback"]
    assert event["type"] == "Warning"
    assert event["message"].startswith("gang attempt 0 resumed from an older checkpoint")
    assert cluster.status("resumed")["progress"]["checkpointsSkipped"] == 1
