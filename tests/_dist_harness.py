"""Run a function on N gloo ranks (CPU processes) inside a test, and collect what each returns.

`run_on_ranks(fn, world_size, workdir)` starts one process per rank (see
_START_METHOD), sets the environment torchrun would (RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR/PORT), joins a gloo
process group over TCP on a port the OS picked, and calls
`fn(rank, world_size, *args)`. `fn` must be a module-level
function (it is pickled by reference) and return something `torch.save` can
write; results come back through files in `workdir`.

Every process is joined, or killed at the deadline or soon after another rank
fails, whatever happens; a failing rank's traceback is re-raised in the test.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from dsgd_operator.local_run import free_port
from dsgd_trainer.stopping import exit_without_teardown

#: Seconds the other ranks get to finish (or fail) after one rank failed.
FAILURE_GRACE_SECONDS = 5.0

# "forkserver": each rank is forked from a clean server process that imported
# torch once, instead of a fresh interpreter importing it again per rank
# (seconds per rank on a busy 2-core machine); unlike a plain fork of the test
# process, no OpenMP/autograd threads of the parent are inherited. torch._dynamo
# is what torch.optim imports lazily on first use (sympy and all: the slowest part).
_START_METHOD = multiprocessing.get_context("forkserver")
_START_METHOD.set_forkserver_preload(
    ["torch", "torch.distributed", "torch._dynamo", "torch.nn.parallel", "dsgd_trainer.algorithms"]
)


class RankFailure(AssertionError):
    """A rank raised, crashed or timed out; the message holds every rank's traceback."""


def stop_forkserver() -> None:
    """Stop the fork server and its resource tracker now (waiting for both), not at exit.

    Uses the stdlib's private `_stop` methods (there since Python 3.9; CPython's
    own tests use them); call it when a test module is done with run_on_ranks.
    """
    for helper in (multiprocessing.forkserver._forkserver, resource_tracker._resource_tracker):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()


@pytest.fixture(scope="module", autouse=True)
def forkserver_stopped_after_module():
    """Import into a test module that uses run_on_ranks: when the module is done, the fork
    server and its resource tracker are stopped (no process left behind)."""
    yield
    stop_forkserver()


def rank_batch(
    rank: int, step: int, batch: int = 6, features: int = 5, classes: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of `rank` at `step`: its own data, the same on every run."""
    generator = torch.Generator().manual_seed(100 * rank + step)
    return (
        torch.randn(batch, features, generator=generator),
        torch.randint(0, classes, (batch,), generator=generator),
    )


def run_on_ranks(
    fn: Callable[..., Any],
    world_size: int,
    workdir: Path,
    *,
    args: tuple = (),
    local_world_size: int | None = None,
    timeout: float = 60.0,
) -> list[Any]:
    """Run `fn(rank, world_size, *args)` on `world_size` gloo ranks; returns results by rank.

    local_world_size: ranks per simulated node (torchrun's contiguous layout);
    default: all ranks on one node.
    """
    local_world_size = local_world_size or world_size
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    processes = [
        _START_METHOD.Process(
            target=_rank_main,
            args=(fn, rank, world_size, local_world_size, port, str(workdir), args, timeout),
            name=f"rank-{rank}",
        )
        for rank in range(world_size)
    ]
    try:
        for process in processes:
            process.start()
        _wait(processes, timeout)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
            process.join(timeout=10)
    failures = [
        f"rank {rank} (exit code {process.exitcode}):\n{_error_text(workdir, rank)}"
        for rank, process in enumerate(processes)
        if process.exitcode != 0
    ]
    if failures:
        raise RankFailure("\n".join(failures))
    return [
        torch.load(workdir / f"rank-{rank}.pt", weights_only=False) for rank in range(world_size)
    ]


def _wait(processes: list, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in processes):
            deadline = min(deadline, time.monotonic() + FAILURE_GRACE_SECONDS)
        time.sleep(0.02)


def _error_text(workdir: Path, rank: int) -> str:
    error = workdir / f"rank-{rank}.err"
    if error.exists():
        return error.read_text()
    return "(no traceback: killed at the deadline, or crashed before reporting)"


def _rank_main(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    local_world_size: int,
    port: int,
    workdir: str,
    args: tuple,
    timeout: float,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank % local_world_size),
        LOCAL_WORLD_SIZE=str(local_world_size),
        GROUP_RANK=str(rank // local_world_size),
    )
    torch.set_num_threads(1)  # N ranks share the test machine's cores
    out = Path(workdir)
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout),
        )
        result = fn(rank, world_size, *args)
        torch.save(result, out / f"rank-{rank}.pt")
    except BaseException:
        (out / f"rank-{rank}.err").write_text(traceback.format_exc())
        sys.exit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    exit_without_teardown(0)
