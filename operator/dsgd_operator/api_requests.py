"""Raw requests to the API server over the official client's `ApiClient`: paths and one call.

The operator, `dsgd validate --server` and the tests send plain dicts (from the
pure builders) and read plain JSON; this is the one place that knows how a
resource's URL is formed and how the client is asked for it. It imports no
`kubernetes` module itself: callers pass the `ApiClient` they made.
"""

from __future__ import annotations

from typing import Any

from dsgd_operator import api

#: Resource names of the kinds the operator creates, and the job's own.
PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "ConfigMap": "configmaps",
    "PodGroup": "podgroups",
    "PodDisruptionBudget": "poddisruptionbudgets",
    api.KIND: api.PLURAL,
}


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """`/api/v1/namespaces/ns/pods/name` or `/apis/group/version/...` for any resource."""
    root = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def collection_path(obj: dict[str, Any], namespace: str) -> str:
    """The URL that creates `obj` (a kind of PLURALS) in `namespace`."""
    return resource_path(obj["apiVersion"], PLURALS[obj["kind"]], namespace)


def call(
    api_client: Any,
    method: str,
    path: str,
    *,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
    timeout: float | tuple[float, float] = 60,
) -> tuple[int, bytes]:
    """One request; (HTTP status, raw body). Any status comes back: the caller decides
    what an error is. Connection failures raise the client's (urllib3) exceptions."""
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = content_type
    request = api_client.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*request, _request_timeout=timeout)
    return response.status, response.read() or b""
