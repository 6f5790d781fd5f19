"""When a job's reconcile pass lists its pods, and when it plans from what the pod watch fed.

The pod watch keeps a job's pods between lists; a list costs the server a scan of every
pod of the namespace and the operator a JSON parse, so a job lists its pods on its first
pass, every `pod_relist_seconds`, and after the watch itself re-listed (kopf's event type
None, after "410 Gone"), the one moment a DELETED event can have been lost.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from dsgd_operator.reconcile.in_memory import JobRuntime
from dsgd_operator.reconcile.options import OperatorOptions
from dsgd_operator.reconcile.reconciler import current_pods


def pod(name: str, version: str = "1") -> dict:
    return {"metadata": {"name": name, "resourceVersion": version}}


class ListingServer:
    """The pods a server holds and how often they were listed (the only API call here)."""

    def __init__(self, *names: str) -> None:
        self.pods = {name: pod(name) for name in names}
        self.lists = 0

    async def list_pods(self, namespace: str, labels: dict) -> list[dict]:
        self.lists += 1
        return list(self.pods.values())


def names(pods: list[dict]) -> set[str]:
    return {p["metadata"]["name"] for p in pods}


def test_pods_are_listed_once_then_fed_by_the_watch_and_listed_again_after_a_relist() -> None:
    async def scenario() -> None:
        server = ListingServer("j-0", "j-1")
        ctx = SimpleNamespace(kube=server, options=OperatorOptions(pod_relist_seconds=600))
        runtime = JobRuntime("ns", "j")

        assert names(await current_pods(ctx, runtime)) == {"j-0", "j-1"}
        assert server.lists == 1

        # Watch events between lists: no list, the pass sees them.
        runtime.pod_seen("MODIFIED", pod("j-0", "2"))
        runtime.pod_seen("ADDED", pod("j-2"))
        server.pods["j-2"] = pod("j-2")
        assert names(await current_pods(ctx, runtime)) == {"j-0", "j-1", "j-2"}
        assert server.lists == 1

        # j-1 is deleted while the watch is down; its DELETED event never comes. The watch
        # re-lists (type None for each pod that exists): the next pass lists, and j-1 is gone.
        del server.pods["j-1"]
        for body in server.pods.values():
            runtime.pod_seen(None, body)
        assert names(await current_pods(ctx, runtime)) == {"j-0", "j-2"}
        assert server.lists == 2

    asyncio.run(scenario())


def test_pods_are_listed_again_after_the_relist_period_even_without_events() -> None:
    async def scenario() -> None:
        server = ListingServer("j-0")
        ctx = SimpleNamespace(kube=server, options=OperatorOptions(pod_relist_seconds=1.0))
        runtime = JobRuntime("ns", "j")
        await current_pods(ctx, runtime)
        del server.pods["j-0"]  # and the DELETED event is lost
        assert names(await current_pods(ctx, runtime)) == {"j-0"}  # within the period
        await asyncio.sleep(1.1)
        assert await current_pods(ctx, runtime) == []
        assert server.lists == 2

    asyncio.run(scenario())
