"""dsgd_trainer.launch: torchrun whose exit code is the failing worker's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dsgd_contract import exit_codes
from dsgd_trainer.launch import worker_exit_code
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from tests.conftest import pick_free_port


def failure(exitcode: int, timestamp: int) -> ProcessFailure:
    result = ProcessFailure(local_rank=0, pid=1, exitcode=exitcode, error_file="<N/A>")
    result.timestamp = timestamp
    return result


def test_a_non_retryable_failure_wins_over_an_earlier_crash() -> None:
    # Rank 0 crashed first (1), rank 1 then diverged (66): 66 decides the job's fate.
    failures = {0: failure(1, timestamp=10), 1: failure(exit_codes.DIVERGED, timestamp=12)}
    assert worker_exit_code(failures) == exit_codes.DIVERGED


def test_among_retryable_failures_the_earliest_wins() -> None:
    failures = {0: failure(1, timestamp=5), 1: failure(-9, timestamp=3)}
    assert worker_exit_code(failures) == 128 + 9


def test_among_non_retryable_failures_the_earliest_wins_ties_by_rank() -> None:
    failures = {
        2: failure(exit_codes.DATA_ERROR, timestamp=4),
        1: failure(exit_codes.INVALID_CONFIG, timestamp=4),
        0: failure(3, timestamp=1),
    }
    assert worker_exit_code(failures) == exit_codes.INVALID_CONFIG


def test_signals_read_like_a_shell_reports_them() -> None:
    assert [exit_codes.from_returncode(code) for code in (0, 1, 66, -9, -15)] == [
        0,
        1,
        66,
        137,
        143,
    ]
    with pytest.raises(ValueError):
        worker_exit_code({})


WORKER = """
import os, sys, time
from pathlib import Path
out = Path(sys.argv[1])
directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
(out / f"rank-{os.environ['RANK']}").write_text(directory + "\\n" + str(Path(directory).is_dir()))
if os.environ["LOCAL_RANK"] == "1":
    # Fail only once rank 0 has reported: torchrun stops the others at the first failure.
    deadline = time.monotonic() + 30
    while not (out / "rank-0").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(int(os.environ["WORKER_EXIT_CODE"]))
time.sleep(30)  # torchrun must stop this one once rank 1 has failed
"""


@pytest.mark.timeout(120)
def test_the_launcher_exits_with_the_workers_code(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        PET_NNODES="1",
        PET_NPROC_PER_NODE="2",
        PET_NODE_RANK="0",
        PET_MASTER_ADDR="127.0.0.1",
        PET_MASTER_PORT=str(pick_free_port()),
        DSGD_METRICS_PORT="9400",  # the launcher only prepares a directory; nothing listens
        WORKER_EXIT_CODE=str(exit_codes.DATA_ERROR),
        TORCH_ELASTIC_SHUTDOWN_TIMEOUT="5",
    )
    command = [sys.executable, "-m", "dsgd_trainer.launch", "--max-restarts=0"]
    result = subprocess.run(
        [*command, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == exit_codes.DATA_ERROR, result.stdout + result.stderr
    assert "exiting with its code 65 (DataError, not retryable)" in result.stderr
    # Without PROMETHEUS_MULTIPROC_DIR the launcher made one, shared by its workers...
    seen = {(tmp_path / f"rank-{rank}").read_text() for rank in (0, 1)}
    (shared,) = seen
    directory, existed = shared.splitlines()
    assert directory and existed == "True"
    # ...and removed it when it was done.
    assert not Path(directory).exists()
