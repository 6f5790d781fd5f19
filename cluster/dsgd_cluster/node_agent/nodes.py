"""The Node objects the agent stands for: registration, capacity, Lease heartbeats."""

from __future__ import annotations

import datetime
import os

from kubernetes import client
from kubernetes.client.exceptions import ApiException

LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
#: Pods a node admits, as a default kubelet.
MAX_PODS = 110


def node_names(count: int, prefix: str = "dsgd-node") -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def capacity(gpus: int) -> dict[str, str]:
    """What each node offers: this machine's cores and memory (shared by all nodes)."""
    resources = {
        "cpu": str(os.cpu_count() or 1),
        "memory": str(_memory_bytes()),
        "pods": str(MAX_PODS),
        "ephemeral-storage": "100Gi",
    }
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    return resources


def _ready_status(name: str, gpus: int, address: str) -> dict:
    now = _now().isoformat()
    return {
        "capacity": capacity(gpus),
        "allocatable": capacity(gpus),
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": name},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "dsgd node agent is posting ready status",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            },
            *(
                {
                    "type": pressure,
                    "status": "False",
                    "reason": f"KubeletHas{'Sufficient' if pressure == 'PIDPressure' else 'No'}"
                    + pressure.removesuffix("Pressure"),
                    "message": "",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
                for pressure in ("MemoryPressure", "DiskPressure", "PIDPressure")
            ),
        ],
        "nodeInfo": {
            "architecture": os.uname().machine,
            "bootID": "",
            "containerRuntimeVersion": "dsgd-node-agent://1",
            "kernelVersion": os.uname().release,
            "kubeProxyVersion": "",
            "kubeletVersion": "v0.0.0-dsgd-node-agent",
            "machineID": name,
            "operatingSystem": "linux",
            "osImage": "local processes",
            "systemUUID": name,
        },
    }


def register(core: client.CoreV1Api, name: str, gpus: int, address: str) -> None:
    """Create (or take over) Node `name`, labelled as a kubelet labels its node, and Ready."""
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "dsgd.io/node-agent": "true",
    }
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    try:
        core.create_node(body)
    except ApiException as error:
        if error.status != 409:
            raise
        core.patch_node(name, {"metadata": {"labels": labels}, "spec": {"unschedulable": False}})
    post_status(core, name, gpus, address)


def post_status(core: client.CoreV1Api, name: str, gpus: int, address: str) -> None:
    core.patch_node_status(name, {"status": _ready_status(name, gpus, address)})


def renew_lease(coordination: client.CoordinationV1Api, name: str) -> None:
    """Renew the node's Lease: what the node lifecycle controller reads as a heartbeat."""
    now = _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}
    try:
        coordination.patch_namespaced_lease(name, LEASE_NAMESPACE, {"spec": spec})
    except ApiException as error:
        if error.status != 404:
            raise
        coordination.create_namespaced_lease(
            LEASE_NAMESPACE,
            {"metadata": {"name": name, "namespace": LEASE_NAMESPACE}, "spec": spec},
        )
