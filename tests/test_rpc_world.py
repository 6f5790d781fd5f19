"""Downpour's RPC world is left in order: the store's host (member 0, parameter server 0)
outlives every other member's graceful shutdown.

torch's shutdown ends with each member counting its calls through the store member 0
hosts. A member slower to finish than member 0 (a slow link) used to find the store
gone ("Connection reset by peer") and exit 1 after a complete run. Here member 1 is made
that slow on purpose: after torch's own shutdown returns it waits, then uses the store,
as that last call count does. Oracle: torch's real store and the members' clocks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from dsgd_contract.pod import COLLECTIVE_TIMEOUT_ENV, PS_ADDR_ENV, PS_PORT_ENV
from dsgd_operator.local_run import free_port

from tests._dist_harness import forkserver_stopped_after_module as forkserver_stopped_after_module
from tests._dist_harness import run_on_ranks

#: How long member 1 still uses the store after its shutdown returned.
SLOW_SECONDS = 1.5


def _member(rank: int, world_size: int, port: int) -> dict[str, float]:
    import torch.distributed.rpc as rpc
    from dsgd_trainer.parameter_server import rpc_world

    os.environ.update(
        {PS_ADDR_ENV: "127.0.0.1", PS_PORT_ENV: str(port), COLLECTIVE_TIMEOUT_ENV: "60"}
    )
    name = rpc_world.server_name(0) if rank == 0 else rpc_world.worker_name(rank - 1)
    rpc_world.join(name, rank, world_size)
    times: dict[str, float] = {}
    if rank == 1:
        shutdown = rpc.shutdown

        def slow_shutdown(graceful: bool) -> None:
            store = rpc.api._get_current_rpc_agent().store
            shutdown(graceful=graceful)
            time.sleep(SLOW_SECONDS)
            store.add("probe", 1)  # fails if member 0 has gone, and its store with it
            times["store_used"] = time.time()

        rpc.shutdown = slow_shutdown
    rpc_world.leave(graceful=True)
    times["left"] = time.time()
    return times


def test_the_store_host_leaves_after_every_member_is_done_with_the_store(tmp_path: Path) -> None:
    host, slow = run_on_ranks(_member, 2, tmp_path, args=(free_port(),), timeout=90)
    assert host["left"] >= slow["store_used"], "member 0 returned before member 1 was done"
    assert slow["left"] >= slow["store_used"]
