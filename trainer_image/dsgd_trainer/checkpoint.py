"""Checkpoints: per-rank state files, an atomic `latest.json`, exact resumption.

Layout under training.checkpointDir:

    latest.json               {"epoch", "step", "checkpoint", "world_size", "saved_at"}
    epoch-000004/rank-0.pt    everything rank 0 needs to continue after 4 epochs
    epoch-000004/rank-1.pt    ... one file per rank: momentum buffers, error-feedback
                              memory and (between averagings) the parameters differ by rank

Writes are crash-safe: each file goes to a temporary name and is renamed over
the final one (dsgd_trainer.storage.atomic_write; a full volume leaves no
temporary file behind), and rank 0 writes `latest.json` only after a barrier,
when every rank's file is complete. A run killed at any moment therefore
resumes from a checkpoint that all ranks finished. The last `KEEP` checkpoints are
kept; each rank deletes its own old files (the directory may be one shared volume
or one volume per pod).

Resuming, with the fallback from an unusable checkpoint to the previous intact one,
is dsgd_trainer.resume.

A rank file holds the model, optimizer and algorithm state, the epoch and step
(the lr schedule is a function of the step), the RNG states (torch, CUDA, numpy,
python, augmentation generator), and the last evaluation record. The data order
needs nothing more: it is seeded by epoch (`rank_batches(..., epoch, seed, ...)`).
`snapshot` gathers what a rank file holds, `dsgd_trainer.resume.resume` puts it back.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dsgd_trainer.algorithms import Algorithm
from dsgd_trainer.gang import GangPosition
from dsgd_trainer.storage import atomic_write, write_together

LATEST = "latest.json"
#: How many checkpoints stay on disk (the newest first).
KEEP = 2
FORMAT_VERSION = 1
CPU = torch.device("cpu")
CHECKPOINT_NAME = re.compile(r"^epoch-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed here (other world size, missing file): exit 64."""


@dataclass(frozen=True)
class CheckpointRef:
    """What `latest.json` points at: the state after `epoch` completed epochs."""

    epoch: int
    step: int
    checkpoint: str
    world_size: int


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:06d}"


def rank_file(directory: Path, checkpoint: str, rank: int) -> Path:
    return directory / checkpoint / f"rank-{rank}.pt"


def save(
    directory: Path,
    epoch: int,
    step: int,
    rank: int,
    world_size: int,
    state: dict[str, Any],
    device: torch.device = CPU,
) -> None:
    """Write this rank's `state` as the checkpoint after `epoch` epochs (collective: all ranks).

    Returns when every rank's file is on disk and `latest.json` points at it. A full
    volume on any rank stops every rank (dsgd_trainer.storage.write_together).
    """
    name = checkpoint_name(epoch)
    path = rank_file(directory, name, rank)

    def write_rank_file() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda file: torch.save(state, file))

    def write_latest() -> None:
        latest = CheckpointRef(epoch=epoch, step=step, checkpoint=name, world_size=world_size)
        record = {**asdict(latest), "saved_at": datetime.datetime.now(datetime.UTC).isoformat()}
        atomic_write(directory / LATEST, lambda file: file.write(json.dumps(record).encode()))

    write_together(write_rank_file, "training.checkpointDir", device)
    # Nobody deletes an older checkpoint before latest.json has moved past it.
    write_together(write_latest if rank == 0 else lambda: None, "training.checkpointDir", device)
    _prune(directory, epoch, rank)


def find_resume_point(
    directory: Path, rank: int, world_size: int, device: torch.device
) -> CheckpointRef | None:
    """The checkpoint to resume from, agreed by all ranks; None for a fresh start (collective).

    Rank 0 reads `latest.json` and tells the others. Raises CheckpointError on
    every rank when it was written by a run with another world size, or when a
    rank cannot see its own file (a checkpointDir that is not the same volume
    contents on every pod).
    """
    found: list[CheckpointRef | str | None] = [None]
    if rank == 0:
        try:
            found[0] = read_latest(directory)
        except CheckpointError as error:
            found[0] = str(error)
    dist.broadcast_object_list(found, src=0)
    latest = found[0]
    if isinstance(latest, str):
        raise CheckpointError(latest)
    if latest is None:
        return None
    if latest.world_size != world_size:
        raise CheckpointError(
            f"{directory / LATEST} belongs to a run with {latest.world_size} ranks, but this run "
            f"has {world_size}; keep the topology of the checkpointed run or use a fresh "
            "training.checkpointDir"
        )
    # On `device`: NCCL reduces only GPU tensors.
    present = torch.tensor(
        [int(rank_file(directory, latest.checkpoint, rank).is_file())], device=device
    )
    dist.all_reduce(present, op=dist.ReduceOp.MIN)
    if not present.item():
        raise CheckpointError(
            f"{directory / LATEST} points at {latest.checkpoint}, but not every rank can read "
            f"its rank-<r>.pt there; training.checkpointDir must hold the same files on every "
            "pod (one shared volume, or the volumes of the checkpointed run)"
        )
    return latest


def read_latest(directory: Path) -> CheckpointRef | None:
    """Parse `latest.json` in `directory`; None when there is none."""
    path = directory / LATEST
    try:
        record = json.loads(path.read_text())
        return CheckpointRef(
            epoch=int(record["epoch"]),
            step=int(record["step"]),
            checkpoint=str(record["checkpoint"]),
            world_size=int(record["world_size"]),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error


def load(directory: Path, latest: CheckpointRef, rank: int) -> dict[str, Any]:
    """This rank's state from checkpoint `latest`, tensors on the CPU.

    weights_only loading: a checkpoint volume is not a place to run pickled code from.
    """
    path = rank_file(directory, latest.checkpoint, rank)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot load {path}: {error}") from error
    if state.get("format") != FORMAT_VERSION or state.get("rank") != rank:
        raise CheckpointError(f"{path} is not a rank-{rank} checkpoint of this trainer version")
    return state


def capture_rng(augment_generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """Every random stream a run draws from, in a form that weights_only loading accepts."""
    numpy_state = np.random.get_state()
    return {
        # The generators' states are device-specific (a CPU generator's is 5056 bytes, a
        # CUDA one's 16): a resume on another kind of device is refused by restore_rng.
        "device": device.type,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": {
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "python": random.getstate(),
        "augment": augment_generator.get_state(),
    }


def restore_rng(
    state: dict[str, Any], augment_generator: torch.Generator, device: torch.device
) -> None:
    """Put back what `capture_rng` saved; CheckpointError if it was saved on another device type.

    (Checkpoints from before the "device" entry: a CUDA state is saved exactly
    when the device was a GPU.) Checked before anything is changed.
    """
    saved_on = state.get("device") or ("cuda" if state["cuda"] is not None else "cpu")
    if saved_on != device.type:
        raise CheckpointError(
            f"its random generators were saved by a run on {saved_on}, this run trains on "
            f"{device.type}: topology.gpu changed; restore it, or use a fresh "
            "training.checkpointDir"
        )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    augment_generator.set_state(state["augment"])


def to_device(state: Any, device: torch.device) -> Any:
    """`state` (nested dicts, lists, tuples) with every tensor moved to `device`."""
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {key: to_device(value, device) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(to_device(value, device) for value in state)
    return state


def _prune(directory: Path, current_epoch: int, rank: int) -> None:
    """Delete all but the newest KEEP checkpoints up to `current_epoch` (collective).

    Each rank deletes its own files (the directory may be one volume per pod);
    after a barrier rank 0 removes the emptied directories. Checkpoints newer
    than the current one are leftovers of a killed run that never finished them
    (latest.json never pointed there): deleted as well.
    """
    epochs = sorted(
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if entry.is_dir() and (match := CHECKPOINT_NAME.match(entry.name))
    )
    kept = [epoch for epoch, _ in epochs if epoch <= current_epoch][-KEEP:]
    stale = [entry for epoch, entry in epochs if epoch not in kept]
    for entry in stale:
        for name in (f"rank-{rank}.pt", f".rank-{rank}.pt.tmp"):
            (entry / name).unlink(missing_ok=True)
    dist.barrier()
    if rank == 0:
        for entry in stale:
            # Fails only where files of ranks of another run remain: left for the user.
            with contextlib.suppress(OSError):
                entry.rmdir()


@dataclass
class RunState:
    """What the loop carries across epochs and checkpoints (besides model/optimizer/algorithm)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # global optimizer steps taken
    samples: int = 0  # training samples processed by all ranks together
    train_seconds: float = 0.0  # wall time inside training steps, all attempts
    wall_seconds: float = 0.0  # wall time of the run up to the last checkpoint, all attempts
    record: dict[str, Any] | None = None  # the latest evaluation record
    checkpoints_skipped: int = 0  # unusable newer checkpoints skipped at the last resume


@dataclass
class Learner:
    """What one rank trains, and what its checkpoint file saves besides the RunState."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    algorithm: Algorithm
    augment_generator: torch.Generator
    device: torch.device


def snapshot(
    run: RunState, gang: GangPosition, steps_per_epoch: int, learner: Learner
) -> dict[str, Any]:
    """This rank's checkpoint contents (see dsgd_trainer.checkpoint)."""
    return {
        "format": FORMAT_VERSION,
        "rank": gang.rank,
        "world_size": gang.world_size,
        "epoch": run.epoch,
        "step": run.step,  # also the lr schedule's position: lr is a function of the step
        "steps_per_epoch": steps_per_epoch,
        "samples": run.samples,
        "train_seconds": run.train_seconds,
        "wall_seconds": run.wall_seconds,
        "record": run.record,
        "model": learner.model.state_dict(),
        "optimizer": learner.optimizer.state_dict(),
        "algorithm": learner.algorithm.state_dict(),
        "rng": capture_rng(learner.augment_generator, learner.device),
    }
