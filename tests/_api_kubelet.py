"""The real API server, with the test playing the kubelet for the operator's pods.

The operator (kopf in a thread of the test process, `tests._kmock_cluster.Operator`,
so that its metrics can be read) serves one fresh restricted namespace of the
session control plane. The job's pods carry a node selector no node matches: the
scheduler never binds them and no node agent runs them, so the test reports their
phases, exit codes and reasons through the status subresource, as a kubelet would
(`set_pod`), and the real server validates every such report. Everything is read
back from the server; a pod watch started before the operator counts every pod
ever created (`pods_created`), the oracle for "no pod created twice".
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import kubernetes.config.kube_config
import pytest
from dsgd_operator import api
from dsgd_operator.api_requests import call, resource_path
from dsgd_operator.reconcile.options import OperatorOptions
from kubernetes import client, watch

from tests._cluster import create_namespace
from tests._job_reads import JOBS, PODS, JobReads
from tests._operator_in_process import FAST_OPTIONS, Operator, job_spec
from tests._polling import wait_until

#: Matches no node: the pods stay unscheduled, and the test is their kubelet.
NO_NODE = {"dsgd.io/test-no-such-node": "true"}


def unscheduled_job_spec(nodes: int = 2, **run_policy: Any) -> dict:
    """`job_spec` whose pods no node agent will run."""
    spec = job_spec(nodes, **run_policy)
    spec["template"] = {"nodeSelector": NO_NODE}
    return spec


class ApiCluster(JobReads):
    """One namespace of the real control plane, read and written as a kubelet would."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.api = api_client
        self.namespace = namespace
        self._pod_uids: set[str] = set()
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._thread = threading.Thread(target=self._watch_pods, daemon=True)
        self._thread.start()
        if not self._watching.wait(30):
            raise AssertionError("the pod watch did not start")

    def _watch_pods(self) -> None:
        core = client.CoreV1Api(self.api)
        version = core.list_namespaced_pod(self.namespace).metadata.resource_version
        self._watching.set()
        while not self._stop.is_set():
            stream = watch.Watch().stream(
                core.list_namespaced_pod,
                self.namespace,
                resource_version=version,
                timeout_seconds=5,
            )
            for event in stream:
                version = event["object"].metadata.resource_version
                if event["type"] == "ADDED":
                    self._pod_uids.add(event["object"].metadata.uid)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    # -- reading -------------------------------------------------------------------------------

    def _path(self, resource: str, name: str | None = None, sub: str | None = None) -> str:
        *version, plural = resource.split("/")
        return resource_path("/".join(version), plural, self.namespace, name, sub)

    def _request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict:
        code, data = call(self.api, method, path, body=body, timeout=30, **kwargs)
        payload = json.loads(data or b"{}")
        if code >= 300:
            raise AssertionError(f"{method} {path} -> {code}: {payload}")
        return payload

    def objects(self, resource: str) -> list[dict]:
        return self._request("GET", self._path(resource)).get("items") or []

    def get(self, resource: str, name: str) -> dict | None:
        code, data = call(self.api, "GET", self._path(resource, name), timeout=30)
        return json.loads(data) if code == 200 else None

    def pods_created(self) -> int:
        """Pods created in the namespace so far, as the watch saw them added; first waits
        until the watch has caught up with every pod that exists now (it may lag a list)."""
        listed = {pod["metadata"]["uid"] for pod in self.objects(PODS)}
        wait_until(lambda: listed <= self._pod_uids, 30, "the pod watch to catch up")
        return len(self._pod_uids)

    # -- writing (from the test's event loop: the calls run in threads) --------------------------

    async def _write(self, method: str, path: str, body: Any = None, **kwargs: Any) -> dict:
        return await asyncio.to_thread(self._request, method, path, body, **kwargs)

    async def create_job(self, name: str, spec: dict, **metadata: Any) -> dict:
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": name, "namespace": self.namespace, **metadata},
            "spec": spec,
        }
        return await self._write("POST", self._path(JOBS), body)

    async def patch_job(self, name: str, patch: dict) -> dict:
        content = "application/merge-patch+json"
        return await self._write("PATCH", self._path(JOBS, name), patch, content_type=content)

    async def delete_pod(self, name: str) -> None:
        await self._write("DELETE", self._path(PODS, name))

    async def set_pod(
        self,
        name: str,
        phase: str,
        exit_code: int | None = None,
        reason: str | None = None,
        waiting: str | None = None,
        **status: Any,
    ) -> None:
        """Report a pod's phase (and its trainer's exit code or waiting reason)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        pod = self.get(PODS, name)
        assert pod is not None, f"pod {name} is gone"
        container: dict = {
            "name": pod["spec"]["containers"][0]["name"],
            "image": pod["spec"]["containers"][0]["image"],
            "imageID": "",
            "ready": phase == "Running",
            "restartCount": 0,
        }
        if exit_code is not None:
            terminated = {"exitCode": exit_code, "startedAt": now, "finishedAt": now}
            terminated["reason"] = reason or ("Completed" if exit_code == 0 else "Error")
            container["state"] = {"terminated": terminated}
        elif waiting:
            container["state"] = {"waiting": {"reason": waiting, "message": f"{waiting}!"}}
        elif phase == "Running":
            container["state"] = {"running": {"startedAt": now}}
        body = {
            "phase": phase,
            "podIP": "10.0.0.1",
            "podIPs": [{"ip": "10.0.0.1"}],
            "containerStatuses": [container],
            **status,
        }
        if reason and exit_code is None:
            body["reason"] = reason
        content = "application/merge-patch+json"
        path = self._path(PODS, name, "status")
        await self._write("PATCH", path, {"status": body}, content_type=content)

    async def set_gang(self, job: str, phase: str, exit_code: int | None = None) -> None:
        for pod in self.pods(job):
            await self.set_pod(pod["metadata"]["name"], phase, exit_code)


def operator_options(namespace: str, **changes: Any) -> OperatorOptions:
    """The tests' quick timers, serving `namespace` only."""
    return OperatorOptions(**{**FAST_OPTIONS.__dict__, "namespaces": (namespace,), **changes})


@pytest.fixture(name="kube")
async def kube_fixture(
    cluster: Any, kube_api: client.ApiClient, crd_installed: None, monkeypatch: Any
) -> AsyncIterator[ApiCluster]:
    """A fresh restricted namespace; the operator's client (and kopf's) use the cluster's
    admin kubeconfig."""
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(cluster.kubeconfig)
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    namespace = await asyncio.to_thread(create_namespace, kube_api, "op")
    served = ApiCluster(kube_api, namespace)
    try:
        yield served
    finally:
        served.close()
        client.CoreV1Api(kube_api).delete_namespace(namespace)


@pytest.fixture(name="operator")
async def operator_fixture(kube: ApiCluster) -> AsyncIterator[Operator]:
    """kopf with our handlers, in this process, serving the `kube` fixture's namespace."""
    running = Operator(operator_options(kube.namespace))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
