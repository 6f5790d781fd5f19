"""The operator as it is deployed: its own process, configured by DSGD_* variables.

`run_operator` (what `dsgd operator` and the Helm chart run) and `kopf run -m
dsgd_operator.reconcile.handlers` against the real API server: liveness and
metrics endpoints, namespace scoping, and a clean exit on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from kubernetes import client

from tests._api_kubelet import ApiCluster, kube_fixture, unscheduled_job_spec  # noqa: F401
from tests._cluster import create_namespace
from tests._polling import wait_until_async
from tests.conftest import pick_free_port

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

RUN_OPERATOR = (
    "import sys\n"
    "from dsgd_operator.reconcile import OperatorOptions, run_operator\n"
    "sys.exit(run_operator(OperatorOptions.from_env()))\n"
)


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


async def fetch_when_up(url: str, timeout: float = 30) -> str:
    async def attempt():
        try:
            return (await asyncio.to_thread(fetch, url))[1]
        except OSError:
            return None

    deadline = asyncio.get_running_loop().time() + timeout
    while (body := await attempt()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"{url} never answered"
        await asyncio.sleep(0.2)
    return body


def start(argv: list[str], kubeconfig, tmp_path, **env: str) -> subprocess.Popen:
    environ = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "DSGD_RESTART_BACKOFF_SECONDS": "0.2",
        "DSGD_DEBOUNCE_SECONDS": "0.05",
        **env,
    }
    environ.pop("KUBERNETES_SERVICE_HOST", None)
    log = (tmp_path / "operator.log").open("wb")
    return subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT)


async def stop(process: subprocess.Popen, tmp_path) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(process.wait, 30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError((tmp_path / "operator.log").read_text()) from None


async def wait_for(check, timeout: float = 30, what: str = ""):
    return await wait_until_async(check, timeout, what or repr(check))


async def test_run_operator_serves_liveness_and_metrics_and_stops_cleanly(
    kube, cluster, kube_api, tmp_path
):
    kubeconfig = cluster.kubeconfig
    liveness, metrics_port = pick_free_port(), pick_free_port()
    process = start(
        [sys.executable, "-c", RUN_OPERATOR],
        kubeconfig,
        tmp_path,
        DSGD_NAMESPACES=kube.namespace,
        DSGD_LIVENESS_PORT=str(liveness),
        DSGD_METRICS_PORT=str(metrics_port),
    )
    try:
        health = await fetch_when_up(f"http://127.0.0.1:{liveness}/healthz")
        assert '"jobs"' in health
        await kube.create_job("served", unscheduled_job_spec())
        elsewhere = ApiCluster(kube_api, await asyncio.to_thread(create_namespace, kube_api))
        await elsewhere.create_job("ignored", unscheduled_job_spec())
        await wait_for(lambda: len(kube.pods("served")) == 2, timeout=30, what="pods")
        await kube.set_gang("served", "Running")
        await wait_for(lambda: kube.status("served").get("phase") == "Running", timeout=30)

        text = await fetch_when_up(f"http://127.0.0.1:{metrics_port}/metrics")
        assert 'dsgd_jobs{phase="Running"} 1.0' in text
        assert "dsgd_pods_created_total 2.0" in text
        assert "dsgd_reconcile_duration_seconds_bucket" in text
        assert "dsgd_gang_restarts_total 0.0" in text
        # Only the namespaces it was given: the other job is left alone.
        assert not elsewhere.pods("ignored") and not elsewhere.status("ignored")
        elsewhere.close()
        client.CoreV1Api(kube_api).delete_namespace(elsewhere.namespace)
    finally:
        code = await stop(process, tmp_path)
    assert code == 0, (tmp_path / "operator.log").read_text()


async def test_kopf_run_module_works_too(kube, cluster, tmp_path):
    kubeconfig = cluster.kubeconfig
    process = start(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "--namespace",
            kube.namespace,
            "-m",
            "dsgd_operator.reconcile.handlers",
        ],
        kubeconfig,
        tmp_path,
        DSGD_METRICS_PORT="0",
    )
    try:
        await kube.create_job("viakopf", unscheduled_job_spec())
        await wait_for(lambda: len(kube.pods("viakopf")) == 2, timeout=40, what="pods")
        job = kube.job("viakopf")
        # No finalizer (deletion never waits for an operator) and no kopf bookkeeping.
        assert not job["metadata"].get("finalizers")
        assert not any(key.startswith("kopf") for key in kube.status("viakopf"))
    finally:
        code = await stop(process, tmp_path)
    assert code == 0, (tmp_path / "operator.log").read_text()
