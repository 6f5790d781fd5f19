"""Stopping a local gang takes down every process below it, torchrun's workers included.

torchrun starts its workers in sessions of their own, out of reach of the signal
`dsgd run` sends to torchrun's process group. Here a stand-in "agent" does the
same with a worker that ignores SIGTERM: after the stop, /proc (the oracle) must
show neither alive.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

from dsgd_contract.pod import MULTIPROC_DIR_ENV
from dsgd_operator import process_tree
from dsgd_operator.local_gang import LocalGang, LocalProcess

# An agent that starts a worker in a new session, then waits for it; the worker ignores
# SIGTERM (a trainer stuck in a collective behaves so), and writes its pid once it runs.
AGENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    worker = subprocess.Popen(
        [sys.executable, "-c",
         "import os, signal, sys, time\\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
         "open(sys.argv[1], 'w').write(str(os.getpid()))\\n"
         "time.sleep(600)\\n",
         sys.argv[1]],
        start_new_session=True,
    )
    worker.wait()
    """
)


def test_stop_kills_workers_in_their_own_sessions(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    env = {**os.environ, MULTIPROC_DIR_ENV: str(tmp_path / "metrics")}
    agent = LocalProcess(0, [sys.executable, "-c", AGENT, str(pid_file)], env, 0)
    gang = LocalGang([agent], log=lambda _node, _line: None)
    gang.start()
    worker_pid = None
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.05)
        worker_pid = int(pid_file.read_text())
        assert os.getsid(worker_pid) == worker_pid  # its own session: killpg misses it
    finally:
        gang.stop(grace=1.0)
    survived = worker_pid is not None and process_tree.running(worker_pid)
    if survived:  # leave nothing behind, even when failing
        os.kill(worker_pid, 9)
    assert not survived, "the worker outlived the stop"


def test_descendants_follow_the_parent_chain_only() -> None:
    mine = process_tree.descendants(os.getpid())
    parent = process_tree.descendants(os.getppid())
    # Our own children are below our parent too; we are below our parent, not below us.
    assert mine <= parent
    assert os.getpid() in {p.pid for p in parent}
    assert os.getpid() not in {p.pid for p in mine}


def test_kill_spares_a_reused_pid() -> None:
    # A recorded process whose start time differs is another process: never signalled.
    me = next(iter(p for p in process_tree.descendants(os.getppid()) if p.pid == os.getpid()))
    impostor = process_tree.ProcessId(me.pid, me.start_time + 1)
    assert not process_tree.alive(impostor)
    process_tree.kill({impostor})  # would SIGKILL this test process if it were not checked
    assert process_tree.alive(me)
