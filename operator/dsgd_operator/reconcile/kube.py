"""The few Kubernetes API calls the operator makes, as coroutines over the official client.

The `kubernetes` client is synchronous; its calls run in a thread pool of their
own so that a slow API server never blocks kopf's event loop. Objects are plain
dicts in and out (no model classes): they come from and go to the pure builders.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.config.config_exception import ConfigException

from dsgd_operator import api
from dsgd_operator.api_requests import PLURALS, call, collection_path, resource_path

_THREADS = 16


class ApiError(Exception):
    """An API call failed with an HTTP status other than the ones the caller tolerates.

    `reason` and `message` are the server's (from its Status body: `Forbidden`,
    `NotFound`, `Invalid`, ... and the text a user should read); a body that is
    not a Status gives reason `HTTP<status>` and the body as the message.
    """

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")
        self.status = status
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            parsed = {}
        self.reason: str = str(parsed.get("reason") or f"HTTP{status}")
        self.message: str = str(parsed.get("message") or body)

    @property
    def refused(self) -> bool:
        """The server refused the request itself (4xx but conflict or throttling): retrying
        the same request will not help until the user or an admin changes something."""
        return 400 <= self.status < 500 and self.status not in (409, 429)


def load_configuration() -> kubernetes.client.Configuration:
    """In-cluster credentials when running in a pod, else the current kubeconfig context."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except ConfigException:
        kubernetes.config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = _THREADS
    return configuration


class KubeApi:
    """Async create / delete / list / patch-status over one `kubernetes.client.ApiClient`."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self._client = kubernetes.client.ApiClient(configuration)
        self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="dsgd-api")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        return call(self._client, method, path, **kwargs)

    async def _request(
        self, method: str, path: str, *, tolerate: tuple[int, ...] = (), **kwargs: Any
    ) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        status, data = await loop.run_in_executor(
            self._pool, lambda: self._call(method, path, **kwargs)
        )
        if status >= 300 and status not in tolerate:
            raise ApiError(method, path, status, data.decode("utf-8", errors="replace"))
        return status, data

    async def create(self, obj: dict, namespace: str) -> bool:
        """Create `obj`; True if created, False if it already existed (HTTP 409)."""
        path = collection_path(obj, namespace)
        status, _ = await self._request("POST", path, body=obj, tolerate=(409,))
        return status != 409

    async def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        propagation: str = "Background",
    ) -> bool:
        """Delete an object; True if a deletion started, False if it was already gone (404)."""
        path = resource_path(api_version, PLURALS[kind], namespace, name)
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        status, _ = await self._request("DELETE", path, body=body, tolerate=(404,))
        return status != 404

    async def list_objects(
        self, api_version: str, plural: str, namespace: str, labels: dict[str, str]
    ) -> list[dict]:
        """The objects of `namespace` carrying all `labels` (filtered here too, to be sure)."""
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        _, data = await self._request(
            "GET",
            resource_path(api_version, plural, namespace),
            query=[("labelSelector", selector)],
        )
        items = json.loads(data).get("items") or []
        return [
            item
            for item in items
            if all(
                ((item.get("metadata") or {}).get("labels") or {}).get(k) == v
                for k, v in labels.items()
            )
        ]

    async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict]:
        """The pods of `namespace` carrying all `labels`."""
        return await self.list_objects("v1", "pods", namespace, labels)

    async def patch_status(
        self, api_version: str, plural: str, namespace: str, name: str, status: dict
    ) -> bool:
        """Merge-patch an object's status subresource; False if the object is gone (404)."""
        path = resource_path(api_version, plural, namespace, name, "status")
        code, _ = await self._request(
            "PATCH",
            path,
            body={"status": status},
            tolerate=(404,),
            content_type="application/merge-patch+json",
        )
        return code != 404

    async def patch_job_status(self, namespace: str, name: str, status: dict) -> bool:
        """Merge-patch the job's status subresource; False if the job is gone (404)."""
        return await self.patch_status(api.API_VERSION, api.PLURAL, namespace, name, status)
