"""The planner cannot crash on any value validation accepts (a property test over the bounds).

The issue-14 probe found jobs that hung forever: `activeDeadlineSeconds:
10**12` overflowed the planner's date arithmetic on every pass, and
`ttlSecondsAfterFinished: 10**15` left a finished job Running. Validation now
caps both; this test draws run policies at the bounds the CRD schema states
(read from it, so it follows any change), statuses as the operator or a
hand-edited status subresource may hold them (times at the ends of the
calendar, malformed ones), pods in every phase and clocks far apart, and
asserts that `plan()` always returns a plan: a status that serializes, a
finite, non-negative requeue.
"""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dsgd_contract.job_status import Phase
from dsgd_operator import api
from dsgd_operator.api_status import Condition, DistributedSGDJobStatus
from dsgd_operator.crd import openapi_schema
from dsgd_operator.manifest import ManifestError, parse_job
from dsgd_operator.reconcile import OperatorOptions
from dsgd_operator.reconcile.plan import Snapshot
from dsgd_operator.reconcile.policy import plan
from dsgd_operator.reconcile.status import PodState

from tests._operator_in_process import job_spec

CASES = 3_000
SEED = 14
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
RUN_POLICY = openapi_schema()["properties"]["spec"]["properties"]["runPolicy"]["properties"]
TIMES = [
    None,
    "2026-01-01T12:00:00.000Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999Z",
    "2026-13-01T00:00:00Z",
    "yesterday",
    "",
]
CLOCKS = [
    T0,
    T0 + timedelta(seconds=1),
    T0 + timedelta(days=3653),
    datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
    datetime(1, 1, 2, tzinfo=UTC),
]


def bounds(field: str) -> list[Any]:
    """None (unset), the minimum, one above it, the maximum, one below it."""
    schema = RUN_POLICY[field]
    low, high = schema.get("minimum", 0), schema["maximum"]
    return [None, low, low + 1, high - 1, high]


def random_job(r: random.Random) -> api.DistributedSGDJob | None:
    policy = {
        "activeDeadlineSeconds": r.choice(bounds("activeDeadlineSeconds")),
        "ttlSecondsAfterFinished": r.choice(bounds("ttlSecondsAfterFinished")),
        "backoffLimit": r.choice(bounds("backoffLimit")),
        "cleanPodPolicy": r.choice(["Running", "All", "None"]),
        "suspend": r.random() < 0.2,
    }
    nodes = r.choice([1, 2, 3, 512])
    manifest = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": job_spec(nodes, **policy),
    }
    try:
        return parse_job(manifest)
    except ManifestError:  # not a value validation accepts: not this test's business
        return None


def random_status(r: random.Random) -> DistributedSGDJobStatus:
    phase: Phase | None = r.choice([None, *Phase.__args__])
    status = DistributedSGDJobStatus(
        phase=phase,
        restarts=r.choice([0, 1, 99, 100, 10**6]),
        disruptions=r.choice([0, 1, 10**6]),
        start_time=r.choice(TIMES),
        completion_time=r.choice(TIMES),
    )
    for kind in ("Created", "Running", "Restarting", "PendingTooLong", "Succeeded", "Failed"):
        if r.random() < 0.4:
            status.conditions.append(
                Condition(
                    type=kind,
                    status=r.choice(["True", "False"]),
                    reason="Probe",
                    last_transition_time=r.choice([t for t in TIMES if t is not None]),
                )
            )
    return status


def random_pods(r: random.Random, nodes: int, attempt: int) -> tuple[PodState, ...]:
    pods = []
    for rank in range(min(nodes, 4) + r.choice([-1, 0, 1])):
        phase = r.choice(["Pending", "Running", "Succeeded", "Failed", "Unknown"])
        pods.append(
            PodState(
                name=f"j-node-{rank}",
                rank=r.choice([rank, rank, None, -1, 10**6]),
                attempt=r.choice([attempt, attempt, attempt - 1, None]),
                phase=phase,
                deleting=r.random() < 0.1,
                exit_code=r.choice([None, 0, 1, 64, 65, 66, 137, 255])
                if phase == "Failed"
                else None,
                reason=r.choice([None, "Evicted", "OOMKilled", "ImagePullBackOff"]),
                finished_at=r.choice([None, T0, datetime(1, 1, 1, tzinfo=UTC)]),
                disrupted=r.random() < 0.1,
            )
        )
    return tuple(pods)


def test_the_planner_returns_a_plan_for_every_valid_job_at_its_bounds() -> None:
    r = random.Random(SEED)
    options = OperatorOptions(restart_backoff_seconds=10, restart_backoff_cap_seconds=300)
    planned = 0
    for _ in range(CASES):
        job = random_job(r)
        status = random_status(r)
        pods = random_pods(r, job.spec.topology.nodes if job else 2, status.restarts)
        snapshot = Snapshot(
            job=job,
            problems=() if job else ("refused",),
            status=status,
            pods=pods,
            now=r.choice(CLOCKS),
            generation=1,
        )
        result = plan(snapshot, options)  # a crash here is the bug this test is about
        json.dumps(result.status.to_wire())
        if result.requeue_after is not None:
            assert math.isfinite(result.requeue_after) and result.requeue_after >= 0
        planned += job is not None
    assert planned > CASES * 0.8, planned


@pytest.mark.parametrize(
    ("field", "finished"), [("activeDeadlineSeconds", None), ("ttlSecondsAfterFinished", T0)]
)
def test_a_deadline_or_ttl_at_its_maximum_is_planned_not_an_overflow(field, finished) -> None:
    """The probe's cases at the new maximum, on a status whose times lie at the calendar's end."""
    job = parse_job(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "j", "namespace": "ns", "uid": "u"},
            "spec": job_spec(2, **{field: RUN_POLICY[field]["maximum"]}),
        }
    )
    late = "9999-12-31T23:59:59.999Z"
    status = DistributedSGDJobStatus(
        phase="Succeeded" if finished else "Running", start_time=late, completion_time=late
    )
    result = plan(Snapshot(job=job, problems=(), status=status, pods=(), now=T0), OperatorOptions())
    assert result.requeue_after is not None and result.requeue_after > 0
