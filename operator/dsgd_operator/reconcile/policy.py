"""The failure policy as a pure function: one job's spec, status and pods → what to do next.

`plan()` decides everything a reconcile pass does: which pods to create or
delete, the new status (phase, metav1 conditions, workers, restarts, times),
the Kubernetes Events to post and when to look again. The kopf handlers only
carry the plan out, so every rule below is tested without an API server.

The rules (after Kubeflow's PyTorchJob and JobSet, and what their users miss):
- a gang is all or nothing: one failed, evicted or deleted pod tears the whole
  gang down and recreates it as attempt `restarts + 1`, after an exponential
  backoff, at most `backoffLimit` times; then the job is Failed;
- a restart caused by a disruption (a pod with condition DisruptionTarget:
  evicted through the Eviction API, preempted, drained) does not use up
  `backoffLimit`: it is counted apart in `status.disruptions`, as a Kubernetes
  Job's podFailurePolicy can ignore DisruptionTarget;
- an exit code that says "bad config / bad data / diverged" fails the job at once;
- `activeDeadlineSeconds`, `cleanPodPolicy` and `ttlSecondsAfterFinished` apply
  on every terminal path: success, failure, deadline, backoff limit;
- `suspend` deletes the pods and keeps the job; resuming starts the current
  attempt again (the deadline clock restarts, as for a Kubernetes Job);
- old-attempt pods are deleted before the next attempt is created, so a
  recreated gang never meets a terminating one at the rendezvous.
"""

from __future__ import annotations

from datetime import datetime

from dsgd_contract import exit_codes
from dsgd_contract.job_status import (
    BACKOFF_LIMIT_EXCEEDED,
    CREATED,
    DEADLINE_EXCEEDED,
    FAILED,
    INVALID,
    PENDING_TOO_LONG,
    RESTARTING,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    TERMINAL_PHASES,
    Phase,
)
from dsgd_contract.run_results import decode_results

from dsgd_operator.reconcile.applied_spec import applied_spec
from dsgd_operator.reconcile.options import OperatorOptions
from dsgd_operator.reconcile.plan import Event, Plan, Snapshot
from dsgd_operator.reconcile.status import (
    MAX_CONDITION_MESSAGE,
    PodState,
    format_time,
    gang_failures,
    later,
    parse_time,
    set_condition,
    worker_counts,
)

#: While old pods are still terminating, look again this soon even without events.
TERMINATION_POLL_SECONDS = 2.0


def restart_backoff(options: OperatorOptions, restarts: int) -> float:
    """Seconds to wait before gang attempt `restarts` (≥ 1): base, 2×base, 4×base, ... capped."""
    if restarts < 1:
        return 0.0
    exponent = min(restarts - 1, 30)  # 2**30 × base is beyond any cap; avoids huge floats
    return min(options.restart_backoff_cap_seconds, options.restart_backoff_seconds * 2**exponent)


class _Pass:
    """One plan in the making: the status copy, its conditions and the plan's lists."""

    def __init__(self, snap: Snapshot, options: OperatorOptions) -> None:
        self.snap = snap
        self.options = options
        self.now = snap.now
        self.status = snap.status
        if snap.generation is not None:
            self.status.observed_generation = snap.generation
        self.plan = Plan(status=self.status)
        self.to_delete: list[str] = []

    # -- small helpers -------------------------------------------------------------------------

    def condition(self, kind: str, status: bool, reason: str, message: str = "") -> bool:
        return set_condition(
            self.status.conditions,
            kind,
            status,
            reason,
            message,
            self.now,
            self.snap.generation,
        )

    def clear(self, kind: str, reason: str, message: str = "") -> None:
        """Set a condition False, but only if it exists (no clutter of never-true conditions)."""
        if self.status.condition(kind) is not None:
            self.condition(kind, False, reason, message)

    def event(self, type_: str, reason: str, message: str, key: str | None = None) -> None:
        self.plan.events.append(Event(type_, reason, message, key))

    def since(self, kind: str) -> datetime:
        found = self.status.condition(kind)
        return (parse_time(found.last_transition_time) if found else None) or self.now

    def delete(self, pods: list[PodState]) -> None:
        for pod in pods:
            if not pod.deleting and pod.name not in self.to_delete:
                self.to_delete.append(pod.name)

    def finish(self) -> Plan:
        self.plan.delete_pods = tuple(self.to_delete)
        return self.plan

    def set_workers(self, pods: list[PodState]) -> None:
        self.status.workers = worker_counts(pods)

    # -- the rules ---------------------------------------------------------------------------

    def run(self) -> Plan:
        snap = self.snap
        if snap.problems:
            refused_spec = snap.job is None
            reason = "InvalidSpec" if refused_spec else "ImmutableField"
            message = "; ".join(snap.problems)
            previous = self.status.condition(INVALID)
            changed = self.condition(INVALID, True, reason, message)
            if changed or previous.message != message[:MAX_CONDITION_MESSAGE]:
                self.event("Warning", reason, message)
        else:
            self.clear(INVALID, "Valid", "the spec is accepted")
        if snap.job is None:
            self.status.phase = self.status.phase or "Pending"
            self.set_workers([])
            return self.finish()
        phase = self.status.phase
        if phase in TERMINAL_PHASES:
            self.terminal()
        elif snap.job.spec.run_policy.suspend:
            self.suspend()
        else:
            if phase == "Suspended":
                self.resume()
            self.active()
        return self.finish()

    def cleanup(self) -> None:
        """cleanPodPolicy on a finished job: Running (unfinished pods), All, or None."""
        policy = self.snap.job.spec.run_policy.clean_pod_policy
        pods = list(self.snap.pods)
        if policy == "All":
            self.delete(pods)
        elif policy == "Running":
            self.delete([p for p in pods if p.phase not in ("Succeeded", "Failed")])

    def expire(self) -> None:
        """ttlSecondsAfterFinished: delete the job (and so its objects) when it is due."""
        ttl = self.snap.job.spec.run_policy.ttl_seconds_after_finished
        finished = parse_time(self.status.completion_time)
        if ttl is None or finished is None:
            return
        left = (later(finished, ttl) - self.now).total_seconds()
        if left <= 0:
            self.plan.delete_job = True
            self.event("Normal", "Expired", f"deleting the job {ttl}s after it finished")
        else:
            self.plan.requeue(left)

    def terminal(self) -> None:
        self.cleanup()
        attempt = self.status.restarts
        self.set_workers([p for p in self.snap.pods if p.attempt == attempt])
        self.expire()

    def end(self, phase: Phase, reason: str, message: str) -> None:
        """Enter a terminal phase (its condition type is named as the phase): condition,
        times, cleanup, TTL."""
        self.status.phase = phase
        self.status.completion_time = format_time(self.now)
        self.condition(phase, True, reason, message)
        self.condition(RUNNING, False, reason, message)
        self.clear(RESTARTING, reason, message)
        self.clear(PENDING_TOO_LONG, reason)
        if phase == FAILED:
            self.plan.failure_reason = reason
            self.event("Warning", reason, f"job failed: {message}")
        else:
            self.event("Normal", reason, message)
        self.cleanup()
        self.expire()

    def suspend(self) -> None:
        self.delete(list(self.snap.pods))
        if self.status.phase != "Suspended":
            self.event("Normal", "Suspended", "spec.runPolicy.suspend is true: pods deleted")
        self.status.phase = "Suspended"
        self.condition(SUSPENDED, True, "Suspended", "spec.runPolicy.suspend is true")
        self.condition(RUNNING, False, "Suspended", "the job is suspended")
        self.condition(CREATED, False, "Suspended", "the pods were deleted")
        self.clear(RESTARTING, "Suspended")
        self.clear(PENDING_TOO_LONG, "Suspended")
        self.set_workers([])

    def resume(self) -> None:
        self.condition(SUSPENDED, False, "Resumed", "spec.runPolicy.suspend is false")
        self.event("Normal", "Resumed", "recreating the pods")
        # As for a Kubernetes Job, activeDeadlineSeconds counts from the resumption.
        self.status.start_time = format_time(self.now)
        self.status.phase = "Pending"

    def active(self) -> None:
        job = self.snap.job
        nodes = job.spec.topology.gang_members  # the nodes, then any parameter servers
        attempt = self.status.restarts
        policy = job.spec.run_policy
        pods = self.snap.pods
        stale = [p for p in pods if p.attempt != attempt]
        current = {
            p.rank: p
            for p in pods
            if p.attempt == attempt and p.rank is not None and 0 <= p.rank < nodes
        }
        # Pods of an earlier attempt, or with ranks beyond the topology, never stay.
        self.delete(stale + [p for p in pods if p.attempt == attempt and p not in current.values()])
        stale = [p for p in pods if p.name not in {c.name for c in current.values()}]
        self.set_workers(list(current.values()))

        started = parse_time(self.status.start_time)
        if started is None:
            started = self.now
            self.status.start_time = format_time(self.now)
        if policy.active_deadline_seconds is not None:
            deadline = later(started, policy.active_deadline_seconds)
            if self.now >= deadline:
                self.end(
                    FAILED,
                    DEADLINE_EXCEEDED,
                    f"the job was active longer than activeDeadlineSeconds "
                    f"({policy.active_deadline_seconds}s)",
                )
                return
            self.plan.requeue((deadline - self.now).total_seconds())

        if self.status.phase == "Restarting":
            ready_at = later(self.since(RESTARTING), restart_backoff(self.options, attempt))
            if stale:
                self.plan.requeue(TERMINATION_POLL_SECONDS)
                return
            if self.now < ready_at:
                self.plan.requeue((ready_at - self.now).total_seconds())
                return
            self.condition(
                RESTARTING, False, "GangRecreated", f"attempt {attempt} of the gang started"
            )
            self.status.phase = "Pending"

        if not self.status.is_true(CREATED):
            if self.status.phase not in ("Pending", "Running"):
                self.status.phase = "Pending"
            if stale:  # names still taken by terminating pods
                self.plan.requeue(TERMINATION_POLL_SECONDS)
                return
            missing = tuple(rank for rank in range(nodes) if rank not in current)
            self.plan.create_ranks = missing
            self.status.applied_spec = applied_spec(job)
            message = f"{nodes} pods of gang attempt {attempt}"
            if self.condition(CREATED, True, "GangCreated", message):
                self.event("Normal", "Created", f"created {message}")
            if missing:
                workers = self.status.workers
                workers.pending += len(missing)
                self.condition(
                    RUNNING,
                    False,
                    "PodsPending",
                    f"{workers.pending} of {nodes} pods not running yet",
                )
                self.plan.requeue(self.options.pending_timeout_seconds)
                return

        self.observe_gang(current, nodes, attempt)

    def observe_gang(self, current: dict[int, PodState], nodes: int, attempt: int) -> None:
        job = self.snap.job
        self.pod_events(list(current.values()))
        failures = gang_failures(job, current, attempt)
        if failures:
            self.gang_failed(failures, attempt)
            return
        pods = list(current.values())
        if all(p.phase == "Succeeded" for p in pods):
            self.status.results = decode_results(current[0].termination_message)  # rank 0's
            self.end(SUCCEEDED, "AllPodsSucceeded", f"all {nodes} pods completed")
            return
        if all(p.phase in ("Running", "Succeeded") for p in pods):
            self.status.phase = "Running"
            if self.condition(RUNNING, True, "AllPodsRunning", f"{nodes} pods running"):
                self.event("Normal", "Running", f"all {nodes} pods of attempt {attempt} running")
            self.clear(PENDING_TOO_LONG, "PodsStarted")
            return
        self.status.phase = "Pending"
        pending = [p for p in pods if p.phase not in ("Running", "Succeeded")]
        self.condition(
            RUNNING, False, "PodsPending", f"{len(pending)} of {nodes} pods not running yet"
        )
        created = self.since(CREATED)
        waited = (self.now - created).total_seconds()
        timeout = self.options.pending_timeout_seconds
        if waited >= timeout:
            names = ", ".join(p.name for p in pending[:5]) + (" ..." if len(pending) > 5 else "")
            message = (
                f"{len(pending)} of {nodes} pods Pending for more than {timeout:g}s ({names}): "
                "the cluster may lack resources for the whole gang"
            )
            if self.condition(PENDING_TOO_LONG, True, "PendingTimeout", message):
                self.event("Warning", "PendingTooLong", message)
        else:
            self.plan.requeue(timeout - waited)

    def pod_events(self, pods: list[PodState]) -> None:
        """Warnings about pods that are stuck or died abnormally, once per pod and cause."""
        for pod in pods:
            if pod.phase == "Failed":
                self.event(
                    "Warning",
                    pod.failure_reason,
                    pod.describe(),
                    key=f"{pod.name}/{pod.attempt}/failed",
                )
            elif pod.reason:
                self.event(
                    "Warning",
                    pod.reason,
                    pod.describe(),
                    key=f"{pod.name}/{pod.attempt}/{pod.reason}",
                )

    def gang_failed(self, failures: list[PodState], attempt: int) -> None:
        job = self.snap.job
        # The first pod to die is the cause; the others mostly died of losing it.
        failures.sort(key=lambda f: (f.finished_at or self.now, f.rank or 0))
        limit = job.spec.run_policy.backoff_limit
        what = "; ".join(f.describe() for f in failures)
        fatal = [
            f
            for f in failures
            if f.exit_code is not None and not exit_codes.is_retryable(f.exit_code)
        ]
        if fatal:
            self.end(
                FAILED, fatal[0].failure_reason, f"{what} (not retryable: a restart cannot help)"
            )
            return
        # A disruption (one is enough: the others died of losing that pod) is no failure.
        disrupted = any(f.disrupted for f in failures)
        disruptions = self.status.disruptions + (1 if disrupted else 0)
        if not disrupted and attempt - disruptions >= limit:
            self.end(
                FAILED,
                BACKOFF_LIMIT_EXCEEDED,
                f"{what}; the gang was restarted {attempt} times (backoffLimit {limit})",
            )
            return
        backoff = restart_backoff(self.options, attempt + 1)
        self.status.restarts = attempt + 1
        if disrupted:
            self.status.disruptions = disruptions
            failures.sort(key=lambda f: not f.disrupted)  # the disruption is the cause
        self.status.phase = "Restarting"
        message = f"{what}; recreating the whole gang as attempt {attempt + 1} in {backoff:g}s " + (
            "(a disruption: it does not count against backoffLimit)"
            if disrupted
            else f"(restart {attempt + 1 - disruptions} of at most {limit})"
        )
        self.condition(RESTARTING, True, failures[0].failure_reason, message)
        self.condition(CREATED, False, "Restarting", "the gang is being torn down")
        self.condition(RUNNING, False, "Restarting", message)
        self.event("Warning", "GangRestart", message)
        self.delete(list(self.snap.pods))
        self.set_workers([])
        self.plan.gang_restarted = True
        self.plan.requeue(backoff)


def plan(snapshot: Snapshot, options: OperatorOptions) -> Plan:
    """Decide one reconcile pass. `snapshot.status` is copied, never changed; the plan's
    status is the new one."""
    snap = Snapshot(
        job=snapshot.job,
        problems=snapshot.problems,
        status=snapshot.status.model_copy(deep=True),
        pods=snapshot.pods,
        now=snapshot.now,
        generation=snapshot.generation,
    )
    return _Pass(snap, options).run()
