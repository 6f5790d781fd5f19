"""A parameter server's Prometheus series (names in dsgd_contract.metrics), labelled by shard."""

from __future__ import annotations

import os
import sys
from wsgiref.simple_server import WSGIServer

from dsgd_contract.metrics import SERVER_FETCHES, SERVER_UPDATES, SHARD_LABEL, STALENESS
from dsgd_contract.pod import METRICS_ADDR_ENV, METRICS_PORT_ENV
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from dsgd_trainer.parameter_server.shard import STALENESS_BUCKETS, Shard


class ParameterServerMetrics:
    """Shard `index`'s series in `registry`: pushes applied (with their staleness), fetches."""

    def __init__(self, index: int, registry: CollectorRegistry) -> None:
        label = str(index)
        self.staleness = Histogram(
            STALENESS,
            "Shard version at apply time minus the version the pushed gradient was computed on.",
            [SHARD_LABEL],
            buckets=STALENESS_BUCKETS,
            registry=registry,
        ).labels(label)
        self.updates = Counter(
            SERVER_UPDATES, "Pushes applied to the shard.", [SHARD_LABEL], registry=registry
        ).labels(label)
        self.fetches = Counter(
            SERVER_FETCHES, "Fetches of the shard served.", [SHARD_LABEL], registry=registry
        ).labels(label)

    def on_push(self, staleness: int) -> None:
        """One push applied, `staleness` versions behind."""
        self.staleness.observe(staleness)
        self.updates.inc()

    def on_fetch(self) -> None:
        self.fetches.inc()


def start_server_metrics(shard: Shard) -> WSGIServer | None:
    """Count `shard`'s pushes (with their staleness) and fetches; serve them on DSGD_METRICS_PORT.

    Returns the HTTP server (None when no port is set, or it cannot listen: a warning).
    """
    registry = CollectorRegistry()
    series = ParameterServerMetrics(shard.index, registry)
    shard.on_push = series.on_push
    shard.on_fetch = series.on_fetch
    port = int(os.environ.get(METRICS_PORT_ENV) or 0)
    if not port:
        return None
    try:
        address = os.environ.get(METRICS_ADDR_ENV) or "0.0.0.0"
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        print(f"warning: cannot serve metrics on port {port}: {error}", file=sys.stderr)
        return None
    return server
