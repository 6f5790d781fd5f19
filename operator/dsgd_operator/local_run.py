"""`dsgd run`: the job's pods executed as local processes.

The pods come from the same builder the operator uses (`dsgd_operator.builders`);
each pod's container command runs here with the env the pod would get, except
for what only makes sense on a cluster:

- `python` is this interpreter (so the active environment's torch is used);
- the rendezvous address is loopback and ports are free ones picked by the OS
  (also downpour-sgd's RPC store on parameter server 0);
- the config file is a local copy whose checkpoint and output directories lie
  in the run's output directory;
- each pod gets its own Prometheus multiprocess directory and metrics port.

The processes run together as a dsgd_operator.local_gang.LocalGang: one failed
pod stops the whole gang (as the operator does), and the run exits with that
pod's exit code. Ctrl-C stops every process.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from dsgd_contract.pod import (
    CONFIG_ENV,
    MASTER_ADDR_ENV,
    MASTER_PORT_ENV,
    METRICS_PORT_ENV,
    MULTIPROC_DIR_ENV,
    NODE_RANK_LABEL,
    PS_ADDR_ENV,
    PS_PORT_ENV,
    RESULTS_MESSAGE_ENV,
)

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.builders import DEFAULT_SETTINGS, build_pods
from dsgd_operator.local_gang import GangResult, LocalGang, LocalProcess
from dsgd_operator.local_gpus import (
    VISIBLE_DEVICES_ENV,
    GpuAssignmentError,
    check_gpus_present,
    count_usable_gpus,
    inherited_devices,
    node_device_lists,
)


def member_label(nodes: int, member: int) -> str:
    """How a gang member is shown: `node-<i>`, or `ps-<i>` for a parameter server."""
    return f"node-{member}" if member < nodes else f"ps-{member - nodes}"


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
    parameter_server_port: int | None = None,
) -> LocalProcess:
    """One pod (a builder's dict, or one read back from an API server) as a local process.

    The one place that decides what changes between a pod on a cluster and the
    same pod on this machine (see the module docstring). `base_env` (default:
    this process's environment) is inherited the way a container inherits its
    image's environment; the pod's env wins over it, and our rewrites over both.
    `parameter_server_port`: where parameter server 0 hosts the RPC store (downpour-sgd
    pods, whose env names one: LocalRunError-free ValueError when it is missing).
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
    if PS_ADDR_ENV in env:
        if parameter_server_port is None:
            raise ValueError(f"{pod['metadata']['name']} needs a local parameter_server_port")
        env.update({PS_ADDR_ENV: "127.0.0.1", PS_PORT_ENV: str(parameter_server_port)})
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
    parameter_server_port: int | None = None,
) -> list[LocalProcess]:
    """The job's pods (from the builder) as local processes, sharing this machine's cores.

    `metrics_ports` has one port per gang member (nodes, then parameter servers).

    GPU jobs: node i gets entries i·P … i·P + P − 1 of the GPUs `base_env` may
    use (dsgd_operator.local_gpus); LocalRunError when there are too few.
    """
    cores = cpu_count or os.cpu_count() or 1
    topology = job.spec.topology
    # Parameter servers are CPU processes: no GPUs for members beyond the nodes.
    devices: list[str | None] = [None] * topology.gang_members
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
    if topology.parameter_servers and parameter_server_port is None:
        parameter_server_port = free_port()
    processes = []
    for member, pod in enumerate(build_pods(job, settings)):
        processes.append(
            local_process(
                pod,
                config_path=config_path,
                multiproc_dir=metrics_dir / f"node-{member}",
                master_port=master_port,
                metrics_port=metrics_ports[member],
                threads=max(1, cores // (topology.world_size + topology.parameter_servers)),
                cuda_visible_devices=devices[member],
                base_env=base_env,
                parameter_server_port=parameter_server_port,
            )
        )
        processes[-1].env.pop(RESULTS_MESSAGE_ENV, None)  # results: the run's directory
    return processes


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
    members = job.spec.topology.gang_members
    if metrics_port:
        ports = fixed_metrics_ports(metrics_port, members)
    else:
        ports = [free_port() for _ in range(members)]
    with tempfile.TemporaryDirectory(prefix="dsgd-metrics-") as metrics_dir:
        processes = plan_local_processes(
            job, out_dir, config_path, Path(metrics_dir), free_port(), ports
        )
        gang = LocalGang(processes, log)
        tick = None if on_tick is None else (lambda: on_tick(gang, processes))
        return gang.run(tick, tick_seconds)
