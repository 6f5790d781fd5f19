"""The operator as kopf running our handlers in a thread of the test process.

In-process so that tests can read its metrics and context; against the real API
server (tests/_api_kubelet.py) or the emulator (tests/_kmock_cluster.py),
whichever kubeconfig the client's default location names.
"""

from __future__ import annotations

import asyncio
import threading

import dsgd_operator.reconcile.handlers  # noqa: F401  (registers the handlers with kopf)
import kopf
from dsgd_operator.reconcile.in_memory import MEMO_KEY, OperatorContext
from dsgd_operator.reconcile.options import OperatorOptions

#: Timers short enough for tests, long enough for a loaded 2-core machine.
FAST_OPTIONS = OperatorOptions(
    liveness_port=0,
    metrics_port=0,
    pending_timeout_seconds=30,
    restart_backoff_seconds=0.3,
    restart_backoff_cap_seconds=2,
    progress_interval_seconds=0.5,
    resync_seconds=5,
    debounce_seconds=0.05,
    watch_timeout_seconds=60,
)


def job_spec(nodes: int = 2, **run_policy) -> dict:
    """A small valid job: local SGD, an MLP on synthetic data, the given runPolicy."""
    return {
        "topology": {"nodes": nodes},
        "algorithm": {"name": "local-sgd", "localSteps": 2},
        "optimizer": {"warmupEpochs": 0},
        "training": {"model": "mlp", "epochs": 2, "dataset": {"name": "synthetic"}},
        "runPolicy": run_policy,
    }


class Operator:
    """kopf running our handlers in a thread of its own; stop() then start() = a restart.

    A thread with its own event loop, as in production: when kopf stops, it
    cancels every task of its loop that it did not find there at start-up,
    which must not include the test's own tasks or the emulator's.
    """

    def __init__(self, options: OperatorOptions = FAST_OPTIONS) -> None:
        self.options = options
        self.memo: kopf.Memo | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def context(self) -> OperatorContext:
        return self.memo[MEMO_KEY]

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    clusterwide=not self.options.namespaces,
                    namespaces=list(self.options.namespaces),
                    standalone=True,
                    stop_flag=self._stop,
                    ready_flag=ready,
                    memo=self.memo,
                )
            )
        except BaseException as error:  # reported by stop()
            self.error = error
            ready.set()

    async def start(self) -> None:
        assert self._thread is None, "already running"
        self._stop = threading.Event()
        ready = threading.Event()
        self.memo = kopf.Memo(options=self.options)
        self.error = None
        self._thread = threading.Thread(target=self._run, args=(ready,), name="kopf", daemon=True)
        self._thread.start()
        if not await asyncio.to_thread(ready.wait, 30):
            raise AssertionError("the operator did not start within 30s")
        if self.error is not None:
            raise AssertionError(f"the operator failed to start: {self.error!r}")

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)
        alive = self._thread.is_alive()
        self._thread = None
        assert not alive, "the operator did not stop within 30s"
        assert self.error is None, f"the operator failed: {self.error!r}"
