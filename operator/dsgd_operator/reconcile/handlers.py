"""kopf handlers: thin, they only route events to a job's reconcile loop and call the API.

`kopf run -m dsgd_operator.reconcile.handlers` works as well as `dsgd operator`;
the operator's options then come from DSGD_* environment variables.

One long-lived loop (an asyncio task) per job does every reconcile pass, so the
passes of one job never overlap; pod events and spec changes only wake it. The
loop also starts for every existing job when the operator (re)starts (the
watch lists them first), which is how a restarted operator picks up where it
left off (never duplicating pods: they have fixed names and the loop reads what
exists first). The job carries no finalizer: its children are deleted by the
garbage collector through their owner references, operator running or not.
SGDExperiments' handlers are in `experiment_handlers` (registered on import).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import aiohttp
import kopf
from dsgd_contract.pod import JOB_NAME_LABEL

from dsgd_operator import api
from dsgd_operator.reconcile import (
    experiment_handlers,  # noqa: F401  (registers them)
    metrics,
)
from dsgd_operator.reconcile.in_memory import MEMO_KEY, JobRegistry, JobRuntime, OperatorContext
from dsgd_operator.reconcile.kopf_main import configure_kopf
from dsgd_operator.reconcile.kube import KubeApi, load_configuration
from dsgd_operator.reconcile.options import OperatorOptions
from dsgd_operator.reconcile.reconciler import reconcile_once

#: Longest wait between two passes of a loop that keeps failing (API down).
MAX_ERROR_BACKOFF_SECONDS = 60.0


def _context(memo: Any) -> OperatorContext:
    return memo[MEMO_KEY]


@kopf.on.startup()
async def start(
    settings: kopf.OperatorSettings, memo: Any, logger: logging.Logger, **_: Any
) -> None:
    options = memo.get("options") or OperatorOptions.from_env()
    configure_kopf(settings, options)
    configuration = await asyncio.to_thread(load_configuration)
    ctx = OperatorContext(
        options=options,
        kube=KubeApi(configuration),
        jobs=JobRegistry(),
        http=aiohttp.ClientSession(),
    )
    if options.metrics_port:
        ctx.metrics_server = metrics.serve(options.metrics_port, options.listen_address)
        logger.info(
            "Operator metrics at %s:%d/metrics", options.listen_address, options.metrics_port
        )
    metrics.set_job_phases([])
    memo[MEMO_KEY] = ctx


@kopf.on.cleanup()
async def stop(memo: Any, **_: Any) -> None:
    ctx = memo.get(MEMO_KEY)
    if ctx is not None:
        await ctx.jobs.stop_all()
        await ctx.experiments.stop_all()
        await ctx.close()


@kopf.on.probe(id="jobs")
def count_jobs(memo: Any, **_: Any) -> int:
    """Liveness detail: how many jobs this operator is reconciling."""
    return len(_context(memo).jobs)


async def job_loop(ctx: OperatorContext, runtime: JobRuntime, logger: Any) -> None:
    """The job's reconcile loop: a pass now, then whenever poked or due; ends when cancelled."""
    errors = 0
    while True:
        started = time.perf_counter()
        try:
            due = await reconcile_once(ctx, runtime, runtime.body, logger)
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
            errors = 0
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure: log it, count it, retry later
            errors += 1
            metrics.RECONCILE_ERRORS.inc()
            # A failed pass is timed too: slow failures (API timeouts) are what the
            # latency histogram is for.
            metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
            due = min(MAX_ERROR_BACKOFF_SECONDS, 2.0**errors)
            logger.error(f"Reconcile failed (retrying in {due:g}s): {error}")
        # ±10 % jitter: jobs created in one burst would otherwise resync in that burst forever.
        resync = ctx.options.resync_seconds * random.uniform(0.9, 1.1)
        wait = resync if due is None else min(due, resync)
        await runtime.wait(wait, ctx.options.debounce_seconds)


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def job_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: Any,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Start the job's loop when first seen (also every existing job on operator start),
    wake it on a spec change, stop it when the job is gone. Async, as pod_changed:
    kopf runs sync handlers in threads, and the loops' wake-ups are asyncio events.

    A watch handler, not a kopf daemon or on-delete handler: those make kopf put a
    finalizer on the job, and a job deleted while no operator runs would then hang
    forever. Without one, the garbage collector deletes the children through their
    owner references.
    """
    ctx = _context(memo)
    if type == "DELETED":
        ctx.jobs.forget(namespace, name)
        metrics.job_forgotten(namespace, name)
        metrics.set_job_phases(ctx.jobs.phases())
        return
    runtime = ctx.jobs.get(namespace, name)
    # A spec change (suspend, a refused immutable change, ...) wakes the loop, which decides.
    if runtime.watched(body, lambda: job_loop(ctx, runtime, logger)):
        metrics.job_seen(namespace, name)


@kopf.on.event("v1", "pods", labels={JOB_NAME_LABEL: kopf.PRESENT})
async def pod_changed(
    type: str | None,
    namespace: str,
    labels: kopf.Labels,
    body: kopf.Body,
    memo: Any,
    **_: Any,
) -> None:
    runtime = _context(memo).jobs.find(namespace, labels[JOB_NAME_LABEL])
    if runtime is None:
        return
    # The event's own object, not a copy: each watch event is a freshly parsed object that
    # kopf only reads, and nothing here writes to it. (Deep copies of every pod event were
    # a large share of the operator's CPU in a burst.)
    pod = dict(body)
    runtime.pod_seen(type, pod)
    conditions = (body.get("status") or {}).get("conditions") or []
    if any(c.get("type") == "DisruptionTarget" and c.get("status") == "True" for c in conditions):
        runtime.disrupted[body["metadata"]["name"]] = pod
    runtime.poke()
