"""Prometheus metrics of the trainer: every local rank writes, local rank 0 serves.

prometheus-client's multiprocess mode: each rank writes its values to files in
PROMETHEUS_MULTIPROC_DIR, and local rank 0 serves all of them (a
MultiProcessCollector) on DSGD_METRICS_PORT at /metrics. The names are the
contract's (dsgd_contract.metrics): the operator reads them back. Every series carries a
`rank` label (the global rank), so one pod's page shows each of its ranks.
Without PROMETHEUS_MULTIPROC_DIR, rank 0 of the pod serves only its own values.

Semantics (per rank; sum over `rank` for the job):
- counters are job totals: after a resume they continue from the checkpoint
  (steps, samples, sync rounds, bytes), so rate() shows one jump at a restart;
- dsgd_epoch is fractional (steps done / steps per epoch);
- dsgd_train_loss / dsgd_train_accuracy are means over this rank's batches since
  the previous update; dsgd_samples_per_second is this rank's throughput over that
  interval; dsgd_test_* are the synchronized model's (the same on every rank).
The loop updates them every `PUBLISH_INTERVAL` seconds and at each epoch's end.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import torch.distributed as dist
from dsgd_contract import metrics as names
from dsgd_contract.metrics import RANK_LABEL, SCOPE_LABEL, SCOPES
from dsgd_contract.pod import METRICS_ADDR_ENV, METRICS_PORT_ENV, MULTIPROC_DIR_ENV
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from dsgd_trainer.gang import GangPosition

#: Seconds between two updates of the progress metrics (the loop reads the loss then).
PUBLISH_INTERVAL = 2.0
#: Step durations from 1 ms (tiny models on a GPU) to a minute (large models on CPUs).
STEP_DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass
class RankProgress:
    """Where this rank's training stands: what `TrainerMetrics.publish` exports."""

    epoch: float = 0.0
    steps: int = 0
    samples: int = 0
    learning_rate: float = 0.0
    train_loss: float | None = None
    train_accuracy: float | None = None
    samples_per_second: float | None = None
    sync_rounds: dict[str, int] = field(default_factory=dict)
    communicated_bytes: dict[str, int] = field(default_factory=dict)
    payload_bytes: dict[str, int] = field(default_factory=dict)
    communication_seconds: float = 0.0
    compute_seconds: float = 0.0
    consensus_distance: float | None = None


class TrainerMetrics:
    """The metrics of one rank; create it through `start_metrics` (it prepares the directory)."""

    def __init__(self, rank: int, registry: CollectorRegistry | None) -> None:
        def gauge(name: str, documentation: str) -> Gauge:
            # One process per rank label: the most recent value of a live process is the value.
            return Gauge(
                name,
                documentation,
                [RANK_LABEL],
                registry=registry,
                multiprocess_mode="livemostrecent",
            )

        label = str(rank)
        self._rank = label
        self.train_loss = gauge(names.TRAIN_LOSS, "Mean training loss of recent batches.")
        self.train_accuracy = gauge(
            names.TRAIN_ACCURACY, "Training accuracy of recent batches (0-1)."
        )
        self.test_loss = gauge(names.TEST_LOSS, "Test loss of the synchronized model.")
        self.test_accuracy = gauge(
            names.TEST_ACCURACY, "Test accuracy of the synchronized model (0-1)."
        )
        self.learning_rate = gauge(names.LEARNING_RATE, "Learning rate of the latest step.")
        self.epoch = gauge(names.EPOCH, "Epochs done, fractional (steps / steps per epoch).")
        self.samples_per_second = gauge(
            names.SAMPLES_PER_SECOND, "Training samples per second of this rank, recently."
        )
        self.consensus_distance = gauge(
            names.CONSENSUS_DISTANCE,
            "This rank's distance to the consensus at the last global model averaging, "
            "relative to the consensus: ||x_k - mean|| / ||mean|| (local SGD variants).",
        )
        self.steps = Counter(names.STEPS, "Optimizer steps taken.", [RANK_LABEL], registry=registry)
        self.samples = Counter(
            names.SAMPLES, "Training samples processed.", [RANK_LABEL], registry=registry
        )
        self.sync_rounds = Counter(
            names.SYNC_ROUNDS,
            "Synchronization rounds (collectives of the algorithm) by scope.",
            [RANK_LABEL, SCOPE_LABEL],
            registry=registry,
        )
        self.communicated_bytes = Counter(
            names.COMMUNICATED_BYTES,
            "Bytes this rank sent on the wire in the algorithm's collectives, by scope.",
            [RANK_LABEL, SCOPE_LABEL],
            registry=registry,
        )
        self.payload_bytes = Counter(
            names.PAYLOAD_BYTES,
            "Size of the tensors this rank contributed to the algorithm's collectives, by scope.",
            [RANK_LABEL, SCOPE_LABEL],
            registry=registry,
        )
        self.communication_seconds = Counter(
            names.COMMUNICATION_SECONDS,
            "Wall time spent in the algorithm's collectives.",
            [RANK_LABEL],
            registry=registry,
        )
        self.compute_seconds = Counter(
            names.COMPUTE_SECONDS,
            "Wall time of training steps outside the algorithm's collectives.",
            [RANK_LABEL],
            registry=registry,
        )
        self.step_duration = Histogram(
            names.STEP_DURATION,
            "Wall time between the ends of consecutive training steps.",
            [RANK_LABEL],
            registry=registry,
            buckets=STEP_DURATION_BUCKETS,
        ).labels(label)
        self.checkpoints_skipped = Counter(
            names.CHECKPOINTS_SKIPPED,
            "Unusable checkpoints (corrupt, incomplete) skipped for an older one at resume.",
            [RANK_LABEL],
            registry=registry,
        ).labels(label)
        self._published = RankProgress()
        for scope in SCOPES:
            # Make both scopes visible from the start, at 0, so that queries find them.
            self.sync_rounds.labels(label, scope)
            self.communicated_bytes.labels(label, scope)
            self.payload_bytes.labels(label, scope)

    def count_skipped_checkpoints(self, skipped: int) -> None:
        self.checkpoints_skipped.inc(skipped)

    def observe_step(self, seconds: float) -> None:
        self.step_duration.observe(seconds)

    def publish(self, progress: RankProgress) -> None:
        """Export `progress`: gauges are set, counters advance by what is new since last time."""
        label, last = self._rank, self._published
        self.epoch.labels(label).set(progress.epoch)
        self.learning_rate.labels(label).set(progress.learning_rate)
        if progress.train_loss is not None:
            self.train_loss.labels(label).set(progress.train_loss)
        if progress.train_accuracy is not None:
            self.train_accuracy.labels(label).set(progress.train_accuracy)
        if progress.samples_per_second is not None:
            self.samples_per_second.labels(label).set(progress.samples_per_second)
        if progress.consensus_distance is not None:
            self.consensus_distance.labels(label).set(progress.consensus_distance)
        self.steps.labels(label).inc(max(0, progress.steps - last.steps))
        self.samples.labels(label).inc(max(0, progress.samples - last.samples))
        for scope, rounds in progress.sync_rounds.items():
            done = rounds - last.sync_rounds.get(scope, 0)
            self.sync_rounds.labels(label, scope).inc(max(0, done))
        for scope, sent in progress.communicated_bytes.items():
            done = sent - last.communicated_bytes.get(scope, 0)
            self.communicated_bytes.labels(label, scope).inc(max(0, done))
        for scope, contributed in progress.payload_bytes.items():
            done = contributed - last.payload_bytes.get(scope, 0)
            self.payload_bytes.labels(label, scope).inc(max(0, done))
        self.communication_seconds.labels(label).inc(
            max(0.0, progress.communication_seconds - last.communication_seconds)
        )
        self.compute_seconds.labels(label).inc(
            max(0.0, progress.compute_seconds - last.compute_seconds)
        )
        self._published = RankProgress(
            steps=progress.steps,
            samples=progress.samples,
            sync_rounds=dict(progress.sync_rounds),
            communicated_bytes=dict(progress.communicated_bytes),
            payload_bytes=dict(progress.payload_bytes),
            communication_seconds=progress.communication_seconds,
            compute_seconds=progress.compute_seconds,
        )

    def publish_evaluation(self, test_loss: float, test_accuracy: float) -> None:
        self.test_loss.labels(self._rank).set(test_loss)
        self.test_accuracy.labels(self._rank).set(test_accuracy)


def start_metrics(gang: GangPosition) -> tuple[TrainerMetrics, WSGIServer | None]:
    """Set up this rank's metrics and, on local rank 0, the HTTP endpoint (collective).

    Local rank 0 first empties PROMETHEUS_MULTIPROC_DIR (files of an earlier
    attempt in the same container would add up with ours), and a barrier keeps
    the other ranks from writing before that. The server listens on
    DSGD_METRICS_PORT (unset or 0: none), on the address DSGD_METRICS_ADDR
    (unset: every interface; a pod IP keeps pods that share a host apart).
    Returns the metrics and the server (call its `shutdown()` at exit) or None.
    """
    directory = os.environ.get(MULTIPROC_DIR_ENV)
    if directory and gang.local_rank == 0:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink(missing_ok=True)
    dist.barrier()
    serving = CollectorRegistry()
    if directory:
        MultiProcessCollector(serving, path=directory)
    metrics = TrainerMetrics(gang.rank, registry=None if directory else serving)
    port = int(os.environ.get(METRICS_PORT_ENV) or 0)
    server = None
    if port and gang.local_rank == 0:
        try:
            address = os.environ.get(METRICS_ADDR_ENV) or "0.0.0.0"
            server, _thread = start_http_server(port, addr=address, registry=serving)
        except OSError as error:
            # Metrics are worth a warning, not a failed training run.
            print(f"warning: cannot serve metrics on port {port}: {error}", file=sys.stderr)
    return metrics, server
