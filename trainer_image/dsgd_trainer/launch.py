"""`python -m dsgd_trainer.launch [torchrun args]`: torchrun that exits with the worker's code.

This is torch.distributed.run itself (same parser; every setting can come from
PET_* env vars such as PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR), with two
differences that the pod contract needs:

* When a worker fails, the launcher exits with that worker's exit code instead
  of torchrun's generic 1, so the operator can tell "bad config" (64), "bad
  data" (65) and "diverged" (66) from a retryable crash. Among several failed
  workers a non-retryable code wins, else the earliest failure's. A worker
  killed by signal N reports 128 + N, as a shell would.
* A bad config ($DSGD_CONFIG) is reported once and exits 64 before any worker
  starts: otherwise the first worker to fail would have torchrun SIGTERM the
  others, possibly before the one that prints the problems got to print them.
* If the pod serves metrics (DSGD_METRICS_PORT) but PROMETHEUS_MULTIPROC_DIR is
  unset, the launcher makes a temporary one, so that the local ranks still share
  their metrics with the rank that serves them.

Termination: torchrun's agent handles SIGTERM/SIGINT/SIGHUP/SIGQUIT
(TORCHELASTIC_SIGNALS_TO_HANDLE) by sending the same signal to every worker,
waiting up to TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds (default 30) and then
SIGKILLing the rest. So a pod's SIGTERM reaches the trainers, which stop
cleanly (see dsgd_trainer.train); the launcher then exits with 128 + the signal.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack

from dsgd_contract import exit_codes
from dsgd_contract.config_file import ConfigFileError, read_config
from dsgd_contract.pod import CONFIG_ENV, METRICS_PORT_ENV, MULTIPROC_DIR_ENV
from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure


def worker_exit_code(failures: Mapping[int, ProcessFailure]) -> int:
    """The exit code the pod should report for these failed workers (global rank → failure).

    A non-retryable code (exit_codes.NON_RETRYABLE) wins over retryable ones;
    otherwise, and among several non-retryable ones, the earliest failure wins
    (ties broken by rank). Negative codes (killed by a signal) become 128 + signal.
    """
    if not failures:
        raise ValueError("no failures to report")
    ordered = sorted(failures.items(), key=lambda item: (item[1].timestamp, item[0]))
    codes = [exit_codes.from_returncode(failure.exitcode) for _, failure in ordered]
    non_retryable = [code for code in codes if not exit_codes.is_retryable(code)]
    return (non_retryable or codes)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Run torchrun with `argv` (default: sys.argv[1:]); return the pod's exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_path = os.environ.get(CONFIG_ENV)
    if config_path:
        try:
            read_config(config_path)
        except ConfigFileError as error:
            print(error, file=sys.stderr, flush=True)
            return exit_codes.INVALID_CONFIG
    with ExitStack() as stack:
        if os.environ.get(METRICS_PORT_ENV, "0") not in ("", "0") and not os.environ.get(
            MULTIPROC_DIR_ENV
        ):
            # Set before torchrun starts the workers, which inherit our environment.
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="dsgd-metrics-"))
            os.environ[MULTIPROC_DIR_ENV] = directory
        try:
            torchrun.main(args)
        except ChildFailedError as error:
            code = worker_exit_code(error.failures)
            print(
                f"dsgd_trainer.launch: a worker failed; exiting with its code {code} "
                f"({exit_codes.reason(code)}, "
                f"{'retryable' if exit_codes.is_retryable(code) else 'not retryable'})",
                file=sys.stderr,
            )
            return code
        except SignalException as error:
            print(
                f"dsgd_trainer.launch: stopped by {error.sigval.name}; workers were told to stop",
                file=sys.stderr,
            )
            return 128 + int(error.sigval)
    return exit_codes.OK


if __name__ == "__main__":
    sys.exit(main())
