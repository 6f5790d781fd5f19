"""Long-running processes of the local cluster: started detached, stopped by pid file.

`make cluster` returns while etcd, the API server and the rest keep running, so
each runs in its own session (no terminal signal reaches it) with its output in
`<cluster dir>/logs/<name>.log`, and its pid in `<cluster dir>/pids/<name>.pid`
next to the command line it was started with. Stopping checks that the pid still
runs that command line before signalling it, so a pid reused by an unrelated
process after a reboot is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from dsgd_operator.local_gang import parent_death_signal

STOP_GRACE_SECONDS = 10.0


def _pid_file(root: Path, name: str) -> Path:
    return root / "pids" / f"{name}.pid"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.rstrip(b"\0").decode(errors="replace").split("\0") if raw else None


def running_pid(root: Path, name: str) -> int | None:
    """The pid of daemon `name` if it still runs the command it was started with."""
    path = _pid_file(root, name)
    try:
        pid_text, _, argv0 = path.read_text().partition("\n")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    cmdline = _cmdline(pid)
    if cmdline is None and _alive(pid):
        return pid  # between fork and exec: /proc shows no command line yet
    if not cmdline or cmdline[0] != argv0.strip():
        return None
    return pid


def start_daemon(
    root: Path, name: str, argv: list[str], *, tie_to_caller: bool = False
) -> subprocess.Popen[bytes]:
    """Start `argv` detached, logging to `logs/<name>.log`, and record its pid.

    `tie_to_caller`: the daemon gets SIGKILL when this process dies (PR_SET_PDEATHSIG).
    Not SIGTERM: a tied cluster is a test session's, its state throw-away, and an API
    server whose etcd went at the same moment was seen to hang in its graceful shutdown
    for minutes after a killed session.
    """
    (root / "logs").mkdir(parents=True, exist_ok=True)
    _pid_file(root, name).parent.mkdir(parents=True, exist_ok=True)
    with (root / "logs" / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=parent_death_signal(signal.SIGKILL) if tie_to_caller else None,
        )
    _pid_file(root, name).write_text(f"{process.pid}\n{argv[0]}\n")
    return process


def stop_daemon(root: Path, name: str, grace: float = STOP_GRACE_SECONDS) -> bool:
    """SIGTERM daemon `name` (and its process group), SIGKILL after `grace`; True if it ran."""
    pid = running_pid(root, name)
    _pid_file(root, name).unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has already exited)."""
    try:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return False  # our own child, now reaped
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":  # exited since the waitpid above: reap it if it is ours
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        return False
    return True
