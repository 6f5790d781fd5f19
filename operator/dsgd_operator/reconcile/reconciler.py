"""One reconcile pass of a job: read, plan (pure), then carry the plan out with API calls.

Every step is idempotent, so a pass may be cut off anywhere (operator restart,
API error) and simply run again: objects have fixed names and a 409 means
"already there"; status is written only after the actions it reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf
from dsgd_contract.job_status import RECONCILE_ERROR
from dsgd_contract.pod import job_labels

from dsgd_operator import api
from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.api_status import DistributedSGDJobStatus, Progress
from dsgd_operator.builders import (
    build_config_map,
    build_member_pod,
    build_pod_disruption_budget,
    build_pod_group,
    build_service,
)
from dsgd_operator.manifest import ManifestError, parse_job
from dsgd_operator.reconcile import metrics
from dsgd_operator.reconcile.applied_spec import effective_job
from dsgd_operator.reconcile.in_memory import JobRuntime, OperatorContext
from dsgd_operator.reconcile.kube import ApiError
from dsgd_operator.reconcile.plan import Plan, Snapshot
from dsgd_operator.reconcile.policy import plan
from dsgd_operator.reconcile.progress_scrape import (
    checkpoint_fallback_event,
    metrics_url,
    scrape,
)
from dsgd_operator.reconcile.status import PodState, observe_pod, set_condition
from dsgd_operator.template_policy import DEFAULT_POLICY, TemplatePolicy, policy_problems


def parse_body(
    body: Mapping[str, Any], policy: TemplatePolicy = DEFAULT_POLICY
) -> tuple[DistributedSGDJob | None, tuple[str, ...]]:
    """The job from kopf's body, or None and the problems that make the operator refuse it:
    the spec's own, or what the installation's template policy does not allow."""
    document = {key: body[key] for key in ("apiVersion", "kind", "metadata", "spec") if key in body}
    name = (body.get("metadata") or {}).get("name", "?")
    try:
        job = parse_job(document, source=f"{api.KIND} {name}")
    except ManifestError as error:
        return None, error.problems
    refused = policy_problems(job, policy)
    return (None, refused) if refused else (job, ())


async def create_gang(
    ctx: OperatorContext,
    runtime: JobRuntime,
    job: DistributedSGDJob,
    ranks: tuple[int, ...],
    attempt: int,
) -> None:
    """Service, ConfigMap, PDB and PodGroup (once), then the pods of `ranks`, concurrently."""
    namespace = runtime.namespace
    if not runtime.children_created:
        pod_group = build_pod_group(job, ctx.options.build_settings)
        budget = build_pod_disruption_budget(job)
        for obj in (build_service(job), build_config_map(job), budget, pod_group):
            if obj is None:
                continue
            try:
                await ctx.kube.create(obj, namespace)
            except ApiError as error:
                if obj is pod_group and error.status == 404:
                    message = (
                        f"the PodGroup API {obj['apiVersion']} is not installed: "
                        f"install {job.spec.scheduling.scheduler_name} or drop "
                        "spec.scheduling.schedulerName"
                    )
                    status = {"reason": "NotFound", "message": message}
                    raise ApiError("POST", obj["apiVersion"], 404, json.dumps(status)) from None
                raise
        runtime.children_created = True
    pods = [build_member_pod(job, rank, ctx.options.build_settings, attempt) for rank in ranks]
    created = await asyncio.gather(*(ctx.kube.create(pod, namespace) for pod in pods))
    runtime.pods_created(pods)
    metrics.PODS_CREATED.inc(sum(created))


async def current_pods(ctx: OperatorContext, runtime: JobRuntime) -> list[dict]:
    """The job's pods: listed on the first pass, every pod_relist_seconds and after the
    watch re-listed; else as watched (a list per job per resync was most of the operator's
    CPU and of the server's reads with hundreds of jobs: docs/benchmarks/operator.md)."""
    stale = time.monotonic() - runtime.pods_listed_at > ctx.options.pod_relist_seconds
    if runtime.pods is None or stale:
        listed = await ctx.kube.list_pods(runtime.namespace, job_labels(runtime.name))
        runtime.pods = {pod["metadata"]["name"]: pod for pod in listed}
        runtime.pods_listed_at = time.monotonic()
    return list(runtime.pods.values())


async def delete_pods(ctx: OperatorContext, namespace: str, names: tuple[str, ...]) -> None:
    await asyncio.gather(*(ctx.kube.delete("v1", "Pod", namespace, name) for name in names))


async def refresh_progress(
    ctx: OperatorContext, runtime: JobRuntime, result: Plan, pods: tuple[PodState, ...]
) -> None:
    """While Running, copy node 0's latest metrics into status.progress (every interval)."""
    interval = ctx.options.progress_interval_seconds
    if result.status.phase != "Running":
        return
    result.requeue(interval)
    if not runtime.scrape_due(interval):
        return
    attempt = result.status.restarts
    node0 = next((p for p in pods if p.rank == 0 and p.attempt == attempt), None)
    url = metrics_url(node0) if node0 is not None else None
    if url is None:
        return
    runtime.last_scrape = time.monotonic()
    progress = await scrape(ctx.http, url)
    if progress is not None:
        result.status.progress = (result.status.progress or Progress()).updated_with(progress)
        fallback = checkpoint_fallback_event(progress, attempt)
        if fallback is not None:
            result.events.append(fallback)


def disrupted_and_gone(runtime: JobRuntime, listed: list[dict]) -> tuple[PodState, ...]:
    """Pods of the current attempt that the watch saw disrupted and that are gone now: they
    count as deleting, disrupted pods (an eviction, not a failure); older ones are dropped."""
    attempt = runtime.status.restarts if runtime.status is not None else 0
    names = {pod["metadata"]["name"] for pod in listed}
    gone = []
    for pod_name, body in list(runtime.disrupted.items()):
        state = observe_pod(body)
        if state.attempt != attempt:
            del runtime.disrupted[pod_name]
        elif pod_name not in names:
            gone.append(replace(state, deleting=True))
    return tuple(gone)


async def report_refusal(
    ctx: OperatorContext,
    runtime: JobRuntime,
    body: Mapping[str, Any],
    error: ApiError,
    snapshot: Snapshot,
) -> None:
    """An API refusal met while acting (PodSecurity or quota 403, missing API 404, invalid
    object 422, ...) reaches the user: condition ReconcileError with the server's reason and
    message on the status as it was (the refused actions did not happen), and a Warning
    Event ApiRefused, once per distinct message."""
    status = (runtime.status or DistributedSGDJobStatus()).model_copy(deep=True)
    message = f"{error.status} {error.reason}: {error.message}"
    set_condition(
        status.conditions,
        RECONCILE_ERROR,
        True,
        error.reason,
        message,
        snapshot.now,
        snapshot.generation,
    )
    if status != runtime.status:
        await ctx.kube.patch_job_status(runtime.namespace, runtime.name, status.to_wire())
        runtime.status = status
    key = f"refused/{message}"
    if key not in runtime.posted:
        kopf.event(body, type="Warning", reason="ApiRefused", message=message)
        runtime.posted.add(key)


async def reconcile_once(
    ctx: OperatorContext,
    runtime: JobRuntime,
    body: Mapping[str, Any],
    logger: logging.Logger | logging.LoggerAdapter,
) -> float | None:
    """Run one pass for the job in `body`; returns seconds until the next pass is due.

    The caller (handlers.job_loop) times it and counts its failures."""
    namespace, name = runtime.namespace, runtime.name
    if runtime.status is None:
        runtime.status = DistributedSGDJobStatus.model_validate(body.get("status") or {})
    job, problems = parse_body(body, ctx.options.template_policy)
    pods: tuple[PodState, ...] = ()
    if job is not None:
        job, problems = effective_job(job, runtime.status)
        raw_pods = await current_pods(ctx, runtime)
        pods = tuple(observe_pod(pod) for pod in raw_pods) + disrupted_and_gone(runtime, raw_pods)
    snapshot = Snapshot(
        job=job,
        problems=problems,
        status=runtime.status,
        pods=pods,
        now=datetime.now(UTC),
        generation=(body.get("metadata") or {}).get("generation"),
    )
    result = plan(snapshot, ctx.options)
    try:
        if result.create_ranks:
            await create_gang(ctx, runtime, job, result.create_ranks, result.status.restarts)
        if result.delete_pods:
            await delete_pods(ctx, namespace, result.delete_pods)
    except ApiError as error:
        if error.refused:
            await report_refusal(ctx, runtime, body, error, snapshot)
        raise  # the loop retries with a backoff: the user may fix the cause meanwhile
    if result.status.is_true(RECONCILE_ERROR):
        set_condition(
            result.status.conditions,
            RECONCILE_ERROR,
            False,
            "Reconciled",
            "the API server accepted every request of the last pass",
            snapshot.now,
            snapshot.generation,
        )
    await refresh_progress(ctx, runtime, result, pods)
    if result.status != runtime.status:
        await ctx.kube.patch_job_status(namespace, name, result.status.to_wire())
        runtime.status = result.status
    for event in result.events:
        if event.key is not None and event.key in runtime.posted:
            continue
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        if event.key is not None:
            runtime.posted.add(event.key)
    if result.gang_restarted:
        metrics.gang_restarted(namespace, name)
    if result.failure_reason:
        metrics.job_failed(namespace, name, result.failure_reason)
    runtime.phase = result.status.phase
    metrics.job_phase(namespace, name, runtime.phase)
    metrics.set_job_phases(ctx.jobs.phases())
    if result.delete_job:
        logger.info("ttlSecondsAfterFinished passed: deleting the job")
        await ctx.kube.delete(api.API_VERSION, api.KIND, namespace, name)
    return result.requeue_after
