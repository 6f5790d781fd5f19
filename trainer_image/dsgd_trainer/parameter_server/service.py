"""The parameter server's RPC endpoints: module functions over this process's shard.

torch.distributed.rpc sends a function by its qualified name, so workers call
these (rpc_async("ps-<i>", service.push, ...)) and they run on the server, on
one of its serving threads, against the Shard that `serve` installed there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from dsgd_trainer.parameter_server.shard import Shard

_shard: Shard | None = None


def serve(shard: Shard) -> None:
    """Make `shard` the one this process's endpoints act on (before joining the RPC world)."""
    global _shard
    _shard = shard


def _current() -> Shard:
    if _shard is None:
        raise RuntimeError("this process is not a parameter server")
    return _shard


def initialize(values: torch.Tensor) -> None:
    """Fresh training: take the workers' initial shard (once)."""
    _current().initialize(values)


def fetch() -> tuple[torch.Tensor, int]:
    """(the shard's parameters, its version)."""
    return _current().fetch()


def push(gradient: torch.Tensor, based_on: int, lr: float) -> int:
    """Apply a pushed gradient now; returns its staleness."""
    return _current().push(gradient, based_on, lr)


def save(step: int) -> None:
    """Checkpoint the shard as the state after the workers' step `step`."""
    _current().save(step)


def restore(step: int) -> int:
    """Resume from the checkpoint after the workers' step `step`; returns its version."""
    return _current().restore(step)
