"""An emulated Kubernetes API (kmock) with the dsgd operator (kopf) really running against it.

kmock stores objects as given. What the operator relies on and kmock leaves
out is added here, as an API server would: names from generateName, uids,
creationTimestamp, resourceVersion (kopf's patches test it), metadata.generation
bumped by spec changes, and label selectors on lists and watches.

Fixtures `cluster` (the API alone) and `operator` (kopf on top of it): import
`cluster_fixture` / `operator_fixture` into a test module to use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import dsgd_operator.reconcile.handlers  # noqa: F401  (registers the handlers with kopf)
import kmock
import kubernetes.config.kube_config
import pytest
import yaml
from dsgd_operator import api
from dsgd_operator.experiments import api as experiments

from tests._job_reads import JOBS, PODS, JobReads
from tests._operator_in_process import FAST_OPTIONS, Operator, job_spec  # noqa: F401
from tests._polling import wait_until_async

NAMESPACE = "default"

#: Every resource kopf or the operator touches, with what discovery says about it.
RESOURCES: dict[str, dict] = {
    PODS: {"kind": "Pod", "namespaced": True, "subresources": {"status"}},
    "v1/services": {"kind": "Service", "namespaced": True},
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition",
        "namespaced": False,
    },
    JOBS: {
        "kind": api.KIND,
        "singular": api.SINGULAR,
        "namespaced": True,
        "shortnames": set(api.SHORT_NAMES),
        "subresources": {"status"},
    },
    f"{api.GROUP}/{api.VERSION}/{experiments.PLURAL}": {
        "kind": experiments.KIND,
        "singular": experiments.SINGULAR,
        "namespaced": True,
        "shortnames": set(experiments.SHORT_NAMES),
        "subresources": {"status"},
    },
    "scheduling.volcano.sh/v1beta1/podgroups": {"kind": "PodGroup", "namespaced": True},
    "scheduling.x-k8s.io/v1alpha1/podgroups": {"kind": "PodGroup", "namespaced": True},
}
#: How many of kmock's own request records to keep (see ClusterEmulator._handle).
HISTORY_LIMIT = 40
VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Equality (`k=v`, `k==v`, `k!=v`) and existence (`k`, `!k`) label selectors."""
    for term in filter(None, (part.strip() for part in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _labels_of(obj: Any) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API-server behaviour the operator depends on."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        #: (method, path, time.perf_counter()) of every request, in arrival order.
        self.calls: list[tuple[str, str, float]] = []

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock 0.8 cannot parse /api/v1/namespaces (it takes "namespaces" for the
        # namespace prefix), which kopf lists and watches when given namespaces.
        if raw_request.path == "/api/v1/namespaces":
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)

    async def _serve_namespaces(self, raw_request: aiohttp.web.BaseRequest) -> Any:
        self.calls.append((raw_request.method, raw_request.path, time.perf_counter()))
        if raw_request.query.get("watch") != "true":
            names = sorted({ns for (_, ns, _) in self.objects if ns} | {NAMESPACE})
            items = [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in names
            ]
            return aiohttp.web.json_response(
                {"kind": "NamespaceList", "metadata": {"resourceVersion": "1"}, "items": items}
            )
        response = aiohttp.web.StreamResponse()
        await response.prepare(raw_request)
        await asyncio.sleep(float(raw_request.query.get("timeoutSeconds", 60)))
        return response

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock matches each request against its reactions by scanning the whole request
        # history (quadratic in the number of requests); nothing here asserts on that
        # history (`calls` is ours), so keep only its tail.
        if len(self._requests) > HISTORY_LIMIT:
            del self._requests[: -HISTORY_LIMIT // 2]
        self.calls.append(
            (str(request.method.value).upper(), request.url.path, time.perf_counter())
        )
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            if request.action == kmock.action.CREATE:
                meta = data.setdefault("metadata", {})
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("resourceVersion", "1")
                meta.setdefault("creationTimestamp", datetime.now(UTC).isoformat())
                if request.resource.group:  # custom resources count spec generations
                    meta.setdefault("generation", 1)
            elif (
                request.action == kmock.action.UPDATE
                and request.subresource is None
                and "spec" in data
                and request.resource.group
            ):
                key = (request.resource, request.namespace, request.name)
                if key in self.objects:
                    current = self.objects[key].get("metadata", {}).get("generation", 1)
                    data.setdefault("metadata", {})["generation"] = current + 1
        return await super()._handle(request)

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        selector = request.params.get("labelSelector")
        if selector:
            payload["items"] = [
                item for item in payload["items"] if _selector_matches(selector, _labels_of(item))
            ]
        return payload

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        selector = request.params.get("labelSelector")
        async for event in super()._serve_watch(request):
            if (
                not selector
                or not isinstance(event, dict)
                or _selector_matches(selector, _labels_of(event.get("object")))
            ):
                yield event


class Cluster(JobReads):
    """The emulated API with shortcuts for tests: create jobs, play the kubelet, wait."""

    def __init__(self, emulator: ClusterEmulator, namespace: str = NAMESPACE) -> None:
        self.api = emulator
        self.namespace = namespace

    @property
    def url(self) -> str:
        return str(self.api.url).rstrip("/")

    # -- reading -------------------------------------------------------------------------------

    def objects(self, resource: str, namespace: str | None = None) -> list[dict]:
        namespace = namespace or self.namespace
        found = []
        for (res, ns, _), obj in list(self.api.objects.items()):
            if res == kmock.resource(resource) and ns == namespace and not obj.deleted:
                found.append(_plain(obj.raw))
        return found

    def get(self, resource: str, name: str, namespace: str | None = None) -> dict | None:
        for obj in self.objects(resource, namespace):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def phase_history(self, job: str) -> list[str]:
        """Every phase the job's status went through, in order (from the stored versions)."""
        phases: list[str] = []
        for (res, ns, name), obj in list(self.api.objects.items()):
            if res != kmock.resource(JOBS) or ns != self.namespace or name != job:
                continue
            for version in obj.history:
                phase = ((version.raw if version else {}).get("status") or {}).get("phase")
                if phase and (not phases or phases[-1] != phase):
                    phases.append(phase)
        return phases

    def count(self, method: str, path_part: str) -> int:
        return sum(1 for m, p, _ in self.api.calls if m == method and path_part in p)

    # -- writing -------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/merge-patch+json",
    ) -> dict:
        headers = {"Content-Type": content_type} if method == "PATCH" else {}
        response = await self.api.request(method, path, json=body, headers=headers)
        payload = await response.json()
        if response.status >= 300:
            raise AssertionError(f"{method} {path} -> {response.status}: {payload}")
        return payload

    def path(self, resource: str, name: str | None = None, subresource: str | None = None) -> str:
        ref = kmock.resource(resource)
        root = f"/apis/{ref.group}/{ref.version}" if ref.group else f"/api/{ref.version}"
        path = f"{root}/namespaces/{self.namespace}/{ref.plural}"
        return path + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")

    async def create_job(self, name: str, spec: dict | None = None, **metadata: Any) -> dict:
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": name, "namespace": self.namespace, **metadata},
            "spec": spec if spec is not None else {},
        }
        return await self._call("POST", self.path(JOBS), body)

    async def patch_job(self, name: str, patch: dict) -> dict:
        return await self._call("PATCH", self.path(JOBS, name), patch)

    async def delete_job(self, name: str) -> None:
        await self._call("DELETE", self.path(JOBS, name))

    async def delete_pod(self, name: str) -> None:
        await self._call("DELETE", self.path(PODS, name))

    async def set_pod(
        self,
        name: str,
        phase: str,
        exit_code: int | None = None,
        reason: str | None = None,
        waiting: str | None = None,
        pod_ip: str | None = "10.0.0.1",
        finished_at: datetime | None = None,
        **status: Any,
    ) -> None:
        """Play the kubelet: report a pod's phase (and its trainer's exit code) via the API."""
        container: dict = {"name": "trainer"}
        if exit_code is not None:
            container["state"] = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                    "finishedAt": (finished_at or datetime.now(UTC)).isoformat(),
                }
            }
        elif waiting:
            container["state"] = {"waiting": {"reason": waiting, "message": f"{waiting}!"}}
        elif phase == "Running":
            container["state"] = {"running": {"startedAt": datetime.now(UTC).isoformat()}}
        body = {"phase": phase, "containerStatuses": [container], **status}
        if pod_ip:
            body["podIP"] = pod_ip
        if reason and exit_code is None:
            body["reason"] = reason
        await self._call("PATCH", self.path(PODS, name, "status"), {"status": body})

    async def set_gang(self, job: str, phase: str, exit_code: int | None = None) -> None:
        for pod in self.pods(job):
            await self.set_pod(pod["metadata"]["name"], phase, exit_code)


def _plain(value: Any) -> Any:
    """kmock's views → plain dicts and lists, for assertions and printing."""
    if isinstance(value, dict | kmock.ObjectVersion):
        return {key: _plain(value[key]) for key in value}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


async def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    return await wait_until_async(check, timeout, what or repr(check))


def write_kubeconfig(path, server: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "kmock",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {"token": "test-token"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test"}}],
            }
        )
    )


@contextlib.asynccontextmanager
async def emulated_cluster(tmp_path, monkeypatch) -> AsyncIterator[Cluster]:
    """A running emulated API server, set as the current kubeconfig context."""
    emulator = ClusterEmulator()
    for resource, info in RESOURCES.items():
        emulator.resources[resource] = kmock.ResourceInfo(verbs=VERBS, **info)
    async with emulator, kmock.Server(emulator):
        cluster = Cluster(emulator)
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, cluster.url)
        # The client reads $KUBECONFIG when imported; point its default at ours instead.
        monkeypatch.setattr(
            kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
        )
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield cluster


@pytest.fixture(name="cluster")
async def cluster_fixture(tmp_path, monkeypatch) -> AsyncIterator[Cluster]:
    async with emulated_cluster(tmp_path, monkeypatch) as emulated:
        yield emulated


@pytest.fixture(name="operator")
async def operator_fixture(cluster: Cluster) -> AsyncIterator[Operator]:
    running = Operator()
    await running.start()
    try:
        yield running
    finally:
        await running.stop()
