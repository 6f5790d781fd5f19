"""End to end: the operator's pods run as real processes (torchrun, gloo, the trainer).

kmock plays the API server, kopf runs the operator, and tests/_kubelet.py plays
the kubelet: it executes each pod's command with its env and reports phases and
exit codes back. Nothing here is faked between the operator and the trainer.
"""

from __future__ import annotations

import json
import re
import signal

import pytest

from tests._kmock_cluster import (  # noqa: F401  (fixtures)
    cluster_fixture,
    operator_fixture,
    wait_for,
)
from tests._kubelet import Kubelet

pytestmark = pytest.mark.timeout(240)

CHECKPOINT_EVERY = 3


def job_spec(epochs: int, batch: int = 16) -> dict:
    return {
        "topology": {"nodes": 2},
        "algorithm": {"name": "local-sgd", "localSteps": 2},
        "optimizer": {"warmupEpochs": 0, "learningRate": 0.05},
        "training": {
            "model": "mlp",
            "dataset": {"name": "digits"},
            "batchSizePerProcess": batch,
            "epochs": epochs,
            "checkpointEvery": CHECKPOINT_EVERY,
        },
        "runPolicy": {"backoffLimit": 2},
    }


async def test_local_sgd_job_runs_to_success_with_progress(cluster, operator, tmp_path):
    async with Kubelet(cluster, tmp_path) as kubelet:
        await cluster.create_job("digits", job_spec(epochs=15, batch=8))
        # An evaluation (end of epoch 1) scraped from node 0 while the gang trains.
        evaluated = await wait_for(
            lambda: (cluster.status("digits").get("progress") or {}).get("testAccuracy"),
            timeout=90,
            what="progress with a test accuracy in status",
        )
        assert 0 < evaluated <= 1
        await wait_for(
            lambda: cluster.status("digits").get("phase") == "Succeeded",
            timeout=120,
            what="Succeeded",
        )
        assert cluster.phase_history("digits") == ["Pending", "Running", "Succeeded"]
        status = cluster.status("digits")
        assert status["restarts"] == 0
        assert status["workers"]["succeeded"] == 2
        progress = status["progress"]
        assert progress["epoch"] >= 1 and progress["step"] > 0 and progress["trainLoss"] > 0
        assert progress["samplesPerSecond"] > 0
        assert progress["syncRounds"]["global"] > 0 and progress["communicatedBytes"] > 0
        summary = json.loads((kubelet.shared_dir("digits", "output") / "summary.json").read_text())
        assert summary["epochs"] == 15 and summary["world_size"] == 2
        assert summary["final_test_accuracy"] > 0.5
        await wait_for(
            lambda: (
                {"Created", "Running", "AllPodsSucceeded"} <= set(cluster.event_reasons("digits"))
            ),
            what="an event for every transition",
        )


async def test_killed_worker_restarts_the_gang_which_resumes_from_its_checkpoint(
    cluster, operator, tmp_path
):
    epochs = 30
    async with Kubelet(cluster, tmp_path) as kubelet:
        await cluster.create_job("resume", job_spec(epochs))
        checkpoints = kubelet.shared_dir("resume", "checkpoints")
        latest = checkpoints / "latest.json"

        def checkpointed_epoch() -> int:
            return json.loads(latest.read_text())["epoch"] if latest.exists() else 0

        await wait_for(
            lambda: checkpointed_epoch() >= CHECKPOINT_EVERY, timeout=120, what="a first checkpoint"
        )
        finished_before_kill = len(epoch_lines(kubelet.log("resume-node-0", "0")))
        kubelet.kill("resume-node-1", signal.SIGKILL)

        await wait_for(
            lambda: cluster.status("resume").get("restarts") == 1, timeout=30, what="a gang restart"
        )
        restarting = cluster.condition("resume", "Restarting")
        assert restarting["reason"] == "Signal9", restarting
        await wait_for(
            lambda: cluster.status("resume").get("phase") == "Succeeded",
            timeout=150,
            what="Succeeded after the restart",
        )

        status = cluster.status("resume")
        assert status["restarts"] == 1 and status["workers"]["succeeded"] == 2
        resumed = re.search(r"resumed from .* after epoch (\d+)", kubelet.log("resume-node-0", "1"))
        assert resumed, kubelet.log("resume-node-0", "1")
        resumed_after = int(resumed.group(1))
        assert resumed_after >= CHECKPOINT_EVERY
        # Work lost to the crash: epochs finished before the kill minus those resumed.
        repeated = finished_before_kill - resumed_after
        assert 0 <= repeated < CHECKPOINT_EVERY, (finished_before_kill, resumed_after)
        # The second attempt trained only the remaining epochs.
        assert len(epoch_lines(kubelet.log("resume-node-0", "1"))) == epochs - resumed_after
        summary = json.loads((kubelet.shared_dir("resume", "output") / "summary.json").read_text())
        assert summary["epochs"] == epochs
        await wait_for(lambda: "GangRestart" in cluster.event_reasons("resume"), what="event")


def epoch_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.match(r"\[dsgd\] epoch\s+\d+", line)]
