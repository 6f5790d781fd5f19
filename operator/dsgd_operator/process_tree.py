"""The processes below a local gang's process, read from /proc (Linux).

`dsgd run` starts one torchrun per node in its own process group, and signals
that group to stop it. torchrun in turn starts its workers in sessions of their
own, out of reach of that signal: they stop when torchrun forwards it, or when
their parent dies (PR_SET_PDEATHSIG). Under load that can take longer than the
stop's grace period, and then workers outlive `dsgd run`. To say "every process
stopped" and mean it, the stop takes a snapshot of all descendants first, waits
for them, and SIGKILLs those still alive after the grace period.

A process is named by (pid, start time), so that a pid the kernel has reused for
an unrelated process is never signalled. Elsewhere than Linux the tree is empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessId:
    """One process, told apart from a later one with the same pid by its start time."""

    pid: int
    start_time: int


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time in clock ticks, state) of `pid`, or None if it is gone."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(*roots: int) -> set[ProcessId]:
    """Every live process whose chain of parents reaches one of `roots` (roots excluded)."""
    children: dict[int, list[int]] = {}
    start_times: dict[int, int] = {}
    for entry in PROC.iterdir() if PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[2] == "Z":
            continue
        children.setdefault(stat[0], []).append(int(entry.name))
        start_times[int(entry.name)] = stat[1]
    found: set[ProcessId] = set()
    pending = list(roots)
    while pending:
        for child in children.get(pending.pop(), []):
            found.add(ProcessId(child, start_times[child]))
            pending.append(child)
    return found


def running(pid: int) -> bool:
    """True while a process `pid` exists and is not a zombie (dead, waiting to be reaped:
    where PID 1 reaps nothing, as in some containers, a dead orphan stays one)."""
    stat = _stat(pid)
    return stat is not None and stat[2] != "Z"


def alive(process: ProcessId) -> bool:
    """True while `process` runs (a zombie, waiting to be reaped, does not run)."""
    stat = _stat(process.pid)
    return stat is not None and stat[1] == process.start_time and stat[2] != "Z"


def kill(processes: set[ProcessId]) -> None:
    """SIGKILL each of `processes` that still runs.

    Through a pidfd, opened before the start time is checked: once it is open the
    pid cannot be handed to another process, so the signal reaches the one checked.
    """
    for process in processes:
        try:
            pidfd = os.pidfd_open(process.pid)
        except OSError:  # gone already
            continue
        try:
            if alive(process):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        finally:
            os.close(pidfd)
