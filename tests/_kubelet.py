"""A tiny kubelet for the emulated API: the operator's pods run as real local processes.

It watches (polls) the pods in the emulated API server and, for each new one,
runs its container's command + args with its env, the way a node would, except
for what only a cluster has:

- `python` → this interpreter; PET_MASTER_ADDR → 127.0.0.1;
- PET_MASTER_PORT → a free port shared by the pods of one gang attempt, and
  DSGD_METRICS_PORT → a free port per pod, which it reports back in the pod's
  `metrics` container port (the operator scrapes that port on the pod IP,
  which is 127.0.0.1 here);
- /etc/dsgd/config.json → a file written from the job's ConfigMap, with
  checkpointDir and outputDir in directories shared by all attempts of the job
  (the PersistentVolumeClaim of a real cluster);
- PROMETHEUS_MULTIPROC_DIR → a fresh directory per pod.

It reports back what a kubelet does: phase Running with podIP, then Succeeded
or Failed with the container's exit code (128 + N for a signal). A pod it runs
gets a finalizer, so that deleting the pod (the operator tearing a gang down)
terminates the process first, as a grace period would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dsgd_contract.pod import ATTEMPT_LABEL, JOB_NAME_LABEL, config_map_name
from dsgd_operator.local_run import local_process

from tests._kmock_cluster import PODS, Cluster
from tests.conftest import pick_free_port

FINALIZER = "test.dsgd.io/kubelet"
GRACE_SECONDS = 5.0


@dataclass
class LocalPod:
    name: str
    uid: str
    job: str
    attempt: str
    process: subprocess.Popen
    log_path: Path
    reported: bool = False  # the final phase was patched
    finished_at: datetime | None = None  # known exactly when this kubelet killed it


@dataclass
class Kubelet:
    cluster: Cluster
    workdir: Path
    poll_seconds: float = 0.1
    pods: dict[str, LocalPod] = field(default_factory=dict)  # by uid
    master_ports: dict[tuple[str, str], int] = field(default_factory=dict)
    _task: asyncio.Task | None = None

    # -- public --------------------------------------------------------------------------------

    def shared_dir(self, job: str, what: str) -> Path:
        """checkpoints/ or output/ of a job: shared by every attempt, like a PVC."""
        path = self.workdir / job / what
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, pod_name: str, attempt: str) -> str:
        path = self.workdir / "logs" / f"{pod_name}-attempt-{attempt}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self, pod_name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill a running pod's processes (a crash, an OOM kill)."""
        for pod in self.pods.values():
            if pod.name == pod_name and pod.process.poll() is None:
                pod.finished_at = datetime.now(UTC)
                os.killpg(pod.process.pid, sig)
                return
        raise AssertionError(f"{pod_name} is not running")

    async def __aenter__(self) -> Kubelet:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pod in self.pods.values():
            self._terminate(pod, grace=2.0)

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            for pod in self.cluster.objects(PODS):
                try:
                    await self._sync(pod)
                except AssertionError:  # the pod went away between reading and patching
                    continue
            await self._report_exits()
            await asyncio.sleep(self.poll_seconds)

    async def _sync(self, pod: dict) -> None:
        meta = pod["metadata"]
        uid, name = meta["uid"], meta["name"]
        local = self.pods.get(uid)
        if meta.get("deletionTimestamp"):
            if local is not None and local.process.poll() is None:
                await asyncio.to_thread(self._terminate, local, GRACE_SECONDS)
                await self._report(local)
            if FINALIZER in (meta.get("finalizers") or []):
                rest = [f for f in meta["finalizers"] if f != FINALIZER]
                await self.cluster._call(
                    "PATCH", self.cluster.path(PODS, name), {"metadata": {"finalizers": rest}}
                )
            return
        if local is None and (pod.get("status") or {}).get("phase") in (None, "Pending"):
            await self._start(pod)

    async def _start(self, pod: dict) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        job = meta["labels"][JOB_NAME_LABEL]
        attempt = meta["labels"][ATTEMPT_LABEL]
        metrics_port = pick_free_port()
        master_port = self.master_ports.setdefault((job, attempt), pick_free_port())
        config_path = self._write_config(job)
        if config_path is None:
            return  # the ConfigMap is not there yet: try again on the next poll
        metrics_dir = self.workdir / "prometheus" / meta["uid"]
        metrics_dir.mkdir(parents=True)
        # The same rewrite `dsgd run` makes, so this harness tests it too.
        planned = local_process(
            pod,
            config_path=config_path,
            multiproc_dir=metrics_dir,
            master_port=master_port,
            metrics_port=metrics_port,
            threads=1,
        )
        log_path = self.workdir / "logs" / f"{meta['name']}-attempt-{attempt}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                planned.argv,
                env=planned.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pods[meta["uid"]] = LocalPod(
            meta["name"], meta["uid"], job, attempt, process, log_path
        )
        containers = [dict(c) for c in spec["containers"]]
        containers[0]["ports"] = [
            {**port, "containerPort": metrics_port} if port.get("name") == "metrics" else port
            for port in containers[0].get("ports") or []
        ]
        await self.cluster._call(
            "PATCH",
            self.cluster.path(PODS, meta["name"]),
            {
                "metadata": {"finalizers": [*(meta.get("finalizers") or []), FINALIZER]},
                "spec": {"containers": containers},
            },
        )
        await self.cluster.set_pod(meta["name"], "Running", pod_ip="127.0.0.1")

    def _write_config(self, job: str) -> Path | None:
        config_map = self.cluster.get("v1/configmaps", config_map_name(job))
        if config_map is None:
            return None
        config = json.loads(config_map["data"]["config.json"])
        config["training"]["checkpointDir"] = str(self.shared_dir(job, "checkpoints"))
        config["training"]["outputDir"] = str(self.shared_dir(job, "output"))
        path = self.workdir / job / "config.json"
        path.write_text(json.dumps(config))
        return path

    async def _report_exits(self) -> None:
        for pod in list(self.pods.values()):
            if not pod.reported and pod.process.poll() is not None:
                await self._report(pod)

    async def _report(self, pod: LocalPod) -> None:
        if pod.reported:
            return
        pod.reported = True
        code = pod.process.returncode
        code = 128 - code if code < 0 else code
        phase = "Succeeded" if code == 0 else "Failed"
        with contextlib.suppress(AssertionError):  # already deleted: nothing to report to
            await self.cluster.set_pod(
                pod.name, phase, exit_code=code, pod_ip="127.0.0.1", finished_at=pod.finished_at
            )

    @staticmethod
    def _terminate(pod: LocalPod, grace: float) -> None:
        if pod.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pod.process.pid, signal.SIGTERM)
        try:
            pod.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pod.process.pid, signal.SIGKILL)
            pod.process.wait(timeout=10)
