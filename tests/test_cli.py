"""`dsgd validate` and `dsgd render` through the real entry point: exit codes, output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import EXAMPLES

DEMO = EXAMPLES / "fashion-mnist-local-sgd.yaml"
GPU_JOB = EXAMPLES / "cifar10-post-local-sgd-gpu.yaml"


def dsgd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsgd_operator.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write_bad_job(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "apiVersion: dsgd.io/v1alpha1\nkind: DistributedSGDJob\nmetadata: {name: bad}\n"
        "spec:\n  topology: {nodes: 0}\n  algorithm: {name: local-sgd, localStep: 4}\n"
    )
    return path


def test_validate_accepts_every_example() -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.yaml"))
    result = dsgd("validate", *files)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid (") == len(files)


def test_validate_names_each_bad_field_and_the_file(tmp_path: Path) -> None:
    bad = write_bad_job(tmp_path)
    result = dsgd("validate", str(DEMO), str(bad))
    assert result.returncode == 1
    assert f"{DEMO}: valid" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"{bad}: spec.topology.nodes: Input should be greater than or equal to 1",
        f"{bad}: spec.algorithm.localStep: unknown field",
    ]
    assert "Traceback" not in result.stderr


def test_validate_malformed_and_missing_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: DistributedSGDJob\nspec: {topology: [}\n")
    result = dsgd("validate", str(broken), str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert f"{broken}: line 2" in result.stderr
    assert f"{tmp_path / 'nope.yaml'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_render_prints_the_objects_in_creation_order() -> None:
    result = dsgd("render", str(GPU_JOB))
    assert result.returncode == 0, result.stderr
    objects = list(yaml.safe_load_all(result.stdout))
    kinds = [obj["kind"] for obj in objects]
    assert kinds == ["Service", "ConfigMap", "PodDisruptionBudget", "PodGroup"] + ["Pod"] * 8
    pods = objects[4:]
    assert [p["metadata"]["name"] for p in pods] == [
        f"cifar10-post-local-sgd-node-{i}" for i in range(8)
    ]
    assert all(p["metadata"]["namespace"] == "research" for p in pods)


def test_render_overrides_image_and_namespace() -> None:
    result = dsgd(
        "render", str(DEMO), "--image", "registry.local/trainer:dev", "--namespace", "lab"
    )
    assert result.returncode == 0, result.stderr
    pods = [o for o in yaml.safe_load_all(result.stdout) if o["kind"] == "Pod"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["metadata"]["namespace"] == "lab"
        assert pod["spec"]["containers"][0]["image"] == "registry.local/trainer:dev"


def test_render_refuses_an_invalid_job_and_prints_nothing(tmp_path: Path) -> None:
    result = dsgd("render", str(write_bad_job(tmp_path)))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "spec.topology.nodes" in result.stderr


def test_no_command_is_a_usage_error() -> None:
    result = dsgd()
    assert result.returncode == 2
    assert "usage: dsgd" in result.stderr


def test_operator_without_credentials_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsgd_operator.cli", "operator"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("dsgd operator: no Kubernetes credentials")
    assert "Traceback" not in result.stderr


def test_operator_names_a_bad_setting_from_the_environment() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsgd_operator.cli", "operator"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DSGD_RESYNC_SECONDS": "soon"},
    )
    assert result.returncode == 1
    assert "DSGD_RESYNC_SECONDS='soon' is not a valid float" in result.stderr
    assert "Traceback" not in result.stderr


def test_validate_and_render_read_a_pipe() -> None:
    """`cat job.yaml | dsgd validate /dev/stdin`: the file is read once (a pipe cannot be
    read twice; the experiment-or-job check used to read it first and leave nothing)."""
    text = (EXAMPLES / "digits-hierarchical.yaml").read_text()
    for command, expected in (("validate", "valid (digits-hierarchical)"), ("render", "kind: Pod")):
        result = subprocess.run(
            [sys.executable, "-m", "dsgd_operator.cli", command, "/dev/stdin"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
