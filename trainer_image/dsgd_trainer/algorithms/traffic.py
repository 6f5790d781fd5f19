"""Bytes a collective puts on the wire, per rank, under the algorithm the backend runs.

Two figures per collective (both in `SyncCounters`):

- payload: the size of the tensors this rank contributed (Σ numel × element size);
- wire: the bytes this rank sends to other ranks while the collective runs.

Wire bytes for K ranks and a payload of P bytes:

- all-reduce, ring (gloo's default for CPU tensors; NCCL's ring): a
  reduce-scatter then an all-gather, each K − 1 steps of one P/K chunk, so
  2·(K−1)/K·P per rank. (NCCL may pick its tree algorithm for small messages,
  where an inner rank sends up to 2·P; the ring figure is what we report.)
- broadcast: every rank but the root receives P once, so the ranks together
  send (K−1)·P whatever the tree or ring; each rank's share is (K−1)/K·P (the
  exact per-rank split depends on its position in the backend's tree/ring).
- DDP: one ring all-reduce per gradient bucket (the buckets partition the
  gradients, so 2·(K−1)/K of their sum) plus, before each forward, the
  broadcast of rank 0's buffers.

- parameter servers (downpour-sgd): a push or a fetch moves the shards once
  (parameter_server below).

K = 1 sends nothing. Values are rounded to whole bytes per collective.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Traffic:
    """What one rank contributed to collectives (payload) and sent on the wire (wire), in bytes."""

    payload: int = 0
    wire: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(self.payload + other.payload, self.wire + other.wire)


def all_reduce(payload: int, ranks: int) -> Traffic:
    """A ring all-reduce of `payload` bytes over `ranks` ranks."""
    return Traffic(payload, round(2 * (ranks - 1) * payload / ranks))


def broadcast(payload: int, ranks: int) -> Traffic:
    """A broadcast of `payload` bytes to `ranks` ranks: this rank's share of (K−1)·payload."""
    return Traffic(payload, round((ranks - 1) * payload / ranks))


def parameter_server(payload: int) -> Traffic:
    """A push of `payload` bytes to the parameter servers, or a fetch of as many from them.

    One copy of the shards crosses the network, whichever way: a push sends
    them, a fetch has the servers send them back to the worker that asked (the
    worker counts them: the exchange is its round). Request headers and the
    version numbers are not counted.
    """
    return Traffic(payload, payload)
