"""The failure policy and status vocabulary as pure functions: no API, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dsgd_operator import api
from dsgd_operator.api_requests import PLURALS
from dsgd_operator.api_status import Condition, DistributedSGDJobStatus
from dsgd_operator.manifest import parse_job
from dsgd_operator.reconcile import REQUIRED_PERMISSIONS, OperatorOptions
from dsgd_operator.reconcile.applied_spec import effective_job
from dsgd_operator.reconcile.plan import Snapshot
from dsgd_operator.reconcile.policy import plan, restart_backoff
from dsgd_operator.reconcile.status import (
    PodState,
    format_time,
    observe_pod,
    parse_time,
    set_condition,
)

from tests._operator_in_process import job_spec

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
OPTIONS = OperatorOptions(
    restart_backoff_seconds=10, restart_backoff_cap_seconds=60, pending_timeout_seconds=600
)


def job(nodes: int = 2, **run_policy):
    return parse_job(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            "metadata": {"name": "j", "namespace": "ns", "uid": "u", "generation": 3},
            "spec": job_spec(nodes, **run_policy),
        }
    )


def pod(rank: int, phase: str, attempt: int = 0, **fields) -> PodState:
    return PodState(name=f"j-node-{rank}", rank=rank, attempt=attempt, phase=phase, **fields)


def step(status: DistributedSGDJobStatus, pods=(), now=T0, the_job=None, **run_policy):
    the_job = the_job or job(**run_policy)
    return plan(
        Snapshot(job=the_job, problems=(), status=status, pods=tuple(pods), now=now, generation=3),
        OPTIONS,
    )


def condition(status: DistributedSGDJobStatus, kind: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == kind), None)


def new_status() -> DistributedSGDJobStatus:
    """The status of a job the operator has not seen yet."""
    return DistributedSGDJobStatus.model_validate({})


def running_status(**run_policy) -> DistributedSGDJobStatus:
    """The status of a job whose gang (attempt 0) was created and is running."""
    created = step(new_status(), **run_policy).status
    return step(created, [pod(0, "Running"), pod(1, "Running")], **run_policy).status


def test_a_new_job_creates_its_whole_gang():
    result = step(new_status())
    assert result.create_ranks == (0, 1)
    status = result.status
    assert status.phase == "Pending" and status.restarts == 0
    assert status.start_time == format_time(T0) and status.observed_generation == 3
    assert condition(status, "Created").status == "True"
    assert condition(status, "Created").observed_generation == 3
    assert status.applied_spec.topology.nodes == 2
    assert status.to_wire()["appliedSpec"]["topology"]["nodes"] == 2
    assert status.workers.pending == 2
    assert [e.reason for e in result.events] == ["Created"]


def test_an_existing_pod_is_not_created_again():
    assert step(new_status(), [pod(0, "Pending")]).create_ranks == (1,)


def test_the_gang_runs_only_when_every_pod_runs():
    created = step(new_status()).status
    half = step(created, [pod(0, "Running"), pod(1, "Pending")])
    assert half.status.phase == "Pending" and not half.create_ranks
    full = step(half.status, [pod(0, "Running"), pod(1, "Running")])
    assert full.status.phase == "Running"
    assert full.status.to_wire()["workers"] == {
        "pending": 0,
        "running": 2,
        "succeeded": 0,
        "failed": 0,
    }


def test_a_failed_pod_restarts_the_gang_after_a_backoff():
    status = running_status()
    failed = step(status, [pod(0, "Running"), pod(1, "Failed", exit_code=1)])
    assert failed.status.phase == "Restarting" and failed.status.restarts == 1
    assert failed.gang_restarted and failed.delete_pods == ("j-node-0", "j-node-1")
    assert failed.requeue_after == pytest.approx(10)
    assert condition(failed.status, "Restarting").reason == "ExitCode1"

    # Old pods still terminating: nothing new yet.
    later = T0 + timedelta(seconds=30)
    waiting = step(failed.status, [pod(0, "Running", deleting=True)], now=later)
    assert not waiting.create_ranks and waiting.status.phase == "Restarting"
    # Old pods gone, but the backoff has not passed.
    early = step(failed.status, [], now=T0 + timedelta(seconds=4))
    assert not early.create_ranks and early.requeue_after == pytest.approx(6)
    # Backoff passed: attempt 1 is created.
    recreated = step(failed.status, [], now=T0 + timedelta(seconds=10))
    assert recreated.create_ranks == (0, 1) and recreated.status.phase == "Pending"
    assert condition(recreated.status, "Restarting").status == "False"
    assert condition(recreated.status, "Created").status == "True"


def test_backoff_doubles_and_is_capped():
    assert [restart_backoff(OPTIONS, n) for n in range(6)] == [0, 10, 20, 40, 60, 60]


def test_the_backoff_limit_fails_the_job():
    status = running_status(backoffLimit=1)
    status.restarts = 1  # attempt 1 runs (Created is True for it)
    pods = [pod(0, "Failed", attempt=1, exit_code=137), pod(1, "Running", attempt=1)]
    result = step(status, pods, backoffLimit=1)
    assert result.status.phase == "Failed" and result.failure_reason == "BackoffLimitExceeded"
    assert result.status.restarts == 1 and not result.gang_restarted
    # cleanPodPolicy Running: the running pod goes, the failed one stays for its logs.
    assert result.delete_pods == ("j-node-1",)


@pytest.mark.parametrize(
    ("code", "reason"),
    [(64, "InvalidConfig"), (65, "DataError"), (66, "Diverged"), (74, "DiskFull")],
)
def test_non_retryable_exit_codes_fail_at_once(code, reason):
    result = step(running_status(), [pod(0, "Running"), pod(1, "Failed", exit_code=code)])
    assert result.status.phase == "Failed" and result.failure_reason == reason
    assert result.status.restarts == 0 and not result.create_ranks


@pytest.mark.parametrize(
    "pods",
    [
        [pod(0, "Running")],  # node 1 vanished
        [pod(0, "Running"), pod(1, "Running", deleting=True)],
        [pod(0, "Running"), pod(1, "Failed", reason="Evicted")],
    ],
)
def test_deleted_and_evicted_pods_are_failures(pods):
    result = step(running_status(), pods)
    assert result.gang_restarted and result.status.restarts == 1


@pytest.mark.parametrize(
    ("policy", "deleted"),
    [("All", ("j-node-0", "j-node-1")), ("Running", ()), ("None", ())],
)
def test_clean_pod_policy_on_success(policy, deleted):
    pods = [pod(0, "Succeeded", exit_code=0), pod(1, "Succeeded", exit_code=0)]
    result = step(running_status(cleanPodPolicy=policy), pods, cleanPodPolicy=policy)
    assert result.status.phase == "Succeeded"
    assert result.status.completion_time == format_time(T0)
    assert result.delete_pods == deleted


def test_ttl_after_finished_deletes_the_job_when_due():
    pods = [pod(0, "Succeeded", exit_code=0), pod(1, "Succeeded", exit_code=0)]
    done = step(running_status(ttlSecondsAfterFinished=60), pods, ttlSecondsAfterFinished=60)
    assert not done.delete_job and done.requeue_after == pytest.approx(60)
    later = step(done.status, pods, now=T0 + timedelta(seconds=61), ttlSecondsAfterFinished=60)
    assert later.delete_job


def test_active_deadline_fails_a_running_job():
    status = running_status(activeDeadlineSeconds=100)
    pods = [pod(0, "Running"), pod(1, "Running")]
    assert step(status, pods, activeDeadlineSeconds=100).requeue_after <= 100
    late = step(status, pods, now=T0 + timedelta(seconds=100), activeDeadlineSeconds=100)
    assert late.failure_reason == "DeadlineExceeded"
    assert late.delete_pods == ("j-node-0", "j-node-1")


def test_suspend_and_resume():
    status = running_status(suspend=True)
    pods = [pod(0, "Running"), pod(1, "Running")]
    suspended = step(status, pods, suspend=True)
    assert suspended.status.phase == "Suspended" and len(suspended.delete_pods) == 2
    later = T0 + timedelta(hours=1)
    resumed = step(suspended.status, [], now=later)
    assert resumed.create_ranks == (0, 1) and resumed.status.restarts == 0
    assert resumed.status.start_time == format_time(later)  # the deadline clock restarts


def test_pods_pending_past_the_timeout_are_reported():
    created = step(new_status()).status
    pods = [pod(0, "Pending"), pod(1, "Running")]
    assert condition(step(created, pods).status, "PendingTooLong") is None
    late = step(created, pods, now=T0 + timedelta(seconds=601))
    stuck = condition(late.status, "PendingTooLong")
    assert stuck.status == "True" and "j-node-0" in stuck.message
    assert "PendingTooLong" in [e.reason for e in late.events]


def test_a_refused_spec_creates_nothing():
    result = plan(
        Snapshot(
            job=None,
            problems=("spec.topology.nodes: too many",),
            status=new_status(),
            pods=(),
            now=T0,
        ),
        OPTIONS,
    )
    assert not result.create_ranks and result.status.phase == "Pending"
    invalid = condition(result.status, "Invalid")
    assert invalid.status == "True" and "spec.topology.nodes" in invalid.message


def test_topology_and_algorithm_stay_as_applied_while_the_job_runs():
    status = running_status()
    bigger = job(nodes=4)
    effective, problems = effective_job(bigger, status)
    assert effective.spec.topology.nodes == 2
    assert len(problems) == 1 and "spec.topology is immutable" in problems[0]
    result = plan(
        Snapshot(
            job=effective,
            problems=problems,
            status=status,
            pods=(pod(0, "Running"), pod(1, "Running")),
            now=T0,
        ),
        OPTIONS,
    )
    assert result.status.phase == "Running" and not result.delete_pods
    assert condition(result.status, "Invalid").reason == "ImmutableField"
    # Once the job has finished, the spec may change freely.
    assert effective_job(bigger, status.model_copy(update={"phase": "Succeeded"}))[1] == ()


def test_training_settings_stay_as_applied_while_the_job_runs():
    status = running_status()
    longer = job()
    longer = longer.model_copy(
        update={
            "spec": longer.spec.model_copy(
                update={
                    "training": longer.spec.training.model_copy(update={"epochs": 999}),
                    "optimizer": longer.spec.optimizer.model_copy(update={"learning_rate": 0.5}),
                }
            )
        }
    )
    effective, problems = effective_job(longer, status)
    assert effective.spec.training == job().spec.training
    assert effective.spec.optimizer == job().spec.optimizer
    assert sorted(p.split(" ")[0] for p in problems) == ["spec.optimizer", "spec.training"]


def test_conditions_keep_their_transition_time_while_unchanged():
    conditions: list[Condition] = []
    assert set_condition(conditions, "Running", True, "A", "", T0, 1)
    assert not set_condition(conditions, "Running", True, "B", "m", T0 + timedelta(1), 2)
    assert conditions[0].last_transition_time == format_time(T0)
    assert conditions[0].reason == "B" and conditions[0].observed_generation == 2
    assert parse_time(conditions[0].last_transition_time) == T0


def test_observe_pod_reads_exit_codes_reasons_and_the_metrics_port():
    raw = {
        "metadata": {
            "name": "j-node-1",
            "labels": {"dsgd.io/node-rank": "1", "dsgd.io/attempt": "2"},
        },
        "spec": {
            "containers": [
                {
                    "name": "trainer",
                    "ports": [
                        {"name": "rendezvous", "containerPort": 29500},
                        {"name": "metrics", "containerPort": 9400},
                    ],
                }
            ]
        },
        "status": {
            "phase": "Failed",
            "podIP": "10.1.2.3",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        },
    }
    state = observe_pod(raw)
    assert (state.rank, state.attempt, state.exit_code) == (1, 2, 137)
    assert state.failure_reason == "OOMKilled" and state.metrics_port == 9400
    waiting = observe_pod(
        {
            "metadata": {"name": "p"},
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "trainer",
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "no such image"}
                        },
                    }
                ],
            },
        }
    )
    assert waiting.reason == "ImagePullBackOff" and waiting.message == "no such image"


def test_options_from_env():
    options = OperatorOptions.from_env(
        {
            "DSGD_NAMESPACES": "team-a, team-b,",
            "DSGD_TRAINER_IMAGE": "registry.local/trainer:1",
            "DSGD_RESTART_BACKOFF_SECONDS": "2.5",
            "DSGD_METRICS_PORT": "0",
        }
    )
    assert options.namespaces == ("team-a", "team-b")
    assert options.trainer_image == "registry.local/trainer:1"
    assert options.restart_backoff_seconds == 2.5 and options.metrics_port == 0
    with pytest.raises(ValueError, match="DSGD_LIVENESS_PORT='http'"):
        OperatorOptions.from_env({"DSGD_LIVENESS_PORT": "http"})
    with pytest.raises(ValueError, match="pending_timeout_seconds"):
        OperatorOptions(pending_timeout_seconds=-1)


def test_permissions_cover_everything_the_operator_creates_and_deletes():
    granted = {(p.resource, verb) for p in REQUIRED_PERMISSIONS for verb in p.verbs}
    for kind, plural in PLURALS.items():
        if kind != api.KIND:
            assert (plural, "create") in granted, kind
    # Only pods are deleted by the operator (gang restarts, cleanPodPolicy, suspend); the
    # other children go with their job through ownerReferences (the garbage collector).
    assert {
        ("pods", "delete"),
        ("pods", "list"),
        ("pods", "watch"),
        ("events", "create"),
        (f"{api.PLURAL}/status", "patch"),
        (api.PLURAL, "delete"),
    } <= granted


def test_the_first_pod_to_die_is_named_as_the_cause():
    pods = [
        pod(0, "Failed", exit_code=1, finished_at=T0 + timedelta(seconds=2)),
        pod(1, "Failed", exit_code=137, finished_at=T0 + timedelta(seconds=1)),
    ]
    restarting = condition(step(running_status(), pods).status, "Restarting")
    assert restarting.reason == "Signal9"
    assert restarting.message.startswith("j-node-1 exited with code 137")


def test_a_succeeded_gang_stores_node_zeros_results_message_in_the_status():
    from dsgd_contract.run_results import encode_results

    summary = {"final_test_accuracy": 0.91, "samples": 640, "sync_rounds": {"global": 4}}
    records = [
        {"epoch": 1, "samples": 320, "wall_seconds": 1.5, "train_loss": 0.7,
         "test_accuracy": 0.8, "communicated_bytes": 100},
        {"epoch": 2, "samples": 640, "wall_seconds": 3.0, "train_loss": 0.4,
         "test_accuracy": 0.91, "communicated_bytes": 200},
    ]  # fmt: skip
    message = encode_results(summary, records)
    done = [pod(0, "Succeeded", termination_message=message), pod(1, "Succeeded")]
    status = step(running_status(), done).status
    assert status.phase == "Succeeded"
    wire = status.to_wire()["results"]
    assert wire["finalTestAccuracy"] == 0.91 and wire["samples"] == 640
    assert wire["syncRounds"] == {"global": 4} and wire["evaluations"] == 2
    assert [p["testAccuracy"] for p in wire["curve"]] == [0.8, 0.91]
    # A message that is not ours (a crash text) leaves no results; the job still succeeds.
    garbled = [pod(0, "Succeeded", termination_message="Segmentation fault"), pod(1, "Succeeded")]
    status = step(running_status(), garbled).status
    assert status.phase == "Succeeded" and status.results is None


def test_observe_pod_reads_the_trainers_termination_message():
    body = {
        "metadata": {"name": "j-node-0", "labels": {"dsgd.io/node-rank": "0"}},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 0, "message": "{}"}}}
            ],
        },
    }
    assert observe_pod(body).termination_message == "{}"
