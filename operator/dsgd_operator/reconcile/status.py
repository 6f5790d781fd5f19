"""Pure status vocabulary: what a pod says about itself, conditions, worker counts, timestamps.

No API calls and no clock: everything takes the time it should use, so the
failure policy built on it (dsgd_operator.reconcile.policy) is tested without
a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from dsgd_contract import exit_codes
from dsgd_contract.pod import (
    ATTEMPT_LABEL,
    CONTAINER_NAME,
    METRICS_PORT_NAME,
    NODE_RANK_LABEL,
    member_pod_names,
)

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.api_status import Condition, WorkerCounts

#: metav1.Condition's limit on a message.
MAX_CONDITION_MESSAGE = 32768

#: Container waiting reasons that mean a pod will not start on its own: worth an event.
ABNORMAL_WAITING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class PodState:
    """What the operator reads from one pod of a job."""

    name: str
    rank: int | None
    attempt: int | None
    phase: str  # Pending | Running | Succeeded | Failed | Unknown
    deleting: bool = False
    exit_code: int | None = None
    reason: str | None = None  # why it ended or stalls: Evicted, OOMKilled, ImagePullBackOff...
    message: str = ""
    pod_ip: str | None = None
    metrics_port: int | None = None
    finished_at: datetime | None = None  # when the trainer container terminated
    #: The pod carries condition DisruptionTarget=True (evicted, preempted, drained): its
    #: end is a disruption, not a failure of the job (as for a Kubernetes Job).
    disrupted: bool = False
    #: The trainer container's termination message (rank 0 of a succeeded run writes its
    #: results there: dsgd_contract.run_results).
    termination_message: str | None = None

    @property
    def failure_reason(self) -> str:
        """A CamelCase reason for a Failed pod: the exit code's, or the pod's own."""
        if self.disrupted and self.reason:
            return self.reason
        if self.reason in ("Evicted", "OOMKilled", "DeadlineExceeded", "Preempting"):
            return self.reason
        if self.exit_code is not None:
            return exit_codes.reason(self.exit_code)
        return self.reason or "PodFailed"

    def describe(self) -> str:
        """One line for condition messages and events: `job-node-1 exited with 137 (Signal9)`."""
        if self.exit_code is not None:
            text = f"{self.name} exited with code {self.exit_code} ({self.failure_reason})"
        elif self.reason:
            text = f"{self.name}: {self.reason}"
        else:
            text = f"{self.name} is {self.phase}"
        return f"{text}: {self.message}" if self.message else text


def _int_label(labels: dict[str, str], key: str) -> int | None:
    try:
        return int(labels[key])
    except (KeyError, TypeError, ValueError):
        return None


def _trainer_status(status: dict) -> dict:
    statuses = status.get("containerStatuses") or []
    for container in statuses:
        if container.get("name") == CONTAINER_NAME:
            return container
    return statuses[0] if statuses else {}


def _metrics_port(spec: dict) -> int | None:
    for container in spec.get("containers") or []:
        if container.get("name") != CONTAINER_NAME:
            continue
        for port in container.get("ports") or []:
            if port.get("name") == METRICS_PORT_NAME and port.get("containerPort"):
                return int(port["containerPort"])
    return None


def observe_pod(pod: dict) -> PodState:
    """A pod object (as the API returns it) → PodState."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    status = pod.get("status") or {}
    container = _trainer_status(status)
    state = container.get("state") or {}
    terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
    waiting = state.get("waiting") or {}
    exit_code = terminated.get("exitCode") if terminated else None
    reason = status.get("reason")  # Evicted, DeadlineExceeded... (pod level)
    message = status.get("message") or ""
    disruption = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        ),
        None,
    )
    if disruption is not None:
        reason = reason or disruption.get("reason") or "DisruptionTarget"
        message = message or disruption.get("message") or ""
    if terminated and terminated.get("reason") == "OOMKilled":
        reason = "OOMKilled"
    elif not reason and waiting.get("reason") in ABNORMAL_WAITING_REASONS:
        reason = waiting["reason"]
        message = waiting.get("message") or message
    return PodState(
        name=metadata.get("name", ""),
        rank=_int_label(labels, NODE_RANK_LABEL),
        attempt=_int_label(labels, ATTEMPT_LABEL),
        phase=status.get("phase") or "Pending",
        deleting=bool(metadata.get("deletionTimestamp")),
        exit_code=int(exit_code) if exit_code is not None else None,
        reason=reason,
        message=message,
        pod_ip=status.get("podIP"),
        metrics_port=_metrics_port(pod.get("spec") or {}),
        finished_at=parse_time(terminated.get("finishedAt")) if terminated else None,
        disrupted=disruption is not None,
        termination_message=(state.get("terminated") or {}).get("message"),
    )


def gang_failures(
    job: DistributedSGDJob, current: dict[int, PodState], attempt: int
) -> list[PodState]:
    """The ranks of gang `attempt` that count as failed, each as a Failed PodState: a pod
    that failed, one that is missing, or one being deleted before it succeeded (a deleted
    pod is a failure unless disrupted: then its reason is the disruption's)."""
    failures: list[PodState] = []
    topology = job.spec.topology
    names = member_pod_names(job.name, topology.nodes, topology.parameter_servers)
    for rank, name in enumerate(names):
        pod = current.get(rank)
        if pod is None:
            failures.append(
                PodState(
                    name=name,
                    rank=rank,
                    attempt=attempt,
                    phase="Failed",
                    reason="PodDeleted",
                    message="the pod disappeared",
                )
            )
        elif pod.phase == "Failed":
            failures.append(pod)
        elif pod.deleting and pod.phase != "Succeeded":
            failures.append(
                PodState(
                    name=pod.name,
                    rank=rank,
                    attempt=attempt,
                    phase="Failed",
                    reason=pod.reason if pod.disrupted else "PodDeleted",
                    message=pod.message or "the pod is being deleted",
                    disrupted=pod.disrupted,
                )
            )
    return failures


def worker_counts(pods: list[PodState]) -> WorkerCounts:
    """status.workers: the pods of one gang by phase (Unknown counts as pending)."""
    counts = {"pending": 0, "running": 0, "succeeded": 0, "failed": 0}
    for pod in pods:
        key = pod.phase.lower() if pod.phase in ("Running", "Succeeded", "Failed") else "pending"
        counts[key] += 1
    return WorkerCounts(**counts)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, with milliseconds: backoffs and deadlines are timed from these."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def later(moment: datetime, seconds: float) -> datetime:
    """`moment` + `seconds`, or the calendar's last moment when that lies beyond it.

    A status time is anyone's to edit (the status subresource); a deadline or TTL
    on a time near year 9999 must not overflow on every reconcile pass.
    """
    try:
        return moment + timedelta(seconds=seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def parse_time(text: Any) -> datetime | None:
    """A Kubernetes timestamp → aware datetime; None for absent or malformed values."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def set_condition(
    conditions: list[Condition],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> bool:
    """Set a metav1.Condition in place; True when its status changed (a transition).

    lastTransitionTime moves only when the status flips, as metav1 prescribes;
    reason and message always show the latest word.
    """
    wanted = "True" if status else "False"
    found = next((c for c in conditions if c.type == kind), None)
    transition = found is None or found.status != wanted
    condition = Condition(
        type=kind,
        status=wanted,
        reason=reason,
        message=message[:MAX_CONDITION_MESSAGE],
        last_transition_time=format_time(now) if transition else found.last_transition_time,
        observed_generation=generation,
    )
    if found is None:
        conditions.append(condition)
    else:
        conditions[conditions.index(found)] = condition
    return transition
