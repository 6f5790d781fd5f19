"""`dsgd run`: the job's pods executed as local processes.

The pods come from the same builder the operator uses (`dsgd_operator.builders`);
each pod's container command runs here with the env the pod would get, except
for what only makes sense on a cluster:

- `python` is this interpreter (so the active environment's torch is used);
- the rendezvous address is loopback and ports are free ones picked by the OS;
- the config file is a local copy whose checkpoint and output directories lie
  in the run's output directory;
- each pod gets its own Prometheus multiprocess directory and metrics port.

One failed pod stops the whole gang (as the operator does), and the run exits
with that pod's exit code. Ctrl-C stops every process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dsgd_contract import exit_codes
from dsgd_contract.pod import (
    CONFIG_ENV,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    METRICS_PORT_ENV,
    MULTIPROC_DIR_ENV,
    NODE_RANK_LABEL,
    RESULTS_MESSAGE_ENV,
)

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders import DEFAULT_SETTINGS, build_pods
from dsgd_operator.local_gpus import (
    VISIBLE_DEVICES_ENV,
    GpuAssignmentError,
    check_gpus_present,
    count_usable_gpus,
    inherited_devices,
    node_device_lists,
)

#: How long stopped processes get to exit after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class LocalProcess:
    """What runs for one pod: its node rank, argv and complete environment."""

    node_rank: int
    argv: list[str]
    env: dict[str, str]
    metrics_port: int


def free_port() -> int:
    """A TCP port that the OS reported free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_config(job: DistributedSGDJob, out_dir: Path) -> dict:
    """The ConfigMap's training config with checkpoints and outputs under `out_dir`."""
    config = job.spec.training_config().to_wire()
    config["training"]["checkpointDir"] = str(out_dir / "checkpoints")
    config["training"]["outputDir"] = str(out_dir)
    return config


def local_process(
    pod: dict,
    *,
    config_path: Path,
    multiproc_dir: Path,
    master_port: int,
    metrics_port: int,
    threads: int,
    cuda_visible_devices: str | None = None,
    base_env: dict[str, str] | None = None,
) -> LocalProcess:
    """One pod (a builder's dict, or one read back from an API server) as a local process.

    The one place that decides what changes between a pod on a cluster and the
    same pod on this machine (see the module docstring). `base_env` (default:
    this process's environment) is inherited the way a container inherits its
    image's environment; the pod's env wins over it, and our rewrites over both.
    `threads` applies unless `base_env` sets OMP_NUM_THREADS; `cuda_visible_devices`
    (this node's slice of the machine's GPUs, dsgd_operator.local_gpus) replaces
    an inherited CUDA_VISIBLE_DEVICES.
    """
    base = dict(os.environ if base_env is None else base_env)
    container = pod["spec"]["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    argv = [sys.executable if part == "python" else part for part in argv]
    env = dict(base)
    for var in container.get("env", []):
        if "value" in var:  # valueFrom (secrets, downward API) has no local meaning
            env[var["name"]] = var["value"]
    env.update(
        {
            MASTER_ADDR_ENV: "127.0.0.1",
            MASTER_PORT_ENV: str(master_port),
            CONFIG_ENV: str(config_path),
            METRICS_PORT_ENV: str(metrics_port),
            MULTIPROC_DIR_ENV: str(multiproc_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    # All ranks share this machine's cores: without a limit each would start
    # a thread per core and they would spend their time preempting each other.
    if "OMP_NUM_THREADS" not in base:
        env["OMP_NUM_THREADS"] = str(threads)
    if cuda_visible_devices is not None:
        env[VISIBLE_DEVICES_ENV] = cuda_visible_devices
    node_rank = int(pod["metadata"]["labels"][NODE_RANK_LABEL])
    return LocalProcess(node_rank, argv, env, metrics_port)


def plan_local_processes(
    job: DistributedSGDJob,
    out_dir: Path,
    config_path: Path,
    metrics_dir: Path,
    master_port: int,
    metrics_ports: list[int],
    base_env: dict[str, str] | None = None,
    cpu_count: int | None = None,
) -> list[LocalProcess]:
    """The job's pods (from the builder) as local processes, sharing this machine's cores.

    GPU jobs: node i gets entries i·P … i·P + P − 1 of the GPUs `base_env` may
    use (dsgd_operator.local_gpus); LocalRunError when there are too few.
    """
    cores = cpu_count or os.cpu_count() or 1
    topology = job.spec.topology
    devices: list[str | None] = [None] * topology.nodes
    if topology.gpu:
        inherited = inherited_devices(os.environ if base_env is None else base_env)
        try:
            devices = list(
                node_device_lists(topology.nodes, topology.processes_per_node, inherited)
            )
        except GpuAssignmentError as error:
            raise LocalRunError(str(error)) from None
    # The shell's NCCL_* (NCCL_DEBUG=INFO to debug a run) win over the installation's defaults.
    shell = set(os.environ if base_env is None else base_env)
    settings = replace(DEFAULT_SETTINGS, gpu_pods=DEFAULT_SETTINGS.gpu_pods.without_env(shell))
    processes = []
    for node_rank, pod in enumerate(build_pods(job, settings)):
        processes.append(
            local_process(
                pod,
                config_path=config_path,
                multiproc_dir=metrics_dir / f"node-{node_rank}",
                master_port=master_port,
                metrics_port=metrics_ports[node_rank],
                threads=max(1, cores // topology.world_size),
                cuda_visible_devices=devices[node_rank],
                base_env=base_env,
            )
        )
        processes[-1].env.pop(RESULTS_MESSAGE_ENV, None)  # results: the run's directory
    return processes


@dataclass
class GangResult:
    """How a local gang ended: the exit code of each node, and the first failure."""

    exit_codes: dict[int, int] = field(default_factory=dict)
    failed_node: int | None = None
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.failed_node is not None:
            return self.exit_codes[self.failed_node]
        return 0


class LocalGang:
    """Runs the planned processes, relays their output, and stops them together.

    Each process gets its own process group so that torchrun and its workers
    can be signalled as one, and so that a Ctrl-C in the terminal reaches us
    first: we then stop the gang in order instead of leaving orphans.
    """

    def __init__(self, processes: list[LocalProcess], log: Callable[[int, str], None]) -> None:
        self._planned = processes
        self._log = log
        self._popen: dict[int, subprocess.Popen[bytes]] = {}
        self._pumps: list[threading.Thread] = []

    def start(self) -> None:
        on_exec = parent_death_signal()
        for proc in self._planned:
            Path(proc.env[MULTIPROC_DIR_ENV]).mkdir(parents=True, exist_ok=True)
            popen = subprocess.Popen(
                proc.argv,
                env=proc.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=on_exec,
            )
            self._popen[proc.node_rank] = popen
            pump = threading.Thread(target=self._pump, args=(proc.node_rank, popen), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, node_rank: int, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in popen.stdout:
            self._log(node_rank, raw.decode("utf-8", errors="replace").rstrip("\n"))

    def poll(self, result: GangResult) -> bool:
        """Record exits; True while every process still runs or all succeeded so far."""
        for node_rank, popen in self._popen.items():
            code = popen.poll()
            if code is None or node_rank in result.exit_codes:
                continue
            # A process killed by a signal reports -N; a pod would report 128+N.
            result.exit_codes[node_rank] = exit_codes.from_returncode(code)
            if result.exit_codes[node_rank] != 0 and result.failed_node is None:
                result.failed_node = node_rank
        return result.failed_node is None

    @property
    def finished(self) -> bool:
        return all(popen.poll() is not None for popen in self._popen.values())

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every process group still alive, then SIGKILL after `grace` seconds."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not self.finished and time.monotonic() < deadline:
            time.sleep(0.05)
        self._signal_all(signal.SIGKILL)
        for popen in self._popen.values():
            popen.wait()
        for pump in self._pumps:
            pump.join(timeout=2)

    def run(
        self, on_tick: Callable[[], None] | None = None, tick_seconds: float = 0.5
    ) -> GangResult:
        """Start, wait until all succeed, one fails or Ctrl-C; every process is stopped after.

        `on_tick` is called every `tick_seconds` while the gang runs; an exception
        it raises stops the gang and propagates (e.g. a time limit).
        """
        result = GangResult()
        try:
            self.start()
            while self.poll(result) and not self.finished:
                if on_tick is not None:
                    on_tick()
                time.sleep(tick_seconds)
            self.poll(result)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            self.stop()
            self.poll(result)
        return result

    def _signal_all(self, sig: signal.Signals) -> None:
        for popen in self._popen.values():
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, sig)


class LocalRunError(Exception):
    """The run cannot start here (output directory, ports); the message says why."""


def prepare_run_directory(job: DistributedSGDJob, out_dir: Path) -> Path:
    """Create `out_dir` and write the local config; returns the config's path.

    A directory that already holds this very config is reused, so the trainer
    resumes from its checkpoints (run, Ctrl-C, run again). One holding another
    config is refused: resuming its checkpoints under new settings would mix two
    experiments in one result.
    """
    config_path = out_dir / "config.json"
    text = json.dumps(local_config(job, out_dir.resolve()), indent=2) + "\n"
    if config_path.exists() and config_path.read_text() != text:
        raise LocalRunError(
            f"{out_dir}: holds a run with a different configuration; "
            "choose another --out or delete that directory"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(text)
    except OSError as error:
        raise LocalRunError(f"{out_dir}: cannot write the run directory: {error}") from None
    return config_path


def check_local_gpus(job: DistributedSGDJob, environ: dict[str, str] | None = None) -> None:
    """LocalRunError, before anything starts, unless this machine has a GPU for every rank.

    A no-op for CPU jobs. Counts what a process started with `environ`
    (default: ours) may use, and checks that CUDA_VISIBLE_DEVICES, if set,
    lists enough GPUs to slice (dsgd_operator.local_gpus).
    """
    topology = job.spec.topology
    if not topology.gpu:
        return
    environ = dict(os.environ if environ is None else environ)
    try:
        node_device_lists(topology.nodes, topology.processes_per_node, inherited_devices(environ))
        check_gpus_present(topology.nodes, topology.processes_per_node, count_usable_gpus(environ))
    except GpuAssignmentError as error:
        raise LocalRunError(f"{job.name}: {error}") from None


def fixed_metrics_ports(first: int, nodes: int) -> list[int]:
    """Ports first … first + nodes − 1 for the nodes' metrics; LocalRunError unless all are free."""
    ports = list(range(first, first + nodes))
    if first < 1 or ports[-1] > 65535:
        raise LocalRunError(
            f"--metrics-port {first}: the {nodes} node(s) need ports {first}…{ports[-1]}, "
            "which must lie within 1…65535"
        )
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as error:
                raise LocalRunError(
                    f"--metrics-port {first}: port {port} (node {port - first}) is not free: "
                    f"{error.strerror}"
                ) from None
    return ports


def parent_death_signal() -> Callable[[], None] | None:
    """A pre-exec hook that makes a child get SIGTERM when `dsgd run` dies, even by SIGKILL.

    Each pod runs in its own session (so that Ctrl-C reaches us first), which
    also means nothing else would stop it if we vanished. prctl is looked up
    here, in the parent: after fork, in a process with threads, the child may
    only make async-signal-safe calls. Linux only; None elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)
    return lambda: prctl(pr_set_pdeathsig, sigterm)


def run_gang(
    job: DistributedSGDJob,
    out_dir: Path,
    log: Callable[[int, str], None],
    on_tick: Callable[[LocalGang, list[LocalProcess]], None] | None = None,
    metrics_port: int | None = None,
    tick_seconds: float = 0.5,
) -> GangResult:
    """Run the job's pods locally until all succeed, one fails, or Ctrl-C.

    `metrics_port` fixes node 0's metrics port (node i gets metrics_port + i),
    so that a Prometheus can be pointed at it; default: free ports.
    """
    out_dir = out_dir.resolve()
    config_path = prepare_run_directory(job, out_dir)
    nodes = job.spec.topology.nodes
    if metrics_port:
        ports = fixed_metrics_ports(metrics_port, nodes)
    else:
        ports = [free_port() for _ in range(nodes)]
    with tempfile.TemporaryDirectory(prefix="dsgd-metrics-") as metrics_dir:
        processes = plan_local_processes(
            job, out_dir, config_path, Path(metrics_dir), free_port(), ports
        )
        gang = LocalGang(processes, log)
        tick = None if on_tick is None else (lambda: on_tick(gang, processes))
        return gang.run(tick, tick_seconds)
