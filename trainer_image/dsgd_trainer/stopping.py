"""Stopping on request: SIGTERM/SIGINT end the run at a step boundary every rank agrees on.

Kubernetes sends SIGTERM to a pod before it kills it (after
terminationGracePeriodSeconds); torchrun passes it on to every worker. A
signal only records the request here; the ranks then agree, through ballots on
all-reduces they make anyway (dsgd_trainer.stop_vote), on the step to stop at,
and exit together with 128 + the signal, without writing a checkpoint (the
last complete one stands: writes are atomic). A second signal exits at once.

Also how a rank ends on purpose: `TrainerExit` carries the exit code (the
contract's, dsgd_contract.exit_codes) up to `dsgd_trainer.train.main`, and
`exit_without_teardown` leaves the process once everything is written.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from types import FrameType

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


class StopRequest:
    """Installs the handlers; `requested` turns true (and `signal` is set) on the first signal."""

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, self._handle)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def exit_code(self) -> int:
        """128 + the signal, as a shell would report a process the signal killed."""
        return 128 + int(self.signal or signal.SIGTERM)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            # Asked twice: the user (or the kubelet) does not want to wait for the step.
            raise SystemExit(128 + signum)
        self.signal = signal.Signals(signum)
        print(
            f"received {self.signal.name}: stopping after the current step "
            "(the last checkpoint stands)",
            file=sys.stderr,
            flush=True,
        )


def stop_when_parent_dies() -> None:
    """Ask Linux to send us SIGTERM when our parent (torchrun's agent) dies.

    torchrun starts workers in their own sessions, so a SIGKILLed agent (an
    OOM kill, `kill -9` on a local run) would leave them training as orphans;
    with this they stop like on any SIGTERM. No-op where prctl is unavailable.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        # The parent died before prctl took effect (we were re-parented): nobody will signal us.
        # (Comparing with 1 would be wrong: in a container the agent itself is often PID 1.)
        os.kill(os.getpid(), signal.SIGTERM)


def exit_without_teardown(code: int) -> None:
    """Exit now with `code`, skipping interpreter teardown, once everything is written.

    torch 2.13 with gloo and DDP sometimes aborts (SIGABRT, "terminate called
    without an active exception") while the interpreter finalizes, after the
    process group was destroyed and every result written: seen in about 1 of 12
    runs of a plain DDP + gloo script. A pod would then report 134, a retryable
    failure, for a finished run. Every process that used a process group ends
    through here (the trainer, the test harness's ranks, the benchmarks' ranks).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class TrainerExit(Exception):
    """End the run with `code`, printing `message` (on local rank 0 unless `every_rank`).

    `agreed`: every rank of the gang leaves at this same point (a decision all of
    them read from one collective), so the process group can be destroyed in
    order; otherwise it is aborted (peers may be gone or stuck in a collective).
    """

    def __init__(
        self, code: int, message: str, every_rank: bool = False, agreed: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.every_rank = every_rank
        self.agreed = agreed
