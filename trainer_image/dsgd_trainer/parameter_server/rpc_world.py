"""The RPC world where Downpour's workers and parameter servers meet (torch.distributed.rpc).

Members: server i is RPC rank i, named `ps-<i>`; training rank r is RPC rank S + r,
named `worker-<r>` (S servers, W training ranks, S + W members). Server 0 hosts
the rendezvous store on PS_PORT (dsgd_contract.pod); TensorPipe then connects
the members directly. This world is apart from the training ranks' own process
group (torchrun's), which the workers keep for evaluation and checkpoints.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch.distributed.rpc as rpc
from dsgd_contract.pod import PS_ADDR_ENV, PS_PORT_ENV

from dsgd_trainer.distributed import collective_timeout

#: TensorPipe threads serving requests on each member: a server serves many workers at once.
SERVING_THREADS = 16

_joined = False


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
    global _joined
    host, port = store_address(env)
    options = rpc.TensorPipeRpcBackendOptions(
        init_method=f"tcp://{host}:{port}",
        num_worker_threads=SERVING_THREADS,
        rpc_timeout=collective_timeout(env).total_seconds(),
    )
    rpc.init_rpc(name, rank=rank, world_size=world_size, rpc_backend_options=options)
    _joined = True


def leave(graceful: bool) -> None:
    """Leave the RPC world if this process joined it (idempotent).

    graceful: wait until every member has left too (a barrier over the world,
    served while waiting); otherwise stop this member's agent at once (an
    abnormal exit: the others may never come).
    """
    global _joined
    if not _joined:
        return
    _joined = False
    with warnings.catch_warnings():
        # torch's own shutdown barrier uses a gloo backend object in a deprecated way; the
        # warning is about torch's code, not ours, and would end every run's log.
        warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
        rpc.shutdown(graceful=graceful)
