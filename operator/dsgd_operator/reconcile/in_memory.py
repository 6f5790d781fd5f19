"""What the operator keeps in memory: per-job wake-ups and bookkeeping, shared clients.

Nothing here is the source of truth: after a restart everything is rebuilt
from the API (status, pods). It only saves requests and orders work: one
reconcile loop per job, woken by the job's pod events, and one per
SGDExperiment, woken by its trial jobs' events.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aiohttp

from dsgd_operator.api_status import DistributedSGDJobStatus
from dsgd_operator.experiments.api import SGDExperimentStatus
from dsgd_operator.reconcile.kube import KubeApi
from dsgd_operator.reconcile.options import OperatorOptions


@dataclass
class LoopRuntime:
    """What a reconcile loop of one object keeps: the object as last watched, its
    loop, and the wake-ups that start its passes."""

    namespace: str
    name: str
    poked: asyncio.Event = field(default_factory=asyncio.Event)
    #: The object as last seen by the watch, its metadata.generation, and its loop.
    body: dict = field(default_factory=dict)
    generation: int | None = None
    task: asyncio.Task | None = None
    #: Keys of once-only events already posted.
    posted: set[str] = field(default_factory=set)

    def poke(self) -> None:
        """Ask for a reconcile pass soon (the loop batches pokes that come close together)."""
        self.poked.set()

    def watched(
        self, body: Mapping[str, Any], loop: Callable[[], Coroutine[Any, Any, None]]
    ) -> bool:
        """Record a watch event of the object; start its loop (`loop()`) if none runs yet,
        else wake it when metadata.generation changed (a spec change: the loop decides what
        it means). True when this started the loop."""
        generation = (body.get("metadata") or {}).get("generation")
        changed = generation != self.generation
        self.body = copy.deepcopy(dict(body))
        self.generation = generation
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(loop())
            return True
        if changed:
            self.poke()
        return False

    async def wait(self, timeout: float, debounce: float, stopped: Awaitable | None = None) -> None:
        """Sleep until poked, `stopped` fires or `timeout` passes; then let a burst settle."""
        waiters = [asyncio.ensure_future(self.poked.wait())]
        if stopped is not None:
            waiters.append(asyncio.ensure_future(_wait_for(stopped)))
        try:
            await asyncio.wait(
                waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()
        if debounce:
            await asyncio.sleep(debounce)
        self.poked.clear()


@dataclass
class ExperimentRuntime(LoopRuntime):
    """One SGDExperiment's in-memory state, owned by its reconcile loop."""

    #: The status as this operator last wrote it (newer than the watched body).
    status: SGDExperimentStatus | None = None


@dataclass
class JobRuntime(LoopRuntime):
    """One job's in-memory state, owned by its reconcile loop."""

    #: The status as this operator last wrote it: newer than the watched body
    #: until our own patch comes back through the watch.
    status: DistributedSGDJobStatus | None = None
    #: Service, ConfigMap and PodGroup exist (created or found by this process).
    children_created: bool = False
    last_scrape: float = float("-inf")  # time.monotonic() of the last progress scrape
    phase: str | None = None
    #: Pod name → its last body seen with condition DisruptionTarget (from the watch):
    #: an evicted pod may be gone before a pass lists it, and must still count as a
    #: disruption, not as a pod deleted for no reason.
    disrupted: dict[str, dict] = field(default_factory=dict)
    #: The job's pods as last seen (name → body), fed by the pod watch: a pass plans
    #: from this instead of listing. None until the first pass lists them (after the
    #: operator starts); listed again every pod_relist_seconds, and at the next pass
    #: after the watch re-lists (a DELETED event lost while it was down leaves no trace
    #: but a pod we still hold).
    pods: dict[str, dict] | None = None
    pods_listed_at: float = float("-inf")  # time.monotonic() of that list

    def pod_seen(self, event: str | None, body: dict) -> None:
        """Record a pod event of the watch (nothing before the first list). Event None is
        the watch listing pods (kopf: at its start, and again after "410 Gone"): the next
        pass lists the job's pods. At the operator's start that can be a second list right
        after the first, once per job; a re-listing cannot be told apart from it."""
        if self.pods is None:
            return
        if event is None:
            self.pods_listed_at = float("-inf")
        name = body["metadata"]["name"]
        if event == "DELETED":
            self.pods.pop(name, None)
        else:
            self.pods[name] = body

    def pods_created(self, pods: list[dict]) -> None:
        """Pods this process just created: known before their watch events arrive, so
        that the next pass does not find them missing (an expectation, as controllers
        keep them). A body the watch already delivered is newer and stays."""
        if self.pods is not None:
            for pod in pods:
                self.pods.setdefault(pod["metadata"]["name"], pod)

    def scrape_due(self, interval: float) -> bool:
        return time.monotonic() - self.last_scrape >= interval


async def _wait_for(awaitable: Awaitable) -> None:
    await awaitable


R = TypeVar("R", bound=LoopRuntime)


class Registry(Generic[R]):
    """The runtimes of the objects of one kind this operator currently handles."""

    def __init__(self, runtime: type[R]) -> None:
        self._runtime = runtime
        self._jobs: dict[tuple[str, str], R] = {}

    def get(self, namespace: str, name: str) -> R:
        key = (namespace, name)
        if key not in self._jobs:
            self._jobs[key] = self._runtime(namespace, name)
        return self._jobs[key]

    def poke(self, namespace: str, name: str) -> bool:
        runtime = self._jobs.get((namespace, name))
        if runtime is not None:
            runtime.poke()
        return runtime is not None

    def find(self, namespace: str, name: str) -> R | None:
        return self._jobs.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """Drop a job's runtime and cancel its reconcile loop (the job is gone)."""
        runtime = self._jobs.pop((namespace, name), None)
        if runtime is not None and runtime.task is not None:
            runtime.task.cancel()

    async def stop_all(self) -> None:
        """Cancel every loop and wait for them to end (operator shutdown)."""
        tasks = [r.task for r in self._jobs.values() if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __len__(self) -> int:
        return len(self._jobs)


class JobRegistry(Registry[JobRuntime]):
    """The runtimes of the jobs this operator currently handles."""

    def __init__(self) -> None:
        super().__init__(JobRuntime)

    def phases(self) -> list[str | None]:
        return [runtime.phase for runtime in self._jobs.values()]


@dataclass
class OperatorContext:
    """Everything the handlers share, kept in kopf's memo under MEMO_KEY."""

    options: OperatorOptions
    kube: KubeApi
    jobs: JobRegistry
    http: aiohttp.ClientSession
    metrics_server: object | None = None
    experiments: Registry[ExperimentRuntime] = field(
        default_factory=lambda: Registry(ExperimentRuntime)
    )

    async def close(self) -> None:
        await self.http.close()
        self.kube.close()
        if self.metrics_server is not None:
            server, thread = self.metrics_server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


MEMO_KEY = "dsgd"
