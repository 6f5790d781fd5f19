"""Agreed stopping: a stop request becomes a decision every rank takes at the same step.

A SIGTERM reaches the ranks of a gang at different moments (Kubernetes signals
pods one by one; torchrun passes the signal on to its workers). A rank that
stopped on its own at its next step boundary would leave its peers waiting in
a collective it never joins: with gloo they get a connection error, but with
NCCL they block in a CUDA synchronisation until a watchdog timeout or the
SIGKILL after the grace period. So a rank never stops alone on a request:

- each rank adds a ballot (1 if it was asked to stop, else 0) to all-reduces
  the run makes anyway: the epoch-end statistics, the global model averaging
  of the local SGD variants (dense; overlapped, counted when it is waited
  for, at the same step on every rank), and DDP's first gradient bucket of
  every mini-batch step (a communication hook). No extra collective, 4 bytes more;
- the sum is the same on every rank, so every rank decides the same at the
  same round, and leaves the loop at the same step boundary, no collective
  left half-joined.

On a GPU, reading the sum at once would make the host wait for the device at
every round. Instead the sum is copied to pinned host memory without blocking,
and it is read at the next counted round (when it has long arrived: no wait):
the decision of round r rests on the ballots of round r − 1, on every rank
alike. On the CPU (gloo is synchronous) round r decides on its own ballots.
At the epoch end, where the loop reads the statistics anyway, every pending
sum is read: the decision is immediate there.

Compressed global syncs (sign, ef-sign) carry it on their all-reduce of the
scales; intra-node averagings carry none. When `training.evalEvery` puts no
evaluation at an epoch end, the loop all-reduces the ballots alone there, so
every epoch end still decides before the (collective) checkpoint.
"""

from __future__ import annotations

import signal

import torch

from dsgd_trainer.stopping import StopRequest


class StopVote:
    """This rank's ballot and the gang's decision (see the module docstring)."""

    def __init__(self, request: StopRequest, device: torch.device) -> None:
        self._request = request
        self._device = device
        # Made once on the device: a ballot is then a device tensor already, no copy per round.
        self._yes = torch.ones(1, device=device)
        self._no = torch.zeros(1, device=device)
        #: The last counted sum not read yet (CUDA): pinned host copy and its event.
        self._pending: tuple[torch.Tensor, torch.cuda.Event] | None = None
        #: Whether the gang agreed to stop; the same on every rank after the same rounds.
        self.agreed = False

    def ballot(self, dtype: torch.dtype) -> torch.Tensor:
        """One element on the device: 1 if this rank was asked to stop, else 0."""
        chosen = self._yes if self._request.requested else self._no
        return chosen if dtype == chosen.dtype else chosen.to(dtype)

    def count(self, total: torch.Tensor) -> None:
        """Take the all-reduced sum of the ballots (one element) of a round every rank made.

        Call on every rank for the same rounds, right after the collective.
        """
        if self._device.type != "cuda":
            self.agreed = self.agreed or bool(total.item() > 0)  # gloo: already complete
            return
        self._read_pending()
        host = torch.empty(1, dtype=total.dtype, pin_memory=True)
        host.copy_(total.detach().reshape(1), non_blocking=True)
        arrived = torch.cuda.Event()
        arrived.record()
        self._pending = (host, arrived)

    def count_read(self, total: float) -> None:
        """Take a sum of ballots the loop already read on the host, and every pending one."""
        self._read_pending()
        self.agreed = self.agreed or total > 0

    def _read_pending(self) -> None:
        if self._pending is None:
            return
        host, arrived = self._pending
        arrived.synchronize()  # long done by the next round: a check, not a wait
        self.agreed = self.agreed or bool(host.item() > 0)
        self._pending = None

    @property
    def exit_code(self) -> int:
        """This rank's own signal as 128 + N; SIGTERM's for a rank stopping on a peer's request."""
        return self._request.exit_code if self._request.requested else 128 + int(signal.SIGTERM)
