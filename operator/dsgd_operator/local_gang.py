"""A local gang: the planned processes of `dsgd run`, started, relayed and stopped together.

One process per pod (torchrun for a node), each in its own session so that a
Ctrl-C in the terminal reaches `dsgd run` first; one failure stops the rest, as
the operator's gang policy does; the stop takes down every process below the
gang's, torchrun's workers included (`process_tree`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dsgd_contract import exit_codes
from dsgd_contract.pod import MULTIPROC_DIR_ENV

from dsgd_operator import process_tree


@dataclass(frozen=True)
class LocalProcess:
    """What runs for one pod: its gang member index (the node rank for the nodes; a
    downpour-sgd job's parameter server i is member nodes + i), argv and complete env."""

    node_rank: int
    argv: list[str]
    env: dict[str, str]
    metrics_port: int


#: How long stopped processes get to exit after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 10.0


@dataclass
class GangResult:
    """How a local gang ended: the exit code of each node, and the first failure."""

    exit_codes: dict[int, int] = field(default_factory=dict)
    failed_node: int | None = None
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.failed_node is not None:
            return self.exit_codes[self.failed_node]
        return 0


class LocalGang:
    """Runs the planned processes, relays their output, and stops them together.

    Each process gets its own process group so that torchrun and its workers
    can be signalled as one, and so that a Ctrl-C in the terminal reaches us
    first: we then stop the gang in order instead of leaving orphans.
    """

    def __init__(self, processes: list[LocalProcess], log: Callable[[int, str], None]) -> None:
        self._planned = processes
        self._log = log
        self._popen: dict[int, subprocess.Popen[bytes]] = {}
        self._pumps: list[threading.Thread] = []

    def start(self) -> None:
        on_exec = parent_death_signal()
        for proc in self._planned:
            Path(proc.env[MULTIPROC_DIR_ENV]).mkdir(parents=True, exist_ok=True)
            popen = subprocess.Popen(
                proc.argv,
                env=proc.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=on_exec,
            )
            self._popen[proc.node_rank] = popen
            pump = threading.Thread(target=self._pump, args=(proc.node_rank, popen), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, node_rank: int, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        for raw in popen.stdout:
            self._log(node_rank, raw.decode("utf-8", errors="replace").rstrip("\n"))

    def poll(self, result: GangResult) -> bool:
        """Record exits; True while every process still runs or all succeeded so far."""
        for node_rank, popen in self._popen.items():
            code = popen.poll()
            if code is None or node_rank in result.exit_codes:
                continue
            # A process killed by a signal reports -N; a pod would report 128+N.
            result.exit_codes[node_rank] = exit_codes.from_returncode(code)
            if result.exit_codes[node_rank] != 0 and result.failed_node is None:
                result.failed_node = node_rank
        return result.failed_node is None

    @property
    def finished(self) -> bool:
        return all(popen.poll() is not None for popen in self._popen.values())

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM every process group still alive, then SIGKILL after `grace` seconds.

        torchrun's workers run in sessions of their own (see `process_tree`): the
        processes below ours are taken down in the same way, so that none outlives
        the stop.
        """
        # Only processes not reaped yet: a reaped one's pid may already be another's.
        running = [popen.pid for popen in self._popen.values() if popen.poll() is None]
        below = process_tree.descendants(*running)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (
            not self.finished or any(process_tree.alive(p) for p in below)
        ):
            time.sleep(0.05)
        self._signal_all(signal.SIGKILL)
        process_tree.kill(below)
        # SIGKILL is delivered at once but a process takes a moment to die; it cannot refuse.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(process_tree.alive(p) for p in below):
            time.sleep(0.05)
        for popen in self._popen.values():
            popen.wait()
        for pump in self._pumps:
            pump.join(timeout=2)

    def run(
        self, on_tick: Callable[[], None] | None = None, tick_seconds: float = 0.5
    ) -> GangResult:
        """Start, wait until all succeed, one fails or Ctrl-C; every process is stopped after.

        `on_tick` is called every `tick_seconds` while the gang runs; an exception
        it raises stops the gang and propagates (e.g. a time limit).
        """
        result = GangResult()
        try:
            self.start()
            while self.poll(result) and not self.finished:
                if on_tick is not None:
                    on_tick()
                time.sleep(tick_seconds)
            self.poll(result)
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            self.stop()
            self.poll(result)
        return result

    def _signal_all(self, sig: signal.Signals) -> None:
        for popen in self._popen.values():
            if popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, sig)


def interrupt_on_stop_signals() -> None:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt, which stops a local gang.

    SIGTERM: a process manager, CI or `timeout` stops the run like Ctrl-C. SIGINT is set
    too, as torchrun does: a shell starts background commands with SIGINT ignored, and
    Python keeps an inherited SIG_IGN, so `kill -INT` would otherwise do nothing.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def parent_death_signal(
    sig: signal.Signals = signal.SIGTERM,
) -> Callable[[], None] | None:
    """A pre-exec hook that makes a child get `sig` when `dsgd run` dies, even by SIGKILL.

    Each pod runs in its own session (so that Ctrl-C reaches us first), which
    also means nothing else would stop it if we vanished. prctl is looked up
    here, in the parent: after fork, in a process with threads, the child may
    only make async-signal-safe calls. Linux only; None elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, number = 1, int(sig)
    return lambda: prctl(pr_set_pdeathsig, number)
