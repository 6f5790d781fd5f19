"""The RPC world where Downpour's workers and parameter servers meet (torch.distributed.rpc).

Members: server i is RPC rank i, named `ps-<i>`; training rank r is RPC rank S + r,
named `worker-<r>` (S servers, W training ranks, S + W members). Server 0 hosts
the rendezvous store on PS_PORT (dsgd_contract.pod); TensorPipe then connects
the members directly. This world is apart from the training ranks' own process
group (torchrun's), which the workers keep for evaluation and checkpoints.

Leaving in order: torch's graceful shutdown ends with every member counting its
calls through that store (TensorPipeAgent.join), so server 0 must outlive the
others' shutdown: had it exited as soon as its own returned, a member still
reading the store got "Connection reset by peer" and exited 1 after a finished
run (seen on links of 10 Mbit/s). So after the shutdown each member sets its key
`LEFT_KEY/<rank>` in the store, and member 0 waits for every key before it exits.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed.rpc as rpc
from dsgd_contract.pod import PS_ADDR_ENV, PS_PORT_ENV

from dsgd_trainer.distributed import collective_timeout

#: TensorPipe threads serving requests on each member: a server serves many workers at once.
SERVING_THREADS = 16
#: The store keys of the members that finished their graceful shutdown (`LEFT_KEY/<rank>`).
LEFT_KEY = "dsgd/left"


@dataclass(frozen=True)
class _Membership:
    rank: int
    world_size: int
    timeout: timedelta


_member: _Membership | None = None


def server_name(index: int) -> str:
    return f"ps-{index}"


def worker_name(rank: int) -> str:
    return f"worker-{rank}"


def store_address(env: Mapping[str, str] = os.environ) -> tuple[str, int]:
    """(host, port) of the rendezvous store: DSGD_PS_ADDR, DSGD_PS_PORT.

    RuntimeError naming the variables when they are missing (the pod contract sets them).
    """
    try:
        return env[PS_ADDR_ENV], int(env[PS_PORT_ENV])
    except (KeyError, ValueError) as error:
        raise RuntimeError(
            f"downpour-sgd needs {PS_ADDR_ENV} and {PS_PORT_ENV} (the parameter servers' "
            f"rendezvous), which the pod contract sets: {error!r}"
        ) from None


def join(name: str, rank: int, world_size: int, env: Mapping[str, str] = os.environ) -> None:
    """Join the RPC world as member `rank` of `world_size` (blocks until all have joined).

    Calls wait up to the collective timeout (DSGD_COLLECTIVE_TIMEOUT_SECONDS), which
    also bounds how long the first members wait for the last at the rendezvous.
    """
    global _member
    host, port = store_address(env)
    timeout = collective_timeout(env)
    options = rpc.TensorPipeRpcBackendOptions(
        init_method=f"tcp://{host}:{port}",
        num_worker_threads=SERVING_THREADS,
        rpc_timeout=timeout.total_seconds(),
    )
    rpc.init_rpc(name, rank=rank, world_size=world_size, rpc_backend_options=options)
    _member = _Membership(rank, world_size, timeout)


def leave(graceful: bool) -> None:
    """Leave the RPC world if this process joined it (idempotent).

    graceful: wait until every member has left too (a barrier over the world,
    served while waiting), and member 0, the store's host, until every member's
    shutdown is over (see the module docstring); otherwise stop this member's
    agent at once (an abnormal exit: the others may never come).
    """
    global _member
    member, _member = _member, None
    if member is None:
        return
    # Held past the agent's shutdown: torch keeps no store once its agent is gone.
    store = rpc.api._get_current_rpc_agent().store if graceful else None
    with warnings.catch_warnings():
        # torch's own shutdown barrier uses a gloo backend object in a deprecated way; the
        # warning is about torch's code, not ours, and would end every run's log.
        warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
        rpc.shutdown(graceful=graceful)
    if store is None:
        return
    try:
        store.set(f"{LEFT_KEY}/{member.rank}", "1")
        if member.rank == 0:
            keys = [f"{LEFT_KEY}/{rank}" for rank in range(member.world_size)]
            store.wait(keys, member.timeout)
    except RuntimeError as error:  # torch's DistStoreError / DistNetworkError
        # The run itself is over and complete; only the order of the exits is at stake.
        print(f"warning: leaving the RPC world in order: {error}", file=sys.stderr, flush=True)
