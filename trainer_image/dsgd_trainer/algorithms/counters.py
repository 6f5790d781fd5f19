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
    communication_seconds: time inside collectives, best effort. DDP's
        gradient all-reduce overlaps the backward pass and cannot be separated
        from it, so mini-batch SGD's gradient rounds add no time here.
    """

    rounds: dict[str, int] = field(default_factory=_zero_per_scope)
    bytes: dict[str, int] = field(default_factory=_zero_per_scope)
    payload_bytes: dict[str, int] = field(default_factory=_zero_per_scope)
    #: Seconds already measured; CUDA intervals still in flight are in _pending.
    _measured_seconds: float = 0.0
    _pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = field(
        default_factory=list, repr=False
    )

    def record(self, scope: str, sent: Traffic, *, rounds: int = 1) -> None:
        """Count `rounds` synchronization rounds that made `sent` traffic in `scope`."""
        if scope not in SCOPES:
            raise ValueError(f"unknown sync scope {scope!r}; expected one of {SCOPES}")
        self.rounds[scope] += rounds
        self.bytes[scope] += sent.wire
        self.payload_bytes[scope] += sent.payload

    @property
    def communication_seconds(self) -> float:
        """Time inside collectives so far; waits for CUDA intervals still in flight.

        Read at publish, evaluation and checkpoint time, not per step: by then the
        intervals have long finished, so the wait costs nothing.
        """
        self._settle(block=True)
        return self._measured_seconds

    @communication_seconds.setter
    def communication_seconds(self, seconds: float) -> None:
        self._pending.clear()
        self._measured_seconds = seconds

    @contextmanager
    def timed(self, device: torch.device) -> Iterator[None]:
        """Add the time of the enclosed collectives to communication_seconds.

        On CUDA, NCCL collectives return before they finish; a pair of CUDA events
        on the current stream brackets them instead (the stream waits for the
        collectives before anything after them runs), read later: no host
        synchronisation here, so the host keeps queuing work ahead of the device.
        Elsewhere (gloo, synchronous), the host's wall clock.
        """
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._settle(block=False)  # keep the list short without waiting
                self._pending.append((start, end))
            return
        began = time.perf_counter()
        try:
            yield
        finally:
            self._measured_seconds += time.perf_counter() - began

    def _settle(self, block: bool) -> None:
        """Move finished CUDA intervals (all of them when `block`) into _measured_seconds."""
        while self._pending:
            start, end = self._pending[0]
            if block:
                end.synchronize()
            elif not end.query():
                return
            self._measured_seconds += start.elapsed_time(end) / 1000.0  # milliseconds
            self._pending.pop(0)

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
