"""`dsgd run`: the builder's pods as local processes, for real (torchrun, gloo, the trainer)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders import build_pods
from dsgd_operator.local_gpus import count_usable_gpus
from dsgd_operator.local_run import (
    LocalRunError,
    check_local_gpus,
    fixed_metrics_ports,
    local_config,
    plan_local_processes,
    prepare_run_directory,
)
from dsgd_operator.manifest import parse_job


def job_document(name: str = "tiny", **training: object) -> dict:
    return {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "DistributedSGDJob",
        "metadata": {"name": name},
        "spec": {
            "topology": {"nodes": 2, "processesPerNode": 1},
            "algorithm": {"name": "local-sgd", "localSteps": 2},
            "optimizer": {"learningRate": 0.05, "baseBatchSize": 32, "warmupEpochs": 0},
            "training": {
                "model": "mlp",
                "dataset": {"name": "synthetic", "trainSamples": 512, "testSamples": 128},
                "batchSizePerProcess": 32,
                "epochs": 2,
                **training,
            },
        },
    }


def write_job(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def processes_of_run(out_dir: Path) -> list[int]:
    """PIDs of live processes whose environment points at this run's config."""
    marker = f"DSGD_CONFIG={out_dir.resolve()}/config.json".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return pids


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_dsgd_run(
    job_file: Path, out_dir: Path, sigint_ignored: bool = False
) -> subprocess.Popen[str]:
    """`dsgd run` as a subprocess; `sigint_ignored` starts it as a shell starts `cmd &`."""
    return subprocess.Popen(
        [sys.executable, "-m", "dsgd_operator.cli", "run", str(job_file), "--out", str(out_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_ignore_sigint if sigint_ignored else None,
    )


def test_plan_rewrites_only_what_is_cluster_specific(tmp_path: Path) -> None:
    job = parse_job(job_document())
    base_env = {"PATH": "/usr/bin", "HOME": "/home/user"}
    plan = plan_local_processes(
        job, tmp_path, tmp_path / "config.json", tmp_path / "m", 40000, [41000, 41001], base_env, 2
    )
    pods = build_pods(job)
    assert [p.node_rank for p in plan] == [0, 1]
    for process, pod in zip(plan, pods, strict=True):
        container = pod["spec"]["containers"][0]
        expected_argv = [*container["command"], *container["args"]]
        assert process.argv == [sys.executable if a == "python" else a for a in expected_argv]
        pod_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        # Kept from the pod as they are:
        for name in ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "DSGD_JOB_NAME"):
            assert process.env[name] == pod_env[name]
        # Rewritten for one machine:
        assert process.env["PET_MASTER_ADDR"] == "127.0.0.1"
        assert process.env["PET_MASTER_PORT"] == "40000"
        assert process.env["DSGD_CONFIG"] == str(tmp_path / "config.json")
        assert process.env["DSGD_METRICS_PORT"] == str(41000 + process.node_rank)
        assert process.env["PROMETHEUS_MULTIPROC_DIR"] == str(
            tmp_path / "m" / f"node-{process.node_rank}"
        )
        assert process.env["OMP_NUM_THREADS"] == "1"  # 2 cores shared by 2 ranks
        assert process.env["HOME"] == "/home/user"
        assert "CUDA_VISIBLE_DEVICES" not in process.env


def gpu_job(nodes: int = 2, per_node: int = 2) -> DistributedSGDJob:
    document = job_document()
    document["spec"]["topology"] = {"nodes": nodes, "processesPerNode": per_node, "gpu": True}
    return parse_job(document)


def test_plan_gives_each_gpu_node_its_own_devices(tmp_path: Path) -> None:
    plan = plan_local_processes(
        gpu_job(), tmp_path, tmp_path / "c.json", tmp_path, 1, [2, 3], {}, 16
    )
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plan] == ["0,1", "2,3"]
    assert [p.env["OMP_NUM_THREADS"] for p in plan] == ["4", "4"]


def test_plan_slices_an_inherited_cuda_visible_devices_per_node(tmp_path: Path) -> None:
    # Node i gets entries i·P … i·P + P − 1 of the shell's list, never the whole list twice.
    inherited = {"CUDA_VISIBLE_DEVICES": "3, 5,GPU-8f3a,MIG-1c2d,7"}
    plan = plan_local_processes(
        gpu_job(), tmp_path, tmp_path / "c.json", tmp_path, 1, [2, 3], inherited, 16
    )
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plan] == ["3,5", "GPU-8f3a,MIG-1c2d"]


def test_plan_keeps_the_shells_nccl_settings_over_the_installation_defaults(tmp_path: Path) -> None:
    def nccl_debug(base_env: dict[str, str]) -> list[str]:
        plan = plan_local_processes(
            gpu_job(), tmp_path, tmp_path / "c.json", tmp_path, 1, [2, 3], base_env, 16
        )
        return [p.env["NCCL_DEBUG"] for p in plan]

    assert nccl_debug({}) == ["WARN", "WARN"]
    assert nccl_debug({"NCCL_DEBUG": "INFO"}) == ["INFO", "INFO"]


@pytest.mark.parametrize("inherited", ["0,1,2", ""])
def test_plan_refuses_an_inherited_list_too_short_in_one_line(
    tmp_path: Path, inherited: str
) -> None:
    with pytest.raises(LocalRunError) as refused:
        plan_local_processes(
            gpu_job(),
            tmp_path,
            tmp_path / "c.json",
            tmp_path,
            1,
            [2, 3],
            {"CUDA_VISIBLE_DEVICES": inherited},
            16,
        )
    message = str(refused.value)
    assert "\n" not in message
    assert "needs 4 GPU(s)" in message and f"CUDA_VISIBLE_DEVICES={inherited} lists" in message


def test_run_of_a_gpu_job_without_gpus_fails_at_once_naming_needed_and_present(
    tmp_path: Path,
) -> None:
    """The pre-flight: one line, no process started, in seconds (8 × 2 = 16 GPUs asked)."""
    document = job_document()
    document["spec"]["topology"] = {"nodes": 8, "processesPerNode": 2, "gpu": True}
    out = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    if count_usable_gpus(env) >= 16:
        pytest.skip("this machine has 16 GPUs: the pre-flight has nothing to refuse")
    started = time.monotonic()
    job_file = write_job(tmp_path, document)
    result = subprocess.run(
        [sys.executable, "-m", "dsgd_operator.cli", "run", str(job_file), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "needs 16 GPU(s) (8 node(s) × 2 process(es)" in lines[0]
    assert f"this machine has {count_usable_gpus(env)} usable" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not out.exists()  # refused before the run directory, before any process
    # An interpreter start plus (without an NVIDIA driver) one torch import, not 16 ranks.
    assert elapsed < 30, elapsed


def test_preflight_counts_what_cuda_visible_devices_leaves(tmp_path: Path) -> None:
    # An empty CUDA_VISIBLE_DEVICES hides every GPU, whatever the machine has.
    with pytest.raises(LocalRunError, match="needs 1 GPU"):
        check_local_gpus(gpu_job(1, 1), {**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert count_usable_gpus({**os.environ, "CUDA_VISIBLE_DEVICES": ""}) == 0
    check_local_gpus(parse_job(job_document()), {"CUDA_VISIBLE_DEVICES": ""})  # CPU job: no check


def test_local_config_points_outputs_into_the_run_directory(tmp_path: Path) -> None:
    config = local_config(parse_job(job_document()), tmp_path)
    assert config["training"]["checkpointDir"] == str(tmp_path / "checkpoints")
    assert config["training"]["outputDir"] == str(tmp_path)
    assert config["algorithm"]["localSteps"] == 2


@pytest.mark.slow
def test_run_trains_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = start_dsgd_run(write_job(tmp_path, job_document()), out)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output
    assert "[node-0] [dsgd] epoch 2/2" in output  # rank 0's log, prefixed by its node
    # stdout is a pipe: progress comes as plain lines, never a squeezed bar.
    assert "━" not in output
    assert all(
        # Figures appear once known: the first reading may come before the first loss.
        re.fullmatch(r"progress: epoch \d+\.\d\d/2  step \d+(  loss .*samples/s/rank)?", line)
        for line in output.splitlines()
        if line.startswith("progress")
    ), output
    assert re.search(r"^Prometheus metrics: node-0: \S+, node-1: \S+$", output, re.M), output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithm"] == "local-sgd"
    assert summary["world_size"] == 2
    assert summary["epochs"] == 2
    # 512 samples over 2 ranks in batches of 32: 8 steps per epoch, 16 in all; H=2.
    assert summary["steps"] == 16
    assert summary["sync_rounds"]["global"] == 16 // 2
    assert summary["final_test_accuracy"] > 0.2  # 10 classes: chance is 0.1
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)
    assert (out / "config.json").exists()
    assert not processes_of_run(out)


@pytest.mark.slow
def test_a_failed_worker_stops_the_gang_with_its_exit_code(tmp_path: Path) -> None:
    document = job_document(dataset={"name": "fashion-mnist", "path": str(tmp_path / "nowhere")})
    out = tmp_path / "out"
    proc = start_dsgd_run(write_job(tmp_path, document), out)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 65, output  # dsgd_contract.exit_codes.DATA_ERROR
    assert str(tmp_path / "nowhere") in output
    assert "failed with exit code 65" in output
    assert not processes_of_run(out)


@pytest.mark.slow
# "ignored": a non-interactive shell starts background commands with SIGINT ignored, and
# Python keeps an inherited SIG_IGN; `kill -INT` must stop the run all the same.
@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_interrupt_stops_every_process(tmp_path: Path, sigint: str) -> None:
    document = job_document(epochs=1000)
    out = tmp_path / "out"
    proc = start_dsgd_run(write_job(tmp_path, document), out, sigint_ignored=sigint == "ignored")
    try:
        deadline = time.monotonic() + 120
        # Wait until both nodes' trainers run (torchrun + one worker each = 4 processes).
        while len(processes_of_run(out)) < 4:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the gang never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert "Traceback" not in output
    # "every process stopped" means it: torchrun's workers too, by the time dsgd run exits.
    leftovers = processes_of_run(out)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers


def test_run_directory_is_reused_only_for_the_same_config(tmp_path: Path) -> None:
    job = parse_job(job_document())
    out = tmp_path / "out"
    config_path = prepare_run_directory(job, out)
    first = config_path.read_text()
    assert prepare_run_directory(job, out) == config_path  # same job: resume there
    assert config_path.read_text() == first
    changed = parse_job(job_document(epochs=3))
    with pytest.raises(LocalRunError, match="holds a run with a different configuration"):
        prepare_run_directory(changed, out)
    assert config_path.read_text() == first  # nothing overwritten


def test_run_refuses_a_directory_of_another_run_before_starting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_run_directory(parse_job(job_document(epochs=3)), out)
    job_file = write_job(tmp_path, job_document())
    result = subprocess.run(
        [sys.executable, "-m", "dsgd_operator.cli", "run", str(job_file), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "holds a run with a different configuration" in result.stderr
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_killing_dsgd_run_outright_leaves_no_orphans(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = start_dsgd_run(write_job(tmp_path, job_document(epochs=1000)), out)
    try:
        deadline = time.monotonic() + 120
        while len(processes_of_run(out)) < 4:
            assert proc.poll() is None
            assert time.monotonic() < deadline, "the gang never started"
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL: no chance to stop the gang itself
        proc.communicate()
    deadline = time.monotonic() + 30
    while processes_of_run(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = processes_of_run(out)
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers


def test_fixed_metrics_ports_must_be_free_and_in_range(free_port) -> None:  # type: ignore[no-untyped-def]
    first = free_port()
    assert fixed_metrics_ports(first, 1) == [first]
    with pytest.raises(LocalRunError, match="must lie within 1…65535"):
        fixed_metrics_ports(65535, 2)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(LocalRunError, match=f"port {port} \\(node 0\\) is not free"):
            fixed_metrics_ports(port, 2)


def test_run_refuses_a_taken_metrics_port_before_starting(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        job_file, out = write_job(tmp_path, job_document()), tmp_path / "out"
        command = ["run", str(job_file), "--out", str(out), "--metrics-port", str(port)]
        result = subprocess.run(
            [sys.executable, "-m", "dsgd_operator.cli", *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {port} (node 0) is not free" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # nothing half-created
