"""What the agent knows of a pod it runs, and the status it reports for it (as a kubelet)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HOST_IP = "127.0.0.1"


@dataclass
class RunningPod:
    """A pod this agent admitted: its process (if started) and what was reported."""

    namespace: str
    name: str
    uid: str
    node: str
    ip: str
    restart_policy: str
    container: str
    log_path: Path
    termination_log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    next_start: float = 0.0
    final: bool = False  # a terminal phase was reported
    deleting: bool = False
    last_exit: dict | None = None
    pod: dict = field(default_factory=dict)


#: What a kubelet keeps of a termination message, and of the log tail it falls back to.
MAX_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def termination_message(pod: RunningPod, exit_code: int) -> str:
    """The container's termination message as a kubelet reads it on exit: the message
    file (its first 4096 bytes); with `FallbackToLogsOnError`, an empty file and a
    failed container, the log's last 80 lines (at most 2048 bytes)."""
    message = b""
    if pod.termination_log is not None and pod.termination_log.is_file():
        with pod.termination_log.open("rb") as file:
            message = file.read(MAX_MESSAGE_BYTES)
    container = pod.pod["spec"]["containers"][0]
    policy = container.get("terminationMessagePolicy") or "File"
    if not message and exit_code and policy == "FallbackToLogsOnError" and pod.log_path.is_file():
        tail = pod.log_path.read_bytes().splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        message = b"".join(tail)[-FALLBACK_LOG_BYTES:]
    return message.decode("utf-8", errors="replace")


def status_body(pod: RunningPod, phase: str, state: dict, now: str) -> dict:
    """The pod's status subresource: phase, IPs, conditions, the container's state.

    Ready exactly while the container runs (probes are not run here).
    """
    spec = pod.pod["spec"]["containers"][0]
    ready = "running" in state
    flag = "True" if ready else "False"
    container = {
        "name": pod.container,
        "image": spec.get("image", ""),
        "imageID": "",
        "ready": ready,
        "started": ready,
        "restartCount": pod.restarts,
        "state": state,
    }
    if pod.process is not None:
        container["containerID"] = f"dsgd://{pod.process.pid}"
    if pod.last_exit and "terminated" not in state:
        container["lastState"] = {"terminated": pod.last_exit}
    body = {
        "phase": phase,
        "podIP": pod.ip,
        "podIPs": [{"ip": pod.ip}],
        "hostIP": HOST_IP,
        "hostIPs": [{"ip": HOST_IP}],
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now},
        ],
        "containerStatuses": [container],
    }
    if ready:
        body["startTime"] = pod.pod.get("status", {}).get("startTime") or pod.started_at
    return body
