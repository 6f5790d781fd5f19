"""kopf handlers: thin, they only route events to a job's reconcile loop and call the API.

`kopf run -m dsgd_operator.reconcile.handlers` works as well as `dsgd operator`;
the operator's options then come from DSGD_* environment variables.

One long-lived loop (a kopf daemon) per job does every reconcile pass, so the
passes of one job never overlap; pod events and spec changes only wake it. The
loop also starts for every existing job when the operator (re)starts, which is
how a restarted operator picks up where it left off (never duplicating pods:
they have fixed names and the loop reads what exists first).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import kopf

from dsgd_operator import api
from dsgd_operator.build import JOB_NAME_LABEL
from dsgd_operator.reconcile import metrics
from dsgd_operator.reconcile.kube import KubeApi, load_configuration
from dsgd_operator.reconcile.reconciler import delete_children, reconcile_once
from dsgd_operator.reconcile.runtime import MEMO_KEY, JobRegistry, OperatorContext
from dsgd_operator.reconcile.settings import OperatorOptions, configure_kopf

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
        await ctx.close()


@kopf.on.probe(id="jobs")
def count_jobs(memo: Any, **_: Any) -> int:
    """Liveness detail: how many jobs this operator is reconciling."""
    return len(_context(memo).jobs)


@kopf.daemon(api.GROUP, api.VERSION, api.PLURAL, cancellation_backoff=1.0, cancellation_timeout=2.0)
async def job_loop(
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: Any,
    logger: logging.Logger,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    """The job's reconcile loop: a pass now, then whenever poked or due."""
    ctx = _context(memo)
    runtime = ctx.jobs.get(namespace, name)
    errors = 0
    while not stopped:
        try:
            due = await reconcile_once(ctx, runtime, body, logger)
            errors = 0
        except Exception as error:  # any failure: log it (a Warning event too), retry later
            errors += 1
            due = min(MAX_ERROR_BACKOFF_SECONDS, 2.0**errors)
            logger.error(f"Reconcile failed (retrying in {due:g}s): {error}")
        if stopped:
            break
        wait = ctx.options.resync_seconds if due is None else min(due, ctx.options.resync_seconds)
        await runtime.wait(wait, ctx.options.debounce_seconds, stopped.wait())


@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL)
def spec_changed(namespace: str, name: str, memo: Any, **_: Any) -> None:
    """suspend, a refused immutable change, ...: the loop decides."""
    _context(memo).jobs.poke(namespace, name)


@kopf.on.event("v1", "pods", labels={JOB_NAME_LABEL: kopf.PRESENT})
def pod_changed(namespace: str, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    _context(memo).jobs.poke(namespace, labels[JOB_NAME_LABEL])


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL)
async def job_deleted(namespace: str, name: str, memo: Any, **_: Any) -> None:
    """Delete the job's objects now (owner references would too, but later and only on a
    cluster with a garbage collector), then forget it."""
    ctx = _context(memo)
    await delete_children(ctx, namespace, name)
    ctx.jobs.forget(namespace, name)
    metrics.set_job_phases(ctx.jobs.phases())
