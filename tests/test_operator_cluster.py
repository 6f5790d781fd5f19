"""The operator end to end on the real control plane: API server, scheduler,
controller manager (garbage collector, PV binder) and the node agent, which
runs every pod as a real process (torchrun, gloo, the trainer).

The operator runs as `dsgd operator` (tests/_operator_process.py) with the
admin kubeconfig; the oracles are the API server's objects, the real kubectl,
the garbage collector and the trainers' own logs and checkpoints.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests._operator_process import operator as operator
from tests._polling import wait_until
from tests._sgdjobs import CHECKPOINT_EVERY, Jobs, job_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_job_runs_to_success_with_progress_and_kubectl_wait(kube_api, kubectl, namespace, operator):
    jobs = Jobs(kube_api, namespace)
    # Long enough (about 20 s of training on an idle machine) for several 2 s scrapes
    # once the trainer's metrics endpoint is up: a 5 s run can end before the first.
    jobs.create("digits", job_spec(epochs=50, batch=8))
    jobs.wait_phase("digits", "Running", 120)
    # Node 0's metrics, scraped by the operator while the gang trains.
    progress = wait_until(
        lambda: (jobs.status("digits").get("progress") or {}).get("step"), 120, "progress"
    )
    assert progress > 0
    waited = kubectl(
        "wait",
        f"--namespace={namespace}",
        "--for=condition=Succeeded",
        "--timeout=240s",
        "distributedsgdjob/digits",
        timeout=260,
    )
    assert "condition met" in waited.stdout
    status = jobs.status("digits")
    assert status["phase"] == "Succeeded" and status["restarts"] == 0
    assert status["workers"]["succeeded"] == 2
    progress = status["progress"]
    assert progress["epoch"] >= 1 and progress["trainLoss"] > 0
    assert progress["samplesPerSecond"] > 0 and progress["communicatedBytes"] > 0
    wait_until(
        lambda: {"Created", "Running", "AllPodsSucceeded"} <= set(jobs.event_reasons("digits")),
        30,
        "an event for every transition",
    )


@pytest.fixture
def checkpoint_claim(kube_api, namespace: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A hostPath PersistentVolume and a claim that selects it, bound by the PV controller:
    (claim name, the volume's directory). The PV (cluster-scoped) is deleted afterwards."""
    core = client.CoreV1Api(kube_api)
    directory = tmp_path / "pv"
    core.create_persistent_volume(
        {
            "metadata": {"name": f"pv-{namespace}", "labels": {"test-namespace": namespace}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "checkpoints"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "resources": {"requests": {"storage": "1Gi"}},
                "selector": {"matchLabels": {"test-namespace": namespace}},
            },
        },
    )
    wait_until(
        lambda: (
            core.read_namespaced_persistent_volume_claim("checkpoints", namespace).status.phase
            == "Bound"
        ),
        60,
        "the claim bound by the PV controller",
    )
    try:
        yield "checkpoints", directory
    finally:
        core.delete_persistent_volume(f"pv-{namespace}")


def _pod_logs(cluster, namespace: str, pod: str) -> list[str]:
    """Every container log of pods named `pod` (one per attempt: the uid differs)."""
    logs = sorted((cluster.root / "pods" / namespace).glob(f"{pod}-*/container.log"))
    return [log.read_text(errors="replace") for log in logs]


def _epoch_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.match(r"\[dsgd\] epoch\s+\d+", line)]


def checkpointed_job_spec(claim: str, epochs: int) -> dict:
    """A tiny job whose checkpoints go to the claim, mounted at /checkpoints."""
    return job_spec(
        epochs=epochs,
        training={"checkpointDir": "/checkpoints"},
        template={
            "volumes": [{"name": "ckpt", "persistentVolumeClaim": {"claimName": claim}}],
            "volumeMounts": [{"name": "ckpt", "mountPath": "/checkpoints"}],
        },
    )


def checkpointed_epoch(volume: Path) -> int:
    """The epoch latest.json on the volume points at (0 before the first checkpoint)."""
    try:
        return json.loads((volume / "latest.json").read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def test_killed_worker_restarts_the_gang_once_which_resumes_from_its_checkpoint(
    cluster, kube_api, namespace, operator, checkpoint_claim
):
    epochs = 24
    claim, volume = checkpoint_claim
    jobs = Jobs(kube_api, namespace)
    jobs.create("resume", checkpointed_job_spec(claim, epochs))
    wait_until(lambda: checkpointed_epoch(volume) >= CHECKPOINT_EVERY, 180, "a first checkpoint")
    pids = jobs.running_pids("resume")
    assert "resume-node-1" in pids, pids
    os.kill(pids["resume-node-1"], signal.SIGKILL)

    wait_until(lambda: jobs.status("resume").get("restarts") == 1, 60, "a gang restart")
    restarting = jobs.condition("resume", "Restarting")
    assert restarting["reason"] == "Signal9", restarting
    status = jobs.wait_phase("resume", "Succeeded", 300)
    assert status["restarts"] == 1 and status["workers"]["succeeded"] == 2
    assert jobs.event_reasons("resume").count("GangRestart") == 1

    logs = _pod_logs(cluster, namespace, "resume-node-0")
    assert len(logs) == 2, "one log per attempt of node 0"
    resumed = [re.search(r"resumed from .* after epoch (\d+)", log) for log in logs]
    second = next(i for i, found in enumerate(resumed) if found)
    resumed_after = int(resumed[second].group(1))
    assert resumed_after >= CHECKPOINT_EVERY
    first = logs[1 - second]
    # Work lost to the crash: epochs finished before the kill minus those resumed.
    assert 0 <= len(_epoch_lines(first)) - resumed_after < 2 * CHECKPOINT_EVERY
    # The second attempt trained only the remaining epochs.
    assert len(_epoch_lines(logs[second])) == epochs - resumed_after


def test_resuming_from_an_older_checkpoint_is_a_warning_event(
    kube_api, namespace, operator, checkpoint_claim
):
    """The newest checkpoint is corrupted while the job is suspended (no pod can write):
    the resumed gang falls back to the previous one, node 0's metrics count the skip, and
    the operator turns it into a CheckpointFallback Warning Event and status progress."""
    claim, volume = checkpoint_claim
    jobs = Jobs(kube_api, namespace)
    jobs.create("fallback", checkpointed_job_spec(claim, 60))

    def suspend(value: bool) -> None:
        jobs.patch("fallback", {"spec": {"runPolicy": {"suspend": value}}})

    # Two checkpoints kept: one to corrupt, one to fall back to.
    wait_until(lambda: checkpointed_epoch(volume) >= 2 * CHECKPOINT_EVERY, 180, "two checkpoints")
    suspend(True)
    wait_until(lambda: not jobs.pods("fallback"), 120, "the suspended job's pods gone")
    newest = json.loads((volume / "latest.json").read_text())["checkpoint"]
    rank_files = sorted((volume / newest).glob("rank-*.pt"))
    assert len(rank_files) == 2, rank_files
    rank_files[1].write_bytes(b"not a checkpoint")  # rank 1's half of the newest one
    suspend(False)

    wait_until(
        lambda: "CheckpointFallback" in jobs.event_reasons("fallback"),
        180,
        "a CheckpointFallback event",
    )
    (event,) = [e for e in jobs.events("fallback") if e.reason == "CheckpointFallback"]
    assert event.type == "Warning"
    assert event.message.startswith("gang attempt"), event.message
    assert "older checkpoint" in event.message
    assert jobs.status("fallback")["progress"]["checkpointsSkipped"] == 1
    assert jobs.wait_phase("fallback", "Succeeded", 300)["phase"] == "Succeeded"


def test_operator_killed_while_creating_the_gang_leaves_no_duplicate(kube_api, namespace, operator):
    """The operator is SIGKILLed as soon as the first pod exists; the restarted one
    adopts what is there: the same pods (same uids), no second attempt."""
    jobs = Jobs(kube_api, namespace)
    operator.stop()
    jobs.create("adopt", job_spec(epochs=1, nodes=4))
    operator.start()
    wait_until(lambda: jobs.pods("adopt"), 60, "the first pod", poll=0.01)
    operator.kill()
    seen = {pod.metadata.name: pod.metadata.uid for pod in jobs.pods("adopt")}
    assert seen, "pods were created before the kill"
    operator.start()
    status = jobs.wait_phase("adopt", "Succeeded", 300)
    assert status["restarts"] == 0 and status["workers"]["succeeded"] == 4
    pods = {pod.metadata.name: pod.metadata.uid for pod in jobs.pods("adopt")}
    assert sorted(pods) == [f"adopt-node-{rank}" for rank in range(4)]
    assert seen.items() <= pods.items(), "pods made before the kill were kept, not recreated"
    assert jobs.event_reasons("adopt").count("Created") <= 1


def test_job_deleted_without_operator_is_garbage_collected_without_hanging(
    kube_api, kubectl, namespace, operator
):
    jobs = Jobs(kube_api, namespace)
    jobs.create("orphan", job_spec(epochs=50))
    jobs.wait_phase("orphan", "Running", 120)
    assert not jobs.get("orphan")["metadata"].get("finalizers"), "no finalizer to block deletion"
    operator.stop()
    kubectl("delete", f"--namespace={namespace}", "distributedsgdjob/orphan", "--timeout=60s")
    assert jobs.get("orphan") is None
    core = client.CoreV1Api(kube_api)

    def children_left() -> list[str]:
        left = [pod.metadata.name for pod in jobs.pods("orphan")]
        left += [s.metadata.name for s in core.list_namespaced_service(namespace).items]
        left += [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
        return [name for name in left if name.startswith("orphan")]

    wait_until(lambda: not children_left(), 120, "the garbage collector to delete the children")
