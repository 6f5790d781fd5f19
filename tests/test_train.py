"""The trainer end to end: real torchrun (`python -m dsgd_trainer.launch`), 2 gloo ranks on CPU.

One uninterrupted reference run is shared by the module: its results must be
sane, and a run killed with SIGKILL after a checkpoint and started again must
end bit-identical to it. Then the exit codes the operator relies on (64, 65,
66, 128+SIGTERM) and the Prometheus endpoint of a running pod.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from dsgd_contract.metrics import SCOPES
from dsgd_trainer.schedule import LearningRateSchedule
from prometheus_client.parser import text_string_to_metric_families

from tests._trainer_pods import PLUGIN_MODULE, Pod, Pods, tiny_config
from tests.conftest import pick_free_port

pytestmark = pytest.mark.timeout(180)

EPOCHS, STEPS_PER_EPOCH, LOCAL_STEPS, WORLD_SIZE, BATCH = 4, 8, 3, 2, 32
REQUIRED_SUMMARY_FIELDS = {
    "algorithm",
    "world_size",
    "epochs",
    "steps",
    "samples",
    "final_train_loss",
    "final_test_accuracy",
    "sync_rounds",
    "communicated_bytes",
    "wall_seconds",
}


def resumable_config(workdir: Path, **training: Any) -> dict[str, Any]:
    """Local SGD with ef-sign compression: per-rank momentum and error-feedback memory to resume.

    Checkpoints fall after steps 8, 16, 24: never on an averaging step (every 3), so
    the replicas differ at every checkpoint.
    """
    config = tiny_config(workdir, model=f"{PLUGIN_MODULE}:slow_mlp", **training)
    config["algorithm"]["compression"] = "ef-sign"
    return config


@pytest.fixture
def pods():
    started = Pods()
    yield started
    started.stop_all()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run's working directory."""
    workdir = tmp_path_factory.mktemp("reference")
    started = Pods()
    try:
        pod = started.start(resumable_config(workdir), workdir)
        assert pod.wait() == 0, pod.output
    finally:
        started.stop_all()
    return workdir


def records(workdir: Path) -> list[dict[str, Any]]:
    lines = (workdir / "out" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def latest_epoch(workdir: Path) -> int:
    try:
        return json.loads((workdir / "checkpoints" / "latest.json").read_text())["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def final_state(workdir: Path, rank: int) -> dict[str, Any]:
    path = workdir / "checkpoints" / f"epoch-{EPOCHS:06d}" / f"rank-{rank}.pt"
    return torch.load(path, weights_only=True)


def test_two_rank_run_reports_sane_results(reference: Path) -> None:
    history = records(reference)
    assert [r["epoch"] for r in history] == list(range(1, EPOCHS + 1))
    assert [r["step"] for r in history] == [STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
    for record in history:
        # Local SGD: one global averaging every H steps, nothing within a node.
        assert record["sync_rounds"] == {
            "global": record["step"] // LOCAL_STEPS,
            "intra_node": 0,
            "push": 0,
            "fetch": 0,
        }
        assert record["communicated_bytes"] == sum(record["communicated_bytes_by_scope"].values())
    schedule = LearningRateSchedule.from_config(
        TrainingConfig.model_validate(resumable_config(reference)), WORLD_SIZE, STEPS_PER_EPOCH
    )
    for record in history:  # the lr of each epoch's last step
        assert record["learning_rate"] == pytest.approx(schedule(record["step"] - 1))
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.5  # ten balanced classes: chance is 0.1

    summary = json.loads((reference / "out" / "summary.json").read_text())
    assert summary.keys() >= REQUIRED_SUMMARY_FIELDS
    total_steps = EPOCHS * STEPS_PER_EPOCH
    assert summary["algorithm"] == "local-sgd"
    assert (summary["world_size"], summary["epochs"], summary["steps"]) == (2, EPOCHS, total_steps)
    assert summary["samples"] == total_steps * WORLD_SIZE * BATCH
    assert summary["final_train_loss"] == history[-1]["train_loss"]
    assert summary["final_test_accuracy"] == history[-1]["test_accuracy"]
    assert summary["sync_rounds"] == {
        "global": total_steps // LOCAL_STEPS,
        "intra_node": 0,
        "push": 0,
        "fetch": 0,
    }
    # communicated_bytes are rank 0's, as its algorithm counted them.
    rank0_counters = final_state(reference, 0)["algorithm"]["counters"]
    assert summary["communicated_bytes"] == sum(rank0_counters["bytes"].values()) > 0
    assert summary["wall_seconds"] > 0

    # Only the last two checkpoints stay, and latest.json points at the newest.
    checkpoints = reference / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("epoch-*")) == ["epoch-000003", "epoch-000004"]
    assert sorted(p.name for p in (checkpoints / "epoch-000004").iterdir()) == [
        "rank-0.pt",
        "rank-1.pt",
    ]
    assert latest_epoch(reference) == EPOCHS


def test_eval_every_steps_evaluates_on_that_cadence_and_keeps_eval_out_of_training_time(
    tmp_path: Path, pods: Pods
) -> None:
    """evalEvery 3 over 2 epochs of 8 steps: steps 3, 6, …, 15, and the last step 16."""
    config = tiny_config(tmp_path, epochs=2, evalEvery=3)
    config["algorithm"] = {"name": "local-sgd", "localSteps": 4, "compression": "sign"}
    pod = pods.start(config, tmp_path)
    assert pod.wait() == 0, pod.output
    history = records(tmp_path)
    assert [r["step"] for r in history] == [3, 6, 9, 12, 15, 16]
    assert [r["epoch"] for r in history] == [3 / 8, 6 / 8, 9 / 8, 12 / 8, 15 / 8, 2]
    for record in history:
        assert record["sync_rounds"]["global"] == record["step"] // 4
        # Mean over ranks of ‖x_k − x̄‖/‖x̄‖ at the last global sync; none before the first.
        if record["step"] < 4:
            assert record["consensus_distance"] is None
        else:
            assert 0 < record["consensus_distance"] < 1
    # Training time excludes evaluation: the windows add up to the cumulative figure.
    assert sum(r["epoch_seconds"] for r in history) == pytest.approx(history[-1]["train_seconds"])
    assert history[-1]["wall_seconds"] > history[-1]["train_seconds"] + sum(
        r["eval_seconds"] for r in history
    )
    # 2 ranks: a ring all-reduce sends exactly its payload (2·(K−1)/K = 1).
    assert all(r["payload_bytes"] == r["communicated_bytes"] for r in history)


def test_run_killed_after_a_checkpoint_resumes_bit_identically(
    reference: Path, tmp_path: Path, pods: Pods
) -> None:
    config = resumable_config(tmp_path)
    first = pods.start(config, tmp_path, name="first")
    first.wait_until(lambda: latest_epoch(tmp_path) >= 1, "the checkpoint of epoch 1")
    first.kill_all(signal.SIGKILL)  # the whole pod at once, like a node failure
    assert first.wait() == -signal.SIGKILL
    killed_at = latest_epoch(tmp_path)
    assert 1 <= killed_at < EPOCHS, "the run must really be interrupted"
    assert not (tmp_path / "out" / "summary.json").exists()

    second = pods.start(config, tmp_path, name="second")
    assert second.wait() == 0, second.output
    assert f"after epoch {killed_at} (step {killed_at * STEPS_PER_EPOCH})" in second.output

    for rank in range(WORLD_SIZE):
        resumed, uninterrupted = final_state(tmp_path, rank), final_state(reference, rank)
        for name, tensor in uninterrupted["model"].items():
            assert torch.equal(resumed["model"][name], tensor), f"rank {rank}: {name} differs"
        momentum = [s["momentum_buffer"] for s in uninterrupted["optimizer"]["state"].values()]
        resumed_momentum = [s["momentum_buffer"] for s in resumed["optimizer"]["state"].values()]
        assert all(map(torch.equal, resumed_momentum, momentum))
    # The same history, each epoch once, whichever attempt wrote it.
    keys = ("epoch", "step", "train_loss", "test_accuracy", "sync_rounds", "communicated_bytes")
    assert [{k: r[k] for k in keys} for r in records(tmp_path)] == [
        {k: r[k] for k in keys} for r in records(reference)
    ]


def test_invalid_config_exits_64_with_a_line_per_field(tmp_path: Path, pods: Pods) -> None:
    config = tiny_config(tmp_path)
    config["optimizer"]["learningRate"] = 1000
    config["training"]["epochs"] = 0
    pod = pods.start(config, tmp_path)
    assert pod.wait() == exit_codes.INVALID_CONFIG, pod.output
    lines = pod.output.splitlines()
    for field in ("optimizer.learningRate", "training.epochs"):
        # One line per field, printed once per pod (by local rank 0), no traceback.
        assert len([line for line in lines if f": {field}: " in line]) == 1, pod.output
    assert "Traceback" not in pod.output


def test_missing_dataset_exits_65(tmp_path: Path, pods: Pods) -> None:
    config = tiny_config(tmp_path)
    config["training"]["dataset"] = {"name": "mnist", "path": str(tmp_path / "no-such-dir")}
    pod = pods.start(config, tmp_path)
    assert pod.wait() == exit_codes.DATA_ERROR, pod.output
    assert "data error" in pod.output
    assert "no-such-dir" in pod.output


def test_non_finite_loss_stops_every_rank_with_66(tmp_path: Path, pods: Pods) -> None:
    config = tiny_config(tmp_path, model=f"{PLUGIN_MODULE}:exploding_mlp")
    pod = pods.start(config, tmp_path)
    assert pod.wait() == exit_codes.DIVERGED, pod.output
    assert pod.output.count("training diverged") == 1, pod.output
    assert "in epoch 1" in pod.output
    assert not (tmp_path / "out" / "summary.json").exists()
    assert not (tmp_path / "out" / "metrics.jsonl").exists()


def test_a_full_checkpoint_volume_exits_74_with_one_line_and_no_temporary_file(
    tmp_path: Path, pods: Pods
) -> None:
    """Rank 1's first checkpoint file meets ENOSPC (/dev/full, the kernel's own error): the pod
    ends with DISK_FULL, which the operator does not retry, and one line naming the field."""
    config = tiny_config(tmp_path)
    temporary = tmp_path / "checkpoints" / "epoch-000001" / ".rank-1.pt.tmp"
    temporary.parent.mkdir(parents=True)
    temporary.symlink_to("/dev/full")
    pod = pods.start(config, tmp_path)
    assert pod.wait() == exit_codes.DISK_FULL, pod.output
    full = [line for line in pod.output.splitlines() if " is full: " in line]
    assert full == [
        f"error: training.checkpointDir {tmp_path / 'checkpoints'} is full: No space left on "
        f"device (writing {temporary}); make room or mount a larger volume there, then the "
        "job can be run again"
    ], pod.output
    assert "Traceback" not in pod.output
    assert not temporary.is_symlink() and not (temporary.parent / "rank-1.pt").exists()
    assert not exit_codes.is_retryable(exit_codes.DISK_FULL)


def test_a_full_output_volume_stops_the_gang_with_74_and_one_line(tmp_path: Path, pods: Pods):
    """Rank 0 appends metrics.jsonl; when that fails with ENOSPC the other rank learns it at
    once (no vanished-peer traceback at the next collective) and both end with 74. Only
    local rank 0 speaks for a pod: here the failing rank itself, so one line."""
    config = tiny_config(tmp_path)
    metrics_file = tmp_path / "out" / "metrics.jsonl"
    metrics_file.parent.mkdir()
    metrics_file.symlink_to("/dev/full")
    pod = pods.start(config, tmp_path)
    assert pod.wait() == exit_codes.DISK_FULL, pod.output
    full = [line for line in pod.output.splitlines() if " is full" in line]
    assert full == [
        f"error: training.outputDir {tmp_path / 'out'} is full: No space left on device "
        f"(writing {metrics_file}); make room or mount a larger volume there, then the job "
        "can be run again"
    ], pod.output
    assert "Traceback" not in pod.output


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def step_counts(text: str) -> dict[str, float]:
    """dsgd_steps_total by rank label."""
    return {
        sample.labels["rank"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "dsgd_steps_total"
    }


def test_metrics_endpoint_serves_every_rank_then_sigterm_stops_cleanly(
    tmp_path: Path, pods: Pods
) -> None:
    port = pick_free_port()
    config = tiny_config(tmp_path, model=f"{PLUGIN_MODULE}:slow_mlp", epochs=100)
    pod = pods.start(config, tmp_path, metrics_port=port)
    text = pod.wait_until(
        lambda: (
            (page := scrape(port)) and all(step_counts(page).get(r, 0) > 0 for r in "01") and page
        ),
        "dsgd_steps_total of both ranks on the metrics endpoint",
    )
    families = list(text_string_to_metric_families(text))
    names = {family.name for family in families}
    for name in ("dsgd_train_loss", "dsgd_epoch", "dsgd_learning_rate", "dsgd_samples_per_second"):
        assert name in names, text
    for family in families:
        for sample in family.samples:
            if sample.name.startswith("dsgd_"):
                assert sample.labels.get("rank") in {"0", "1"}, sample
            if family.name in ("dsgd_sync_rounds", "dsgd_communicated_bytes"):
                assert sample.labels["scope"] in SCOPES, sample
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), (
        lint.stdout + lint.stderr
    )

    # Kubernetes' stop: SIGTERM to the container's main process, the launcher.
    pod.wait_until(lambda: latest_epoch(tmp_path) >= 1, "a first checkpoint")
    pod.process.send_signal(signal.SIGTERM)
    assert pod.wait(30) == 128 + signal.SIGTERM, pod.output
    assert "received SIGTERM" in pod.output
    kept = latest_epoch(tmp_path)
    assert kept >= 1
    for rank in range(WORLD_SIZE):
        state = torch.load(
            tmp_path / "checkpoints" / f"epoch-{kept:06d}" / f"rank-{rank}.pt", weights_only=True
        )
        assert state["epoch"] == kept
    assert not (tmp_path / "out" / "summary.json").exists()


def worker_of_rank(pod: Pod, rank: int) -> int:
    """The PID of the trainer process torchrun started as global rank `rank`."""
    for pid in pod.processes()[1:]:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            f"RANK={rank}".encode() in environ
            and b"DSGD_CONFIG=" + pod.env["DSGD_CONFIG"].encode() in environ
        ):
            return pid
    raise AssertionError(f"no worker of rank {rank} under the pod:\n{pod.output}")


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": "mini-batch-sgd"},  # the ballot rides on DDP's gradient all-reduce
        {"name": "local-sgd", "localSteps": 3},  # on the global averaging
    ],
    ids=["mini-batch", "local-sgd"],
)
def test_a_sigterm_reaching_one_rank_stops_every_rank_at_the_same_step(
    tmp_path: Path, pods: Pods, algorithm: dict[str, Any]
) -> None:
    """Agreed stopping (dsgd_trainer.stop_vote): no rank is left inside a collective.

    Only rank 1 is signalled (as when pods get SIGTERM at different moments). Alone,
    it would leave rank 0 blocked in the next collective (with NCCL until a timeout;
    with gloo a connection error and a traceback). Agreed, both leave at one step.
    """
    config = tiny_config(tmp_path, model=f"{PLUGIN_MODULE}:slow_mlp", epochs=100)
    config["algorithm"] = algorithm
    pod = pods.start(config, tmp_path)
    pod.wait_until(lambda: latest_epoch(tmp_path) >= 1, "a first checkpoint")
    os.kill(worker_of_rank(pod, 1), signal.SIGTERM)
    assert pod.wait(60) == 128 + signal.SIGTERM, pod.output
    output = pod.output
    assert "Traceback" not in output, output
    steps = {
        int(match.group(1)): int(match.group(2))
        for match in re.finditer(
            r"rank (\d): stopped before step (\d+), as every rank agreed", output
        )
    }
    assert set(steps) == {0, 1}, output
    assert steps[0] == steps[1], output
    assert steps[0] >= STEPS_PER_EPOCH  # after the first checkpoint, so mid-run
    assert latest_epoch(tmp_path) >= 1
    assert not (tmp_path / "out" / "summary.json").exists()


def test_rank_zero_leaves_its_results_as_the_termination_message(reference: Path) -> None:
    """What the operator reads from the finished pod (dsgd_contract.run_results) equals
    summary.json and metrics.jsonl, within the message's 6 significant digits."""
    from dsgd_contract.run_results import MAX_MESSAGE_BYTES, decode_results

    message = (reference / "pod-termination-log").read_bytes()
    assert 0 < len(message) <= MAX_MESSAGE_BYTES
    results = decode_results(message.decode())
    assert results is not None
    summary = json.loads((reference / "out" / "summary.json").read_text())
    for key, value in results.summary().items():
        expected = summary[key]
        assert value == (
            pytest.approx(expected, rel=1e-5) if isinstance(value, float) else expected
        )
    history = records(reference)
    assert results.evaluations == len(history) == len(results.curve)
    for point, record in zip(results.curve, history, strict=True):
        for key, value in point.model_dump().items():
            assert value == pytest.approx(record[key], rel=1e-5), key
