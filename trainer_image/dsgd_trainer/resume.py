"""Resuming a run from its checkpoints: the newest one every rank can use, loudly.

`resume` finds the checkpoint latest.json names (dsgd_trainer.checkpoint) and
puts it back into the learner and the run state. A checkpoint that cannot be
used (a rank file corrupted on the volume or cut short by a copy, state that
does not fit) is skipped for the previous kept one that every rank can load
and apply: the run loses the epochs in between, not the whole run. Each rank
that finds a problem says so, rank 0 says which checkpoint it falls back to,
and the count reaches the job as a Warning Event through the trainer's
metrics (dsgd_checkpoints_skipped_total). Only when no kept checkpoint is
usable does the run end with exit code 64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from dsgd_contract import exit_codes

from dsgd_trainer.checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    CheckpointRef,
    Learner,
    RunState,
    checkpoint_name,
    find_resume_point,
    load,
    restore_rng,
    to_device,
)
from dsgd_trainer.gang import GangPosition
from dsgd_trainer.stopping import TrainerExit


def resume(
    directory: Path, gang: GangPosition, steps_per_epoch: int, learner: Learner, run: RunState
) -> bool:
    """Load the newest usable checkpoint into `learner` and `run` if there is one (collective).

    Returns whether it resumed; `run.checkpoints_skipped` counts the newer
    checkpoints found unusable on the way. TrainerExit(64) when none is usable.
    """
    try:
        latest = find_resume_point(directory, gang.rank, gang.world_size, learner.device)
        if latest is None:
            return False
        state, skipped = _newest_usable(directory, latest, gang, steps_per_epoch, learner)
    except CheckpointError as error:
        raise TrainerExit(exit_codes.INVALID_CONFIG, f"checkpoint error: {error}") from error
    run.epoch, run.step = state["epoch"], state["step"]
    run.samples = state["samples"]
    run.train_seconds = state["train_seconds"]
    run.wall_seconds = state["wall_seconds"]
    run.record = state["record"]
    run.checkpoints_skipped = skipped
    return True


def _candidates(directory: Path, latest: CheckpointRef) -> list[CheckpointRef]:
    """The checkpoint latest.json names, then the older kept ones, newest first."""
    names = (CHECKPOINT_NAME.match(entry.name) for entry in directory.iterdir())
    older = sorted(int(m.group(1)) for m in names if m and int(m.group(1)) < latest.epoch)
    return [latest] + [
        CheckpointRef(epoch, -1, checkpoint_name(epoch), latest.world_size)
        for epoch in reversed(older)
    ]


def _newest_usable(
    directory: Path,
    latest: CheckpointRef,
    gang: GangPosition,
    steps_per_epoch: int,
    learner: Learner,
) -> tuple[dict[str, Any], int]:
    """(this rank's state of the newest checkpoint every rank can use, how many were skipped).

    Collective: one all-reduce per candidate decides whether all ranks could
    load and apply their file. Raises CheckpointError when none is usable.
    """
    reasons = []
    candidates = _candidates(directory, latest)
    for skipped, candidate in enumerate(candidates):
        state, problem = None, None
        try:
            state = load(directory, candidate, gang.rank)
            _apply(state, directory / candidate.checkpoint, steps_per_epoch, learner)
        except CheckpointError as error:
            problem = str(error)
        usable = torch.tensor([int(problem is None)], device=learner.device)
        dist.all_reduce(usable, op=dist.ReduceOp.MIN)
        if usable.item():
            return state, skipped
        if problem is not None:
            where = directory / candidate.checkpoint
            print(f"WARNING: rank {gang.rank} cannot resume from {where}: {problem}", flush=True)
        reasons.append(f"{candidate.checkpoint}: {problem or 'unusable on another rank'}")
        if gang.rank == 0 and skipped + 1 < len(candidates):
            print(
                f"WARNING: checkpoint {candidate.checkpoint} is unusable; falling back to "
                f"{candidates[skipped + 1].checkpoint}: the epochs after it are trained again",
                flush=True,
            )
    raise CheckpointError(f"no usable checkpoint in {directory}: " + "; ".join(reasons))


def _apply(state: dict[str, Any], where: Path, steps_per_epoch: int, learner: Learner) -> None:
    """Put a loaded rank state into `learner`; CheckpointError when it does not fit."""
    if state["steps_per_epoch"] != steps_per_epoch:
        raise CheckpointError(
            f"{where} holds a run with {state['steps_per_epoch']} steps per epoch, this "
            f"one has {steps_per_epoch}: the dataset or batch size changed; use a fresh "
            "training.checkpointDir"
        )
    try:
        learner.model.load_state_dict(state["model"])
        learner.optimizer.load_state_dict(state["optimizer"])
        learner.algorithm.load_state_dict(to_device(state["algorithm"], learner.device))
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"the checkpoint in {where} does not fit this run's model, optimizer or "
            f"algorithm: {error}"
        ) from error
    try:
        restore_rng(state["rng"], learner.augment_generator, learner.device)
    except (CheckpointError, RuntimeError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{where}: {error}") from error
