"""The operator as a local process against the real control plane: `dsgd operator`.

`OperatorProcess` runs `dsgd operator --namespace NS --liveness-port P --metrics-port 0`
with the cluster's admin kubeconfig, waits until its liveness endpoint answers
(kopf answers once its startup handlers ran, and its watches list every
existing job on start), and stops it with SIGTERM, then SIGKILL, on teardown.
Its output goes to a log file (`log_path`, `log()`) for assertions and for the
failure messages of `wait_until`. The `operator` fixture gives one per test,
started; tests that kill and restart it call `kill()` / `start()` themselves.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dsgd_cluster.control_plane import ClusterInfo

from tests._polling import wait_until
from tests.conftest import pick_free_port

#: Operator options for tests: quick restarts and progress scrapes (DSGD_* variables).
FAST_ENV = {
    "DSGD_RESTART_BACKOFF_SECONDS": "1",
    "DSGD_PROGRESS_INTERVAL_SECONDS": "2",
    "DSGD_DEBOUNCE_SECONDS": "0.1",
    "DSGD_RESYNC_SECONDS": "10",
}


class OperatorProcess:
    """One `dsgd operator` process serving one namespace; restartable, logs appended."""

    def __init__(self, cluster: ClusterInfo, namespace: str, log_path: Path) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.metrics_port = 0

    def start(self, timeout: float = 60) -> None:
        """Start the operator and return once its liveness endpoint answers 200."""
        assert self.process is None or self.process.poll() is not None, "already running"
        port = pick_free_port()
        dsgd = shutil.which("dsgd")
        assert dsgd, "the dsgd command is not on PATH (put the venv's bin first)"
        env = {**os.environ, **FAST_ENV, "KUBECONFIG": str(self.cluster.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster credentials
        argv = [dsgd, "operator", "--namespace", self.namespace]
        self.metrics_port = pick_free_port()
        argv += ["--liveness-port", str(port), "--metrics-port", str(self.metrics_port)]
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {self.starts} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1
        url = f"http://127.0.0.1:{port}/healthz"

        def ready() -> bool:
            assert self.process.poll() is None, f"the operator exited:\n{self.log()[-3000:]}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.status == 200
            except (OSError, urllib.error.URLError):
                return False

        wait_until(ready, timeout, "the operator's liveness endpoint")

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the operator's /metrics now (None when it is not there)."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and labels.items() <= sample.labels.items():
                    return sample.value
        return None

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers run, as when its node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code (None if never started)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def operator(
    cluster: ClusterInfo, crd_installed: None, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """A started operator serving the test's namespace; stopped (and killed) afterwards."""
    process = OperatorProcess(cluster, namespace, tmp_path / "operator.log")
    try:
        process.start()
        yield process
    finally:
        process.stop()
