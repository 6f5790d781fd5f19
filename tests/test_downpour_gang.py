"""Downpour SGD end to end through `dsgd run`: parameter-server and worker processes together.

- 2 servers × 4 workers on digits: no deadlock, every member exits 0, accuracy
  within 2 points of mini-batch SGD at equal samples, staleness > 0 and within
  its structural bound, bytes = pushes/fetches × the shards' sizes.
- A server SIGKILLed mid-run: the gang stops, `dsgd run` again resumes it from the
  servers' and workers' checkpoint, and the servers end with exactly the updates
  of an uninterrupted run: none applied twice, none lost.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.test_local_run import processes_of_run, start_dsgd_run, write_job

pytestmark = pytest.mark.slow

DIGITS_TRAIN = 1437  # digits' training split (dsgd_trainer.data)
BATCH = 32


def job_document(name: str, algorithm: dict, topology: dict, epochs: int) -> dict:
    downpour = algorithm["name"] == "downpour-sgd"
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name},
        "spec": {
            "topology": topology,
            "algorithm": algorithm,
            "optimizer": {
                # Downpour: plain SGD steps on the replicas, Adagrad on the servers (Dean et
                # al.); mini-batch: the recipe's momentum SGD at the batch its lr was set for.
                "learningRate": 0.02 if downpour else 0.1,
                "baseBatchSize": 128,
                "scaling": "none" if downpour else "linear",
                "momentum": 0 if downpour else 0.9,
                "nesterov": not downpour,
                "warmupEpochs": 0,
                "milestones": [],
                "weightDecay": 0,
            },
            "training": {
                "model": "mlp",
                "dataset": {"name": "digits"},
                "batchSizePerProcess": BATCH,
                "epochs": epochs,
                "seed": 1,
            },
        },
    }


def run(tmp_path: Path, document: dict, out: Path, timeout: float = 400) -> str:
    proc = start_dsgd_run(write_job(tmp_path, document), out)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in processes_of_run(out):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    return output


def servers_of(out: Path, count: int) -> list[dict]:
    return [json.loads((out / f"parameter-server-{i}.json").read_text()) for i in range(count)]


def test_two_servers_four_workers_train_digits_like_mini_batch_sgd(tmp_path: Path) -> None:
    epochs, workers = 4, 4
    downpour = {"name": "downpour-sgd", "fetchSteps": 1, "pushSteps": 1}
    dp_out, mb_out = tmp_path / "downpour", tmp_path / "mini-batch"
    run(
        tmp_path,
        job_document(
            "dp", downpour, {"nodes": 2, "processesPerNode": 2, "parameterServers": 2}, epochs
        ),
        dp_out,
    )
    run(
        tmp_path,
        job_document("mb", {"name": "mini-batch-sgd"}, {"nodes": 2, "processesPerNode": 2}, epochs),
        mb_out,
    )
    dp, mb = (json.loads((out / "summary.json").read_text()) for out in (dp_out, mb_out))
    assert set(dp) == set(mb)  # the same keys as every algorithm
    assert dp["samples"] == mb["samples"]
    assert abs(dp["final_test_accuracy"] - mb["final_test_accuracy"]) <= 0.02, (dp, mb)

    steps_per_epoch = DIGITS_TRAIN // (workers * BATCH)
    steps = epochs * steps_per_epoch
    assert dp["steps"] == steps
    servers = servers_of(dp_out, 2)
    numel = sum(s["numel"] for s in servers)
    for server in servers:
        # Every worker's every push reached every shard, once.
        assert server["version"] == workers * steps
        # Training fetches by all workers, plus rank 0's whole-model fetch per evaluation.
        assert server["fetches"] == workers * steps + epochs
        staleness = server["staleness"]
        assert staleness["count"] == workers * steps
        assert staleness["max"] > 0
        # The ranks meet (and wait for their pushes) at every evaluation: between two, the
        # other 3 workers can apply at most their pushes of one evaluation interval.
        assert staleness["max"] <= (workers - 1) * steps_per_epoch
    # Rank 0's rounds and bytes: one push and one fetch per step, each the whole model.
    assert dp["sync_rounds"] == {"global": 0, "intra_node": 0, "push": steps, "fetch": steps}
    assert dp["communicated_bytes_by_scope"]["push"] == steps * numel * 4
    assert dp["communicated_bytes_by_scope"]["fetch"] == steps * numel * 4
    assert dp["communicated_bytes"] == 2 * steps * numel * 4


def server_pid(out: Path, index: int) -> int | None:
    marker = f"DSGD_PS_INDEX={index}".encode()
    for pid in processes_of_run(out):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker in environ and b"dsgd_trainer.parameter_server" in argv:
            return pid
    return None


def test_a_killed_server_restarts_the_gang_from_the_checkpoint_without_double_updates(
    tmp_path: Path,
) -> None:
    epochs, workers = 4, 2
    document = job_document(
        "dpkill",
        {"name": "downpour-sgd", "fetchSteps": 2, "pushSteps": 1},
        {"nodes": 1, "processesPerNode": workers, "parameterServers": 2},
        epochs,
    )
    out = tmp_path / "out"
    proc = start_dsgd_run(write_job(tmp_path, document), out)
    checkpoint = out / "checkpoints" / "latest.json"
    try:
        deadline = time.monotonic() + 300
        while not (checkpoint.exists() and json.loads(checkpoint.read_text())["epoch"] >= 2):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no checkpoint after epoch 2"
            time.sleep(0.05)
        pid = server_pid(out, 0)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 137, output  # the server's SIGKILL, as a pod reports it
    latest = json.loads(checkpoint.read_text())
    assert latest["epoch"] < epochs, "the run ended before the kill: nothing was tested"
    assert not processes_of_run(out)

    # The gang again (what the operator does after a failure): it resumes.
    output = run(tmp_path, document, out)
    steps_per_epoch = DIGITS_TRAIN // (workers * BATCH)
    restored = latest["step"]
    for server in servers_of(out, 2):
        assert server["restored_from_step"] == restored
        # Exactly an uninterrupted run's updates: none applied twice, none lost. The
        # updates applied between the checkpoint and the kill were discarded with the
        # killed gang and computed again (at most one checkpoint interval's worth).
        assert server["version"] == workers * epochs * steps_per_epoch
        assert server["applied_by_this_process"] == workers * (epochs * steps_per_epoch - restored)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == epochs * steps_per_epoch
    assert summary["final_test_accuracy"] > 0.8
    assert f"resumed from {out / 'checkpoints'}" in output
