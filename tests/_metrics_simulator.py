"""Serve real dsgd metrics that the scrape test cannot get from a healthy local run.

`python -m tests._metrics_simulator --operator-port P --sick-trainer-port Q`:

- on P, the operator's own registry (dsgd_operator.reconcile.metrics) with
  simulated activity: jobs in every phase, reconcile passes, pods created, and
  one gang restart and one job failure per second, so that the operator panels
  have data and the restart/failure alerts have something to fire on;
- on Q, a trainer rank (dsgd_trainer.metrics.TrainerMetrics) whose loss is NaN
  and whose step counter stopped: what the NaN and stall alerts must catch;
- on each of --dcgm-ports, a dcgm-exporter of one GPU node of DCGM_NODES;
- on --parameter-server-port, a downpour-sgd parameter server's registry
  (dsgd_trainer.parameter_server.metrics) for shard 0, applying SERVER_PUSHES_PER_SECOND
  pushes a second whose staleness cycles through STALENESS_CYCLE, and serving as many
  fetches: a training run with servers would take the scrape test too long.

A separate process, so that the operator's process-wide registry of the test
session is never touched. Runs until killed.
"""

from __future__ import annotations

import argparse
import http.server
import math
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, start_http_server

from tests._dcgm import Gpu, exposition

#: The (namespace, name) of the job whose restarts and failure the simulated operator reports;
#: it is Running as far as the operator knows, and no trainer target serves it.
OPERATOR_JOB = ("team-a", "resnet-sweep")


#: Two GPU nodes' dcgm-exporters. Node a: two GPUs of the healthy run's pod, one of a pod
#: that is no trainer, one idle. Node b: one GPU of the diverged job's pod.
DCGM_NODES = (
    (
        Gpu(0, "gpu-node-a", "dsgd-test", "scrape-test-node-0", "trainer"),
        Gpu(1, "gpu-node-a", "dsgd-test", "scrape-test-node-0", "trainer"),
        Gpu(2, "gpu-node-a", "dsgd-test", "notebook-0", "jupyter"),
        Gpu(3, "gpu-node-a"),
    ),
    (Gpu(0, "gpu-node-b", "dsgd-test", "diverged-node-0", "trainer"),),
)


#: The staleness of the simulated server's pushes, over and over (mean 3, max 8).
STALENESS_CYCLE = (0, 1, 2, 3, 3, 4, 8, 3)
SERVER_PUSHES_PER_SECOND = len(STALENESS_CYCLE)


def serve_parameter_server(port: int) -> Callable[[], None]:
    """A parameter server's series on `port`; returns what one simulated second does."""
    from dsgd_trainer.parameter_server.metrics import ParameterServerMetrics

    registry = CollectorRegistry()
    server = ParameterServerMetrics(0, registry)
    start_http_server(port, addr="127.0.0.1", registry=registry)

    def tick() -> None:
        for staleness in STALENESS_CYCLE:
            server.on_push(staleness)
            server.on_fetch()

    return tick


def serve_dcgm_exporter(port: int, gpus: tuple[Gpu, ...]) -> None:
    body = exposition(list(gpus)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def serve_operator(port: int) -> None:
    from dsgd_operator.reconcile import metrics

    metrics.serve(port, address="127.0.0.1")
    metrics.set_job_phases(["Running", "Running", "Pending", "Succeeded"])


def tick_operator(second: int) -> None:
    from dsgd_operator.reconcile import metrics

    metrics.RECONCILE_DURATION.observe(0.01 + 0.002 * (second % 7))
    metrics.PODS_CREATED.inc(2)
    metrics.gang_restarted(*OPERATOR_JOB)
    metrics.job_failed(*OPERATOR_JOB, "BackoffLimitExceeded")
    metrics.job_phase(*OPERATOR_JOB, "Running")


def serve_sick_trainer(port: int) -> None:
    from dsgd_trainer.metrics import RankProgress, TrainerMetrics

    registry = CollectorRegistry()
    trainer = TrainerMetrics(rank=0, registry=registry)
    trainer.publish(
        RankProgress(epoch=1.5, steps=30, samples=960, learning_rate=10.0, train_loss=math.nan)
    )
    start_http_server(port, addr="127.0.0.1", registry=registry)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--operator-port", type=int, required=True)
    parser.add_argument("--sick-trainer-port", type=int, required=True)
    parser.add_argument("--dcgm-ports", required=True, help="one port per DCGM_NODES entry")
    parser.add_argument("--parameter-server-port", type=int, required=True)
    args = parser.parse_args()
    serve_operator(args.operator_port)
    serve_sick_trainer(args.sick_trainer_port)
    for port, gpus in zip(args.dcgm_ports.split(","), DCGM_NODES, strict=True):
        serve_dcgm_exporter(int(port), gpus)
    tick_server = serve_parameter_server(args.parameter_server_port)
    print("serving", flush=True)
    second = 0
    while True:
        tick_operator(second)
        tick_server()
        second += 1
        time.sleep(1.0)


if __name__ == "__main__":
    main()
