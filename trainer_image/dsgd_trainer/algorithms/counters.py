"""Communication counters: sync rounds, wire and payload bytes by scope, time in collectives.

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

from .traffic import Traffic


def _zero_per_scope() -> dict[str, int]:
    return dict.fromkeys(SCOPES, 0)


@dataclass
class SyncCounters:
    """What one rank has communicated since the start of training.

    rounds: synchronization rounds per scope (one gradient all-reduce step of
        mini-batch SGD, or one model averaging of the local variants).
    bytes: bytes this rank sent on the wire per scope, under the collective's
        algorithm (traffic.py: ring all-reduce 2·(K−1)/K × payload, broadcast
        (K−1)/K × payload, DDP's buckets); reported as `communicated_bytes`.
    payload_bytes: the size of the tensors this rank contributed, per scope.
    communication_seconds: wall time inside collectives, best effort. DDP's
        gradient all-reduce overlaps the backward pass and cannot be separated
        from it, so mini-batch SGD's gradient rounds add no time here.
    """

    rounds: dict[str, int] = field(default_factory=_zero_per_scope)
    bytes: dict[str, int] = field(default_factory=_zero_per_scope)
    payload_bytes: dict[str, int] = field(default_factory=_zero_per_scope)
    communication_seconds: float = 0.0

    def record(self, scope: str, sent: Traffic, *, rounds: int = 1) -> None:
        """Count `rounds` synchronization rounds that made `sent` traffic in `scope`."""
        if scope not in SCOPES:
            raise ValueError(f"unknown sync scope {scope!r}; expected one of {SCOPES}")
        self.rounds[scope] += rounds
        self.bytes[scope] += sent.wire
        self.payload_bytes[scope] += sent.payload

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
            "payload_bytes": dict(self.payload_bytes),
            "communication_seconds": self.communication_seconds,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rounds = {**_zero_per_scope(), **state["rounds"]}
        self.bytes = {**_zero_per_scope(), **state["bytes"]}
        self.payload_bytes = {**_zero_per_scope(), **state.get("payload_bytes", {})}
        self.communication_seconds = float(state["communication_seconds"])


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
