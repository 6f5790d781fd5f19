"""Writing files that must never be left half-written, and what a full volume means for a run.

A checkpoint or result file goes to a temporary sibling first, is flushed to
disk and renamed over its final name (os.replace is atomic), so a crash at any
moment leaves either the old file or the new one. When the volume is full the
temporary file is removed again (a half-written `.rank-1.pt.tmp` would only
take the room the next attempt needs) and the error keeps its errno and the
file's name, so that the run can end with the contract's DISK_FULL code and
one line naming the training field whose directory is full.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
import torch.distributed as dist
from dsgd_contract import exit_codes

from dsgd_trainer.stopping import TrainerExit

#: No space left, quota exceeded, file size limit: no retry makes room.
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class _RecordingFile:
    """A binary file for torch.save that remembers the OSError of a failed write.

    torch.save's writer turns a failing `write` into a RuntimeError that names
    no errno; this keeps the original to raise instead.
    """

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """Write `path` via `write(binary file)` to a temporary sibling, fsync it, rename it.

    On any failure the temporary file is removed; an OSError (ENOSPC, ...) is
    raised with its errno and the temporary file's name, also when it happened
    inside torch.save.
    """
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as file:
            recorder = _RecordingFile(file)
            try:
                write(recorder)
            except RuntimeError as error:
                if recorder.error is None:
                    raise
                raise recorder.error from error
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        if error.filename is None:  # a write or fsync error names no file
            raise OSError(error.errno, error.strerror, str(temporary)) from error
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in FULL_ERRNOS


def disk_full_exit(error: OSError, directories: dict[str, Path]) -> TrainerExit:
    """The one-line DISK_FULL exit for `error`, naming the field whose directory is full.

    `directories` maps field names (training.checkpointDir, ...) to their paths;
    the field is the one whose directory holds the file that could not be written.
    """
    where = Path(str(error.filename or ""))
    field, directory = next(
        (
            (name, path)
            for name, path in directories.items()
            if where == path or path in where.parents
        ),
        ("a volume", where.parent),
    )
    return TrainerExit(
        exit_codes.DISK_FULL,
        f"error: {field} {directory} is full: {error.strerror or error} (writing {where}); "
        "make room or mount a larger volume there, then the job can be run again",
        every_rank=True,
    )


def write_together(write: Callable[[], object], field: str, device: torch.device) -> None:
    """Run this rank's `write`; then all ranks agree whether every one could (collective).

    Also a barrier. A rank whose volume is full raises its OSError (the run's
    one DISK_FULL line names its directory); the others raise TrainerExit
    with DISK_FULL too, instead of meeting a vanished peer in the next collective.
    """
    failure: OSError | None = None
    try:
        write()
    except OSError as error:
        if not is_disk_full(error):
            raise
        failure = error
    full = torch.tensor([int(failure is not None)], device=device)  # NCCL: on the device
    dist.all_reduce(full, op=dist.ReduceOp.MAX)
    if failure is not None:
        raise failure
    if full.item():
        raise TrainerExit(
            exit_codes.DISK_FULL,
            f"error: stopping with the gang: another rank's {field} is full (its line says where)",
        )
