"""What one reconcile pass knows about a job (Snapshot) and what it decides to do (Plan).

The failure policy (dsgd_operator.reconcile.policy) turns the one into the
other; the reconciler (dsgd_operator.reconcile.reconciler) carries a Plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.api_status import DistributedSGDJobStatus
from dsgd_operator.reconcile.status import PodState


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the job; `key` (when set) is posted only once."""

    type: str  # Normal | Warning
    reason: str
    message: str
    key: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """What one reconcile pass knows about a job."""

    job: DistributedSGDJob | None  # the spec to act on; None when it is refused
    problems: tuple[str, ...]  # why the spec (or a change of it) is refused
    status: DistributedSGDJobStatus  # as last written by the operator
    pods: tuple[PodState, ...]  # the job's pods, every attempt
    now: datetime
    generation: int | None = None


@dataclass
class Plan:
    """What a reconcile pass does, in order: create, delete, patch status, post events."""

    status: DistributedSGDJobStatus
    create_ranks: tuple[int, ...] = ()  # pods of attempt status.restarts (after Service etc.)
    delete_pods: tuple[str, ...] = ()
    delete_job: bool = False
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until the next pass is due
    gang_restarted: bool = False
    failure_reason: str | None = None  # set on the pass that fails the job

    def requeue(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.requeue_after = (
            seconds if self.requeue_after is None else min(self.requeue_after, seconds)
        )
