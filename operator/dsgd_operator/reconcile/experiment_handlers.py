"""kopf handlers of SGDExperiments: thin, they route events to an experiment's loop.

As for jobs (dsgd_operator.reconcile.handlers), one long-lived loop per
experiment does every pass (`experiment_reconciler.reconcile_experiment`), so
passes never overlap; events only wake it. No finalizer: the trials go with
the experiment through their ownerReferences (the garbage collector).

The trigger is a watch, not a timer: the operator watches every
DistributedSGDJob anyway (its job loops), and kopf hands each event to every
handler of the resource, so a second handler filtered on the label
`dsgd.io/experiment` costs no request. A trial that changes phase wakes its
experiment at once (a timer would lag by its period and poll idle experiments);
the loop still runs every resync period, should an event have been lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from dsgd_contract.experiment import EXPERIMENT_LABEL

from dsgd_operator import api
from dsgd_operator.experiments.api import PLURAL
from dsgd_operator.reconcile.experiment_reconciler import reconcile_experiment
from dsgd_operator.reconcile.in_memory import MEMO_KEY, ExperimentRuntime, OperatorContext

#: Longest wait between two passes of a loop that keeps failing (API down).
MAX_ERROR_BACKOFF_SECONDS = 60.0


async def experiment_loop(
    ctx: OperatorContext, runtime: ExperimentRuntime, logger: logging.Logger
) -> None:
    """The experiment's reconcile loop: a pass now, then whenever poked or due."""
    errors = 0
    while True:
        try:
            await reconcile_experiment(ctx, runtime, runtime.body, logger)
            errors, due = 0, ctx.options.resync_seconds
        except asyncio.CancelledError:
            raise
        except Exception as error:  # any failure: log it, retry later
            errors += 1
            due = min(MAX_ERROR_BACKOFF_SECONDS, 2.0**errors, ctx.options.resync_seconds)
            logger.error(f"Experiment reconcile failed (retrying in {due:g}s): {error}")
        await runtime.wait(due, ctx.options.debounce_seconds)


@kopf.on.event(api.GROUP, api.VERSION, PLURAL)
async def experiment_event(
    type: str | None,
    body: kopf.Body,
    namespace: str,
    name: str,
    memo: Any,
    logger: logging.Logger,
    **_: Any,
) -> None:
    """Start the experiment's loop when first seen (every existing one on operator start),
    wake it on a spec change (suspend, resume, a fixed template), stop it when it is gone."""
    ctx: OperatorContext = memo[MEMO_KEY]
    if type == "DELETED":
        ctx.experiments.forget(namespace, name)
        return
    runtime = ctx.experiments.get(namespace, name)
    runtime.watched(body, lambda: experiment_loop(ctx, runtime, logger))


@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL, labels={EXPERIMENT_LABEL: kopf.PRESENT})
async def trial_changed(namespace: str, labels: kopf.Labels, memo: Any, **_: Any) -> None:
    """A trial job was created, changed (its status) or deleted: wake its experiment."""
    runtime = memo[MEMO_KEY].experiments.find(namespace, labels[EXPERIMENT_LABEL])
    if runtime is not None:
        runtime.poke()
