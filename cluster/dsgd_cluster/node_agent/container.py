"""A bound pod's first container as a local process: what a kubelet and a container
runtime would have prepared, done with files and environment variables.

Honoured: `command`/`args` (`python` is this interpreter, other programs come from
this machine's PATH), `env` (`value`; `valueFrom` with `fieldRef`, `configMapKeyRef`,
`secretKeyRef`), `envFrom`, `workingDir`, volumes (`configMap`, `secret`,
`emptyDir`, `persistentVolumeClaim` bound to a `hostPath`/`local` PersistentVolume,
`hostPath`, `projected` service-account tokens, `downwardAPI` is not), the
service account's token (as a kubeconfig, see below), `restartPolicy`, deletion
with its grace period, `terminationMessagePath` and `terminationMessagePolicy`
(`File`, `FallbackToLogsOnError`): the message file is a fresh local file per
start, read back when the process exits into the container's
`state.terminated.message`, at most 4096 bytes as the kubelet keeps.

Rewritten: a volume mounted at `/p` is a local directory `D`; every env value and
argument that names a path under `/p` is rewritten to the same path under `D`
(a container would see the volume at `/p`); the same for the termination
message path, a file a runtime mounts into the container. The pod's service-account token
becomes `KUBECONFIG` pointing at a kubeconfig for the API server (there is no
`/var/run/secrets/…` on this machine, and no in-cluster Service routing), and
`KUBERNETES_SERVICE_*` are not set. A dsgd trainer pod (one that sets
`DSGD_CONFIG`) goes through `dsgd_operator.local_run.local_process`, the same
rewrite as `dsgd run` (`trainer_pod.py`): its config's checkpoint and output directories map
through the pod's volumes, its rendezvous (and downpour-sgd's RPC store) is on loopback
at ports shared by the gang's attempt, and its metrics listen on the pod's own IP.

Ignored: the image (this machine's Python environment is every image), init and
sidecar containers, resources and limits (reported, not enforced), probes (a
started container is Ready), security contexts, and networking beyond a pod IP:
each pod gets a local address of its own (dsgd_cluster.pod_network), so listeners
bound to the pod IP never collide; wildcard listeners share the host's ports.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dsgd_contract.pod import CONFIG_ENV, TERMINATION_MESSAGE_PATH
from kubernetes import client

from dsgd_cluster.kubeconfig import write_kubeconfig

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3600


class PodSetupError(Exception):
    """The pod cannot start yet or at all (reason, message): reported on its status."""

    def __init__(self, reason: str, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True)
class Launch:
    """What to execute for one pod."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    #: The local file standing for the container's terminationMessagePath.
    termination_log: Path | None = None


@dataclass(frozen=True)
class AgentContext:
    """What every pod's preparation shares: the API, where pods live, the server."""

    core: client.CoreV1Api
    workdir: Path
    server: str
    ca_file: Path


def _field(pod: dict, path: str, node_name: str, pod_ip: str) -> str:
    meta = pod["metadata"]
    if path.startswith("metadata.labels['") or path.startswith("metadata.annotations['"):
        key = path.split("['", 1)[1].rstrip("']")
        bag = meta.get("labels" if ".labels" in path else "annotations") or {}
        return bag.get(key, "")
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": node_name,
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.hostIPs": "127.0.0.1",
    }
    if path not in values:
        raise PodSetupError(
            "CreateContainerConfigError", f"fieldRef {path} is not supported", False
        )
    return values[path]


def _key_ref(ctx: AgentContext, namespace: str, ref: dict, secret: bool) -> str | None:
    data = _source_data(ctx, namespace, ref["name"], secret, ref.get("optional", False))
    if data is None or ref["key"] not in data:
        if ref.get("optional"):
            return None
        kind = "secret" if secret else "configmap"
        raise PodSetupError(
            "CreateContainerConfigError",
            f'couldn\'t find key {ref["key"]} in {kind} "{ref["name"]}"',
        )
    return data[ref["key"]]


def _source_data(
    ctx: AgentContext, namespace: str, name: str, secret: bool, optional: bool
) -> dict[str, str] | None:
    try:
        if secret:
            raw = ctx.core.read_namespaced_secret(name, namespace).data or {}
            return {k: base64.b64decode(v).decode() for k, v in raw.items()}
        return ctx.core.read_namespaced_config_map(name, namespace).data or {}
    except client.ApiException as error:
        if error.status == 404 and optional:
            return None
        if error.status == 404:
            kind = "secret" if secret else "configmap"
            raise PodSetupError(
                "CreateContainerConfigError", f'{kind} "{name}" not found'
            ) from None
        raise


def _resolve_env(
    ctx: AgentContext, pod: dict, container: dict, node: str, ip: str
) -> dict[str, str]:
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        secret = "secretRef" in source
        ref = source.get("secretRef") or source.get("configMapRef") or {}
        data = _source_data(ctx, namespace, ref["name"], secret, ref.get("optional", False))
        env.update({source.get("prefix", "") + k: v for k, v in (data or {}).items()})
    for var in container.get("env") or []:
        if "value" in var or "valueFrom" not in var:
            env[var["name"]] = _expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        value: str | None = None
        if "fieldRef" in source:
            value = _field(pod, source["fieldRef"]["fieldPath"], node, ip)
        elif "configMapKeyRef" in source:
            value = _key_ref(ctx, namespace, source["configMapKeyRef"], secret=False)
        elif "secretKeyRef" in source:
            value = _key_ref(ctx, namespace, source["secretKeyRef"], secret=True)
        if value is not None:  # resourceFieldRef: limits are not enforced here
            env[var["name"]] = value
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` references to variables defined earlier."""
    for name, replacement in env.items():
        value = value.replace(f"$({name})", replacement)
    return value


def _write_files(directory: Path, files: dict[str, str | bytes]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _service_account_files(ctx: AgentContext, pod: dict) -> dict[str, str]:
    meta, spec = pod["metadata"], pod["spec"]
    account = spec.get("serviceAccountName") or "default"
    request = {
        "spec": {
            "audiences": [],
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
    }
    try:
        token = ctx.core.create_namespaced_service_account_token(
            account, meta["namespace"], request
        )
    except client.ApiException as error:
        raise PodSetupError(
            "CreateContainerConfigError",
            f"token for serviceaccount {meta['namespace']}/{account}: {error.reason}",
        ) from None
    return {
        "token": token.status.token,
        "ca.crt": ctx.ca_file.read_text(),
        "namespace": meta["namespace"],
    }


def _volume_dirs(
    ctx: AgentContext, pod: dict, pod_dir: Path, service_account: Callable[[], dict[str, str]]
) -> dict[str, Path]:
    """Each volume of the pod as a local directory (or file source)."""
    namespace = pod["metadata"]["namespace"]
    dirs: dict[str, Path] = {}
    for volume in pod["spec"].get("volumes") or []:
        name, local = volume["name"], pod_dir / "volumes" / volume["name"]
        if "configMap" in volume or "secret" in volume:
            secret = "secret" in volume
            ref = volume["secret"] if secret else volume["configMap"]
            source = ref.get("secretName") if secret else ref.get("name")
            data = _source_data(ctx, namespace, source, secret, ref.get("optional", False)) or {}
            items = ref.get("items")
            files = (
                {i["path"]: data[i["key"]] for i in items if i["key"] in data} if items else data
            )
            _write_files(local, files)
        elif "emptyDir" in volume:
            local.mkdir(parents=True, exist_ok=True)
        elif "hostPath" in volume:
            local = Path(volume["hostPath"]["path"])
        elif "persistentVolumeClaim" in volume:
            local = _claim_dir(ctx, namespace, volume["persistentVolumeClaim"]["claimName"])
        elif "projected" in volume:
            files: dict[str, str | bytes] = {}
            for source in volume["projected"].get("sources") or []:
                if "serviceAccountToken" in source:
                    files[source["serviceAccountToken"]["path"]] = service_account()["token"]
                elif (
                    "configMap" in source and source["configMap"].get("name") == "kube-root-ca.crt"
                ):
                    files["ca.crt"] = ctx.ca_file.read_text()
                elif "downwardAPI" in source:
                    files["namespace"] = namespace
            _write_files(local, files)
        else:
            local.mkdir(parents=True, exist_ok=True)  # unsupported kinds: an empty directory
        dirs[name] = local
    return dirs


def _claim_dir(ctx: AgentContext, namespace: str, claim: str) -> Path:
    try:
        pvc = ctx.core.read_namespaced_persistent_volume_claim(claim, namespace)
    except client.ApiException as error:
        raise PodSetupError(
            "FailedMount", f'persistentvolumeclaim "{claim}": {error.reason}'
        ) from None
    if pvc.status.phase != "Bound" or not pvc.spec.volume_name:
        raise PodSetupError("FailedMount", f'persistentvolumeclaim "{claim}" is not bound')
    pv = ctx.core.read_persistent_volume(pvc.spec.volume_name)
    source = pv.spec.host_path or pv.spec.local
    if source is None:
        raise PodSetupError(
            "FailedMount",
            f"persistentvolume {pv.metadata.name}: only hostPath or local volumes",
            False,
        )
    path = Path(source.path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _mount_table(container: dict, volumes: dict[str, Path]) -> list[tuple[str, Path]]:
    """(mount path, local path), longest mount path first so nested mounts win."""
    table = []
    for mount in container.get("volumeMounts") or []:
        local = volumes.get(mount["name"])
        if local is not None:
            table.append((mount["mountPath"].rstrip("/") or "/", local / mount.get("subPath", "")))
    return sorted(table, key=lambda entry: len(entry[0]), reverse=True)


def map_path(value: str, table: list[tuple[str, Path]]) -> str:
    """`value` with a leading mount path replaced by the volume's local directory."""
    for mount, local in table:
        if value == mount or value.startswith(mount + "/"):
            return str(local) + value[len(mount) :]
    return value


def prepare(
    ctx: AgentContext, pod: dict, node: str, pod_ip: str, ports: tuple[int, int], threads: int
) -> Launch:
    """What the pod's first container needs, under the pod's directory (`ports`: the gang's)."""
    meta, spec = pod["metadata"], pod["spec"]
    pod_dir = ctx.workdir / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
    pod_dir.mkdir(parents=True, exist_ok=True)
    container = spec["containers"][0]
    # One TokenRequest per pod: the ServiceAccount admission plugin also adds a projected
    # token volume (kube-api-access-*), which must carry the same token as KUBECONFIG.
    service_account = functools.cache(lambda: _service_account_files(ctx, pod))
    volumes = _volume_dirs(ctx, pod, pod_dir, service_account)
    table = _mount_table(container, volumes)
    # A fresh, empty message file per start, as a runtime mounts one into each container.
    termination_log = pod_dir / "termination-log"
    termination_log.write_bytes(b"")
    table.append(
        (container.get("terminationMessagePath") or TERMINATION_MESSAGE_PATH, termination_log)
    )
    table.sort(key=lambda entry: len(entry[0]), reverse=True)

    base = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    base.pop("KUBECONFIG", None)
    base["HOSTNAME"] = spec.get("hostname") or meta["name"]
    if spec.get("automountServiceAccountToken", True) is not False:
        sa = service_account()
        _write_files(pod_dir / "serviceaccount", sa)
        table.append((SERVICE_ACCOUNT_DIR, pod_dir / "serviceaccount"))
        base["KUBECONFIG"] = str(
            write_kubeconfig(
                pod_dir / "kubeconfig",
                ctx.server,
                ctx.ca_file,
                user=spec.get("serviceAccountName") or "default",
                token=sa["token"],
                namespace=meta["namespace"],
            )
        )
    env = {
        k: map_path(v, table) for k, v in _resolve_env(ctx, pod, container, node, pod_ip).items()
    }
    resolved = {
        **pod,
        "spec": {
            **spec,
            "containers": [{**container, "env": [{"name": k, "value": v} for k, v in env.items()]}],
        },
    }

    if CONFIG_ENV in env:
        from dsgd_cluster.node_agent.trainer_pod import trainer_launch  # it imports this module

        launch = trainer_launch(resolved, env, base, table, pod_dir, pod_ip, ports, threads)
    else:
        argv = [*container.get("command", []), *container.get("args", [])]
        argv = [map_path(_expand(part, env), table) for part in argv]
        launch = Launch(_executable(argv), {**base, **env}, pod_dir)
    cwd = Path(map_path(container["workingDir"], table)) if container.get("workingDir") else pod_dir
    return Launch(launch.argv, launch.env, cwd if cwd.is_dir() else pod_dir, termination_log)


def _executable(argv: list[str]) -> list[str]:
    if not argv:
        raise PodSetupError(
            "CreateContainerError", "no command: images' entrypoints are not known here", False
        )
    if argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    found = shutil.which(
        argv[0], path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        raise PodSetupError("CreateContainerError", f'executable "{argv[0]}" not found', False)
    return [found, *argv[1:]]
