"""A DistributedSGDJob's status vocabulary: phases, condition types, failure reasons.

The operator writes them; dashboards, alerts, `kubectl wait` and the CLI read them.
"""

from __future__ import annotations

from typing import Literal

from dsgd_contract import exit_codes

Phase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[Phase, ...] = ("Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended")
TERMINAL_PHASES: tuple[Phase, ...] = ("Succeeded", "Failed")

#: metav1.Condition types the operator sets on a job.
CREATED = "Created"
RUNNING = "Running"
RESTARTING = "Restarting"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
INVALID = "Invalid"
PENDING_TOO_LONG = "PendingTooLong"
#: The API server refused what the last reconcile pass asked for (quota, PodSecurity, ...).
RECONCILE_ERROR = "ReconcileError"
CONDITION_TYPES = (
    CREATED,
    RUNNING,
    RESTARTING,
    SUCCEEDED,
    FAILED,
    SUSPENDED,
    INVALID,
    PENDING_TOO_LONG,
    RECONCILE_ERROR,
)

#: Why a job ends Failed (besides a pod's own reason: Evicted, Signal9, ...).
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
#: The reasons known in advance: the policy's own and the non-retryable exit codes'.
KNOWN_FAILURE_REASONS = (
    BACKOFF_LIMIT_EXCEEDED,
    DEADLINE_EXCEEDED,
    *exit_codes.NON_RETRYABLE.values(),
)
