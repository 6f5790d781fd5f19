"""`dsgd validate --server`: ask a real API server whether it would store a job's objects.

`dsgd validate` checks a manifest against our models; the API server checks
far more (every Pod, Service and ConfigMap field, admission such as Pod
Security, quotas). This module renders everything `dsgd render` prints plus
the DistributedSGDJob itself and sends each object as a server-side dry-run
create (`dryRun=All`, `fieldValidation=Strict`): nothing is stored, and the
server's refusal is reported verbatim, one line per object.

Connection problems raise `ServerUnavailable` with one line for the user;
the kubernetes client is imported only here, so `dsgd validate` without
`--server` stays fast.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.api_requests import call, collection_path
from dsgd_operator.builders import BuildSettings, build_children

#: Connect and read timeouts (s): a dry run is one round trip.
TIMEOUT = (5, 30)


class ServerUnavailable(Exception):
    """No kube context, no credentials, or the API server cannot be reached (one line)."""


@dataclass(frozen=True)
class Refusal:
    """One object the API server would not store, and its reason."""

    kind: str
    name: str
    message: str
    #: The field paths the server named (Status details.causes), if any.
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}: {self.message}"


def connect(namespace: str | None = None) -> tuple[Any, str]:
    """An ApiClient for the current kube context and the namespace to use.

    The namespace is `namespace`, else the context's, else `default`. In a pod
    (no kubeconfig) the in-cluster credentials and the pod's namespace are used.
    """
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    context_namespace = None
    try:
        config.load_kube_config(client_configuration=configuration)
        _, active = config.list_kube_config_contexts()
        context_namespace = (active or {}).get("context", {}).get("namespace")
    except (ConfigException, OSError) as kube_config_error:
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            raise ServerUnavailable(
                f"no Kubernetes context: no usable kubeconfig (KUBECONFIG or ~/.kube/config) "
                f"and not in a pod: {_one_line(str(kube_config_error))}"
            ) from None
        context_namespace = _pod_namespace()
    # One try per request: an unreachable server should fail fast, not after urllib3's retries.
    configuration.retries = 0
    return client.ApiClient(configuration), namespace or context_namespace or "default"


def _pod_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as file:
            return file.read().strip() or None
    except OSError:
        return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def dry_run_create(api_client: Any, obj: dict[str, Any], namespace: str) -> Refusal | None:
    """Server-side dry-run create of `obj` in `namespace`; None when the server accepts it.

    Raises ServerUnavailable when the server cannot be reached or does not
    accept our credentials (401): that is not about the object.
    """
    from urllib3.exceptions import HTTPError

    kind, name = obj["kind"], obj.get("metadata", {}).get("name", "?")
    try:
        code, body = call(
            api_client,
            "POST",
            collection_path(obj, namespace),
            body=obj,
            query=[("dryRun", "All"), ("fieldValidation", "Strict")],
            timeout=TIMEOUT,
        )
    except HTTPError as error:
        host = getattr(api_client.configuration, "host", "?")
        raise ServerUnavailable(
            f"cannot reach the API server at {host}: {_one_line(str(error))}"
        ) from None
    if code < 300:
        return None
    status = _status(body)
    message = _one_line(status.get("message") or body.decode("utf-8", "replace") or str(code))
    if code == 401:  # about us, not the object; 403 (RBAC, Pod Security) is about the object
        raise ServerUnavailable(f"the API server refused our credentials ({code}): {message}")
    if code == 404 and _api_missing(status, namespace):
        return Refusal(kind, name, _missing_api_message(obj))
    return Refusal(kind, name, message, field_paths(status, message))


def field_paths(status: dict[str, Any], message: str) -> tuple[str, ...]:
    """The field paths a refusal names, in the manifest's notation (`spec.topology.nodes`).

    From the Status causes; a CEL rule without fieldPath (the root's, about
    metadata.name) has field `<nil>` and names the path at the start of its
    message; strict decoding names unknown fields only in the message.
    """
    paths: list[str] = []
    for cause in (status.get("details") or {}).get("causes") or []:
        field = cause.get("field") or "<nil>"
        if field == "<nil>":
            named = _NAMED_PATH.match(cause.get("message") or "")
            if named and named.group(1) != "null":
                paths.append(named.group(1))
        else:
            paths.append(field)
    paths += _UNKNOWN_FIELD.findall(message)
    return tuple(dict.fromkeys(paths))


_NAMED_PATH = re.compile(r"Invalid value: ([A-Za-z][\w.\[\]/-]*): ")
_UNKNOWN_FIELD = re.compile(r'unknown field "([^"]+)"')


def _status(body: Any) -> dict[str, Any]:
    """The metav1.Status of an error response; {} when the body is not one (e.g. plain text)."""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _api_missing(status: dict[str, Any], namespace: str) -> bool:
    """A 404 for the collection itself (resource not served), not for a missing namespace."""
    details = status.get("details") or {}
    return not (details.get("kind") == "namespaces" and details.get("name") == namespace)


def _missing_api_message(obj: dict[str, Any]) -> str:
    kind, api_version = obj["kind"], obj["apiVersion"]
    if kind == "PodGroup":
        return (
            f"the scheduler's CRD is missing: this cluster serves no {kind} in {api_version}; "
            "install the gang scheduler (spec.scheduling.schedulerName) with its CRDs"
        )
    return (
        f"the CRD is missing: this cluster serves no {kind} in {api_version}; "
        "install it with `kubectl apply -f crds/` or the Helm chart"
    )


def job_objects(
    job: DistributedSGDJob, manifest: dict[str, Any], namespace: str
) -> list[dict[str, Any]]:
    """The job's manifest as the user wrote it, then everything `dsgd render` prints for it.

    `job` is `manifest` parsed. A job that names no namespace goes to `namespace`.
    """
    manifest = {**manifest, "metadata": dict(manifest.get("metadata") or {})}
    manifest.pop("status", None)  # the status subresource ignores it on create anyway
    if not job.metadata.namespace:
        manifest["metadata"]["namespace"] = namespace
        job = job.model_copy(
            update={"metadata": job.metadata.model_copy(update={"namespace": namespace})}
        )
    return [manifest, *build_children(job, BuildSettings())]


def server_refusals(
    api_client: Any, job: DistributedSGDJob, manifest: dict[str, Any], namespace: str
) -> list[Refusal]:
    """Every refusal of a dry-run create of the job (as `manifest`) and its rendered objects."""
    refusals = []
    for obj in job_objects(job, manifest, namespace):
        refusal = dry_run_create(api_client, obj, obj["metadata"].get("namespace") or namespace)
        if refusal is not None:
            refusals.append(refusal)
    return refusals
