"""Run the trainer as a pod would: `python -m dsgd_trainer.launch` (real torchrun) as a subprocess.

`start_pod(config, workdir)` starts one node with the pod contract's environment
(PET_* for torchrun's static rendezvous on loopback, DSGD_CONFIG, metrics port,
PROMETHEUS_MULTIPROC_DIR) and returns a `Pod`. Output goes to a file (no pipe
that could fill up). `Pod.kill_all(signal)` signals the launcher and every
process under it at once, like a container runtime killing a pod: torchrun
starts its workers in their own sessions, so a process-group kill would miss
them. `stop_all()` is the cleanup every test must reach (use the `pods` fixture).

`PLUGINS` is a plug-in module for tests, written into the pod's PYTHONPATH:
`slow_mlp` (the built-in mlp, initialised identically, sleeping in each forward
so that epochs take long enough to interrupt) and `exploding_mlp` (logits
multiplied by inf: the loss is NaN from the first step).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsgd_contract.pod import ARGS, COMMAND, trainer_env

from tests.conftest import pick_free_port

PLUGINS = """
import time

from dsgd_trainer.models import build_model


def slow_mlp(input_shape, num_classes):
    model = build_model("mlp", input_shape, num_classes)
    model.register_forward_pre_hook(lambda module, args: time.sleep(0.03))
    return model


def exploding_mlp(input_shape, num_classes):
    model = build_model("mlp", input_shape, num_classes)
    model.register_forward_hook(lambda module, args, output: output * float("inf"))
    return model
"""
PLUGIN_MODULE = "dsgd_test_plugins"


def tiny_config(workdir: Path, **training: Any) -> dict[str, Any]:
    """A 2-rank local-SGD run on 512 synthetic samples: 8 steps per epoch of 32 per rank."""
    return {
        "topology": {"nodes": 1, "processesPerNode": 2},
        "algorithm": {"name": "local-sgd", "localSteps": 3},
        "optimizer": {
            "learningRate": 0.1,
            "baseBatchSize": 64,
            "warmupEpochs": 1,
            "momentum": 0.9,
            "nesterov": True,
            "weightDecay": 1e-4,
            "milestones": [0.5, 0.75],
        },
        "training": {
            "model": "mlp",
            "dataset": {"name": "synthetic", "trainSamples": 512, "testSamples": 256},
            "batchSizePerProcess": 32,
            "epochs": 4,
            "seed": 7,
            "checkpointEvery": 1,
            "checkpointDir": str(workdir / "checkpoints"),
            "outputDir": str(workdir / "out"),
            **training,
        },
    }


class Pod:
    """One launched node: the launcher process, its output file and its environment."""

    def __init__(self, process: subprocess.Popen, log: Path, env: dict[str, str]) -> None:
        self.process = process
        self.log = log
        self.env = env

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop_all()
            raise AssertionError(f"pod still running after {timeout} s:\n{self.output}") from None

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """Poll `condition` every 10 ms until it is truthy; fail if the pod exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            if self.process.poll() is not None:
                raise AssertionError(
                    f"pod exited ({self.process.returncode}) before {what}:\n{self.output}"
                )
            time.sleep(0.01)
        raise AssertionError(f"no {what} within {timeout} s:\n{self.output}")

    def processes(self) -> list[int]:
        """The launcher and all its live descendants (workers), launcher first."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children(pid))
        return found

    def kill_all(self, signum: int) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop_all(self) -> None:
        """Kill whatever is left of the pod and reap the launcher."""
        workers = self.processes()
        self.kill_all(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in workers[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (Linux)."""
    result = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            result += [int(child) for child in (task / "children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return result


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def start_pod(
    config: dict[str, Any] | str,
    workdir: Path,
    *,
    nproc: int = 2,
    metrics_port: int = 0,
    name: str = "pod",
) -> Pod:
    """Launch one node running `config` (a dict, or raw text for invalid-JSON tests)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}-config.json"
    config_path.write_text(config if isinstance(config, str) else json.dumps(config))
    (workdir / f"{PLUGIN_MODULE}.py").write_text(PLUGINS)
    multiproc_dir = workdir / f"{name}-prometheus"
    multiproc_dir.mkdir(exist_ok=True)
    env = {
        **os.environ,
        **trainer_env(
            nodes=1,
            processes_per_node=nproc,
            node_rank=0,
            master_addr="127.0.0.1",
            job_name=name,
            master_port=pick_free_port(),
            config_path=str(config_path),
            metrics_port=metrics_port,
            multiproc_dir=str(multiproc_dir),
            results_message_path=str(workdir / f"{name}-termination-log"),
        ),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(workdir), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
        # A failing test should not wait torchrun's default 30 s for workers to stop.
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "10",
    }
    log = workdir / f"{name}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, *COMMAND[1:], *ARGS],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Pod(process, log, env)


class Pods:
    """Pods started by one test; `stop_all()` in the fixture's teardown leaves nothing behind."""

    def __init__(self) -> None:
        self.started: list[Pod] = []

    def start(self, config: dict[str, Any] | str, workdir: Path, **options: Any) -> Pod:
        pod = start_pod(config, workdir, **options)
        self.started.append(pod)
        return pod

    def stop_all(self) -> None:
        for pod in self.started:
            pod.stop_all()
