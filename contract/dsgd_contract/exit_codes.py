"""Exit codes of the trainer, and so of a pod: the contract between trainer and operator.

The operator reads them to decide whether a failed pod is worth a gang
restart. The launcher (`dsgd_trainer.launch`) makes the pod exit with the
worker's code instead of torchrun's generic 1.

Codes follow sysexits.h where one fits. Anything not listed below (a crash, a
signal, OOM, a lost peer) is treated as retryable.
"""

from __future__ import annotations

OK = 0
#: The configuration cannot work (bad values, unknown plug-in): retrying is pointless.
INVALID_CONFIG = 64  # EX_USAGE
#: The dataset is missing or malformed: retrying is pointless until someone fixes it.
DATA_ERROR = 65  # EX_DATAERR
#: The loss became NaN or infinite: the same run would diverge again.
DIVERGED = 66
#: training.checkpointDir or outputDir is full (ENOSPC, EDQUOT, EFBIG): a restart would
#: fill it again at the same point; someone must make room or mount a larger volume.
DISK_FULL = 74  # EX_IOERR

NON_RETRYABLE: dict[int, str] = {
    INVALID_CONFIG: "InvalidConfig",
    DATA_ERROR: "DataError",
    DIVERGED: "Diverged",
    DISK_FULL: "DiskFull",
}


def is_retryable(exit_code: int) -> bool:
    """Whether a gang restart may help after a worker exited with this code."""
    return exit_code != OK and exit_code not in NON_RETRYABLE


def from_returncode(returncode: int) -> int:
    """A subprocess return code as a container (or a shell) reports it: -N (signal N) → 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def reason(exit_code: int) -> str:
    """A CamelCase reason for conditions, events and metrics labels."""
    if exit_code == OK:
        return "Completed"
    if exit_code in NON_RETRYABLE:
        return NON_RETRYABLE[exit_code]
    if exit_code > 128:
        return f"Signal{exit_code - 128}"
    return f"ExitCode{exit_code}"
