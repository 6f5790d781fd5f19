"""Communication counters: sync rounds and payload bytes by scope, and time in collectives.

Scopes (dsgd_contract.metrics.SCOPES) are "global" (all ranks) and "intra_node"
(the ranks of one node/pod).
Counters record training-time synchronization only: the one-time broadcast that
makes replicas identical at step 0 and the averaging done for evaluation are
not counted (both are documented where they happen).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from dsgd_contract.metrics import SCOPES


def _zero_per_scope() -> dict[str, int]:
    return dict.fromkeys(SCOPES, 0)


@dataclass
class SyncCounters:
    """What one rank has communicated since the start of training.

    rounds: synchronization rounds per scope (one gradient all-reduce step of
        mini-batch SGD, or one model averaging of the local variants).
    bytes: payload bytes this rank passed to collectives per scope: numel ×
        element size of dense tensors; the packed size of compressed ones; for
        an all-gather, the tensor this rank contributes.
    communication_seconds: wall time inside collectives, best effort. DDP's
        gradient all-reduce overlaps the backward pass and cannot be separated
        from it, so mini-batch SGD's gradient rounds add no time here.
    """

    rounds: dict[str, int] = field(default_factory=_zero_per_scope)
    bytes: dict[str, int] = field(default_factory=_zero_per_scope)
    communication_seconds: float = 0.0

    def record(self, scope: str, nbytes: int, *, rounds: int = 1) -> None:
        """Count `rounds` synchronization rounds that moved `nbytes` payload bytes in `scope`."""
        if scope not in SCOPES:
            raise ValueError(f"unknown sync scope {scope!r}; expected one of {SCOPES}")
        self.rounds[scope] += rounds
        self.bytes[scope] += nbytes

    @contextmanager
    def timed(self, device: torch.device) -> Iterator[None]:
        """Add the wall time of the enclosed collectives to communication_seconds.

        On CUDA the device is synchronized before and after, because NCCL
        collectives return before they finish; otherwise only the launch would
        be timed (and pending compute would be billed to communication).
        """
        _synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            _synchronize(device)
            self.communication_seconds += time.perf_counter() - start

    def state_dict(self) -> dict:
        return {
            "rounds": dict(self.rounds),
            "bytes": dict(self.bytes),
            "communication_seconds": self.communication_seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rounds = {**_zero_per_scope(), **state["rounds"]}
        self.bytes = {**_zero_per_scope(), **state["bytes"]}
        self.communication_seconds = float(state["communication_seconds"])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
