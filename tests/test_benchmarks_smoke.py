"""benchmarks/: tiny versions run and write well-formed results; emulated clusters clean up.

The benchmarks are not timed here (CI machines vary); these tests check that each
script runs end to end in its `--smoke` size and writes JSON, markdown and PNG
files with the fields the reports promise, that the emulated cluster shapes its
links to the asked rate, and that it leaves no namespace or process behind,
also after its owner is killed. The cluster tests need root (network
namespaces); without it they are skipped with the reason. The comparisons that
are experiments (paper findings, time to accuracy) run in
tests/test_benchmark_experiments.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT_TIMEOUT = 240
GPU_CHECK_TIMEOUT = 840


def import_benchmark(name: str) -> ModuleType:
    """A module of benchmarks/ (a folder of scripts that import each other by file name)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return __import__(name)


@pytest.fixture(scope="module")
def netns() -> ModuleType:
    """The netns_cluster module, or a skip saying why namespaces cannot be made here."""
    module = import_benchmark("netns_cluster")
    reason = module.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return module


def run_script(script: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("matplotlib", reason="the benchmarks' figures need matplotlib (bench)")
    process = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
        cwd=REPO,
    )
    assert process.returncode == 0, f"{script} failed:\n{process.stdout}\n{process.stderr}"
    return process


def assert_png(path: Path) -> None:
    assert path.is_file(), f"missing figure {path}"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert path.stat().st_size > 5_000, f"{path} is suspiciously small for a plot"


def assert_index_links(out: Path, *files: str) -> None:
    index = (out / "README.md").read_text()
    for name in files:
        assert f"({name})" in index, f"the index does not link {name}"


# --- the emulated cluster ------------------------------------------------------------------


@pytest.mark.slow
def test_cluster_shapes_each_link_to_its_rate_and_removes_itself(netns: ModuleType) -> None:
    name = f"t{time.monotonic_ns() % 10**9}"
    with netns.NetnsCluster(2, "20mbit", name=name) as cluster:
        assert set(netns.cluster_namespaces(name)) == set(cluster.namespaces)
        goodput = netns.measure_throughput(cluster, seconds=1.0)
        # Goodput excludes headers that tbf counts: a few percent under the rate.
        assert 0.8 * 20e6 <= goodput <= 1.2 * 20e6, f"{goodput / 1e6:.1f} Mbit/s at 20mbit"
        cluster.set_rate("5mbit")
        slower = netns.measure_throughput(cluster, seconds=1.0)
        assert 0.8 * 5e6 <= slower <= 1.2 * 5e6, f"{slower / 1e6:.1f} Mbit/s at 5mbit"
    assert netns.cluster_namespaces(name) == []
    cluster.down()  # idempotent


@pytest.mark.slow
def test_added_nodes_are_shaped_and_isolated_processes_get_their_own_pid_namespace(
    netns: ModuleType,
) -> None:
    """`ensure_nodes` (a downpour-sgd job's servers) joins shaped nodes; `isolated_argv` runs
    a process as a pod would: its node's network, its own PID namespace (TensorPipe would
    otherwise move tensors between processes of this machine around the links)."""
    name = f"e{time.monotonic_ns() % 10**9}"
    with netns.NetnsCluster(1, "20mbit", name=name) as cluster:
        cluster.ensure_nodes(3)
        assert len(cluster.nodes) == 3
        assert set(netns.cluster_namespaces(name)) == set(cluster.namespaces)
        sent_before, _ = cluster.interface_bytes(2)
        goodput = netns.measure_throughput(cluster, source=2, destination=0, seconds=1.0)
        assert 0.8 * 20e6 <= goodput <= 1.2 * 20e6, f"{goodput / 1e6:.1f} Mbit/s at 20mbit"
        sent, _ = cluster.interface_bytes(2)
        assert sent - sent_before >= goodput / 8 * 0.9, "the bytes left through node 2's link"
        script = "echo $$; readlink /proc/self/ns/pid; ip -brief address show eth0"
        shown = subprocess.run(
            cluster.isolated_argv(2, ["sh", "-c", script]),
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        pid, namespace, address = shown.stdout.splitlines()
        assert pid == "1" and namespace != os.readlink("/proc/self/ns/pid")
        assert cluster.nodes[2].address in address
        assert cluster.wiring_env(parameter_server_node=2)["DSGD_PS_ADDR"] == "10.213.0.3"
    assert netns.cluster_namespaces(name) == []


@pytest.mark.slow
def test_cluster_left_by_a_killed_owner_is_removed_by_down(netns: ModuleType) -> None:
    """SIGKILL escapes every handler: `down --name` must find the namespaces and their processes."""
    name = f"k{time.monotonic_ns() % 10**9}"
    script = str(BENCHMARKS / "netns_cluster.py")
    owner = subprocess.Popen(cluster_owner_argv(name))
    try:
        sleepers = wait_for_sleepers(netns, name)
        owner.kill()
        owner.wait()
        assert netns.cluster_namespaces(name), "SIGKILL should have left the namespaces"
        down = subprocess.run(
            [sys.executable, script, "down", "--name", name], capture_output=True, text=True
        )
        assert down.returncode == 0, down.stderr
        assert netns.cluster_namespaces(name) == []
        for pid in sleepers:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} survived"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        netns.delete_namespaces(netns.cluster_namespaces(name))


@pytest.mark.slow
def test_cluster_owner_stopped_by_sigterm_tears_down(netns: ModuleType) -> None:
    name = f"s{time.monotonic_ns() % 10**9}"
    owner = subprocess.Popen(cluster_owner_argv(name))
    try:
        sleepers = wait_for_sleepers(netns, name)
        owner.send_signal(signal.SIGTERM)
        assert owner.wait(timeout=30) != 0
        assert netns.cluster_namespaces(name) == []
        for pid in sleepers:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} survived"
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        netns.delete_namespaces(netns.cluster_namespaces(name))


def test_rates_are_checked_before_anything_is_made() -> None:
    netns = import_benchmark("netns_cluster")
    assert netns.parse_rate("50mbit") == 50e6
    assert netns.parse_rate("1gbit") == 1e9
    with pytest.raises(netns.ClusterError, match="'fast' is not a tc rate"):
        netns.NetnsCluster(2, "fast")
    with pytest.raises(netns.ClusterError, match="--nodes"):
        netns.NetnsCluster(0, "1gbit")


def cluster_owner_argv(name: str) -> list[str]:
    """`netns_cluster.py run` of a 2-node cluster whose nodes each sleep for two minutes."""
    script = str(BENCHMARKS / "netns_cluster.py")
    command = f"run --nodes 2 --rate 10mbit --name {name} -- sleep 120"
    return [sys.executable, script, *command.split()]


def wait_for_sleepers(netns: ModuleType, name: str) -> list[int]:
    """The processes inside cluster `name`'s node namespaces, once both nodes run theirs."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        nodes = [s for s in netns.cluster_namespaces(name) if not s.endswith("-hub")]
        pids = [netns.namespace_pids(node) for node in nodes]
        if len(nodes) == 2 and all(pids):
            return [pid for node_pids in pids for pid in node_pids]
        time.sleep(0.1)
    pytest.fail(f"cluster {name} did not come up with its processes")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


# --- time to accuracy: pure analysis -----------------------------------------------------


@pytest.mark.slow
def test_overhead_smoke_measures_every_contender_and_counts_one_epoch(tmp_path: Path) -> None:
    run_script("overhead.py", tmp_path)
    results = json.loads((tmp_path / "overhead-smoke.json").read_text())
    (measurement,) = results["measurements"]
    rows, steps = measurement["rows"], measurement["setup"]["steps_per_epoch"]
    assert rows["pytorch-ddp"]["overhead_median"] == 0.0  # the baseline against itself
    for key in (
        "pytorch-ddp-again",
        "pytorch-periodic-h4",
        "pytorch-periodic-h16",
        "mini-batch",
        "local-h4",
        "local-h4-overlap",
        "local-h16",
        "local-h16-sign",
    ):
        assert rows[key]["step_ms_median"] > 0
    # Each of ours against its PyTorch reference, in the same rounds.
    assert rows["local-h4"]["reference"] == "pytorch-periodic-h4"
    assert rows["local-h16"]["reference"] == "pytorch-periodic-h16"
    assert rows["mini-batch"]["reference"] == "pytorch-ddp"
    assert all(rows[k]["vs_reference_median"] is not None for k in ("local-h4", "mini-batch"))
    assert set(measurement["checks"]) >= {
        "mini_batch_at_most_3_percent_over_pytorch",
        "local_h4_at_most_3_percent_over_pytorch",
    }
    assert rows["mini-batch"]["sync_rounds_per_epoch"]["global"] == steps
    assert rows["local-h4"]["sync_rounds_per_epoch"]["global"] == steps // 4
    assert rows["local-h4-overlap"]["sync_rounds_per_epoch"]["global"] == steps // 4
    assert rows["local-h16"]["sync_rounds_per_epoch"]["global"] == steps // 16
    assert rows["local-h16"]["bytes_vs_mini_batch"] == pytest.approx(1 / 16)
    assert measurement["checks"]["local_h16_bytes_are_one_sixteenth"]["met"]
    # Sign compression all-reduces int8 sign sums (+ a float per tensor): ~1/4 of float32.
    assert rows["local-h16-sign"]["bytes_per_epoch"] < rows["local-h16"]["bytes_per_epoch"] / 3
    assert {"post-local-h16:mini-batch phase", "post-local-h16:local phase"} <= set(rows)
    assert_png(tmp_path / "overhead-smoke-mlp-1x2.png")


@pytest.mark.slow
def test_operator_benchmark_smoke_reports_every_figure() -> None:
    """benchmarks/operator_bench.py at a tiny size, on its own real control plane."""
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/operator_bench.py",
            "--nodes",
            "3",
            "--repeat",
            "2",
            "--jobs",
            "3",
            "--rounds",
            "2",
            "--steady-jobs",
            "2",
            # Settling is for the figures' fairness, not what this checks: bounded, so that
            # a control plane slow to quiet down on a loaded machine cannot time it out.
            "--settle-timeout",
            "10",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "1 job × 3 nodes, creation → all pods created: p50" in out
    assert out.count("burst round") == 2
    assert "× the bare client (median of 2 rounds" in out
    assert "steady 2 jobs/s × 2 jobs: p50" in out
    assert "react: p50" in out and "requests: p50" in out
    assert "the bare client at the same rate: p50" in out
    # The audit log saw the operator create exactly 3 pods per job, and each burst job's
    # one status patch (the burst is counted until the control plane settled).
    assert "create pods                                          3.00 per job" in out
    assert "patch distributedsgdjobs/status                      1.00 per job" in out
    assert "operator RSS: idle" in out


# The whole GPU check on CPUs: minutes, and more on a loaded machine (it outran the suite's
# default 300 s there twice); its own script timeout bounds it.
@pytest.mark.slow
@pytest.mark.timeout(GPU_CHECK_TIMEOUT + 60)
def test_gpu_check_dry_run_runs_every_part_and_writes_one_json(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh on CPUs (--dry-run): everything but the GPU, as it will run there.

    The algorithms (2 gloo ranks; hierarchical 2 × 2), SIGTERM after a checkpoint and resume
    (bit-identical on CPUs), the throughput contenders and their ratios.
    """
    out = tmp_path / "gpu-check.json"
    process = subprocess.run(
        [str(BENCHMARKS / "gpu_check.sh"), "--dry-run", "--out", str(out), "--work", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=GPU_CHECK_TIMEOUT,
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert process.returncode == 0, process.stdout + process.stderr
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["errors"] == {} and report["dry_run"] is True
    assert set(report["parts"]) == {
        "environment",
        "gpu_tests",
        "algorithms",
        "resume",
        "throughput",
    }
    runs = report["parts"]["algorithms"]
    assert set(runs) == {"mini-batch-sgd", "local-sgd", "post-local-sgd", "hierarchical-local-sgd"}
    assert all(run["ok"] and run["images_per_second"] > 0 for run in runs.values())
    assert runs["hierarchical-local-sgd"]["world_size"] == 4
    resumed = report["parts"]["resume"]
    assert resumed["stopped_exit_codes"] == [128 + signal.SIGTERM]
    assert resumed["resumed_from"] and resumed["identical"] is True  # CPUs: deterministic
    speeds = report["parts"]["throughput"]["images_per_second"]
    assert set(speeds) == {
        "dsgd_bf16",
        "dsgd_fp32",
        "bare_bf16",
        "bare_fp32",
        "bare_bf16_with_per_step_copies",
        "dataloader_bf16",
    }
    assert all(value > 0 for value in speeds.values())
    ratios = report["parts"]["throughput"]["ratios"]
    assert ratios["dsgd_over_bare_bf16"] == pytest.approx(
        speeds["dsgd_bf16"] / speeds["bare_bf16"], rel=0.01
    )
    assert report["seconds"] < 450
