"""The run's result files in training.outputDir, written by rank 0.

- `metrics.jsonl`: one JSON object per evaluation (per epoch), appended as the
  run goes. A resumed run first drops the records of epochs after its
  checkpoint, so the file never holds an epoch twice.
- `summary.json`: written once at the end (atomically): the fields of the pod
  contract and a few more (see `summarize`).
- on a cluster, the same results in compact form as the container's termination
  message (`write_results_message`, format in `dsgd_contract.run_results`), from
  which the operator fills the job's `status.results`.

Also the loop's words about a run: its start line (`describe`), one line per
epoch (`epoch_line`), and the directories it writes to (`prepare_directories`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from dsgd_contract.experiment import METRICS_FILE, SUMMARY_FILE
from dsgd_contract.run_results import RESULTS_MESSAGE_ENV, encode_results

from dsgd_trainer.stopping import TrainerExit
from dsgd_trainer.storage import atomic_write

if TYPE_CHECKING:  # annotations only: reading and writing results needs no torch
    import torch

    from dsgd_trainer.algorithms import Algorithm
    from dsgd_trainer.checkpoint import RunState
    from dsgd_trainer.gang import GangPosition
    from dsgd_trainer.schedule import LearningRateSchedule


def append_record(output_dir: Path, record: dict[str, Any]) -> None:
    """Append one evaluation record as a line of metrics.jsonl.

    All of the line or none of it: on a full volume the file is cut back to
    its previous length, and the OSError (ENOSPC) propagates.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / METRICS_FILE
    line = (json.dumps(record) + "\n").encode()
    # Unbuffered: the write reaches the OS here, not again when the file closes.
    with open(path, "ab", buffering=0) as file:
        before = file.tell()
        try:
            if file.write(line) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as error:
            with contextlib.suppress(OSError):  # what cannot be cut back is cut short
                file.truncate(before)
            raise OSError(error.errno, error.strerror, str(path)) from error


def drop_records_after(output_dir: Path, epoch: int) -> None:
    """Keep only metrics.jsonl records with `epoch` <= `epoch` (a resume from that epoch)."""
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by the crash we are recovering from
        if isinstance(record, dict) and record.get("epoch", 0) <= epoch:
            kept.append(line)
    write_atomically(path, "".join(line + "\n" for line in kept))


def read_records(output_dir: Path) -> list[dict[str, Any]]:
    path = output_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomically(output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def write_results_message(output_dir: Path, summary: dict[str, Any]) -> str | None:
    """Write the run's results message where RESULTS_MESSAGE_ENV says (the container's
    terminationMessagePath); None when written or not asked for, else why not.

    Not fatal when it fails: summary.json and metrics.jsonl are the results; the
    message only spares the operator reading them from a volume.
    """
    path = os.environ.get(RESULTS_MESSAGE_ENV)
    if not path:
        return None
    try:
        message = encode_results(summary, read_records(output_dir))
        with open(path, "w", encoding="utf-8") as file:
            file.write(message)
    except (OSError, ValueError) as error:
        return f"{RESULTS_MESSAGE_ENV} {path}: results message not written: {error}"
    return None


def write_atomically(path: Path, text: str) -> None:
    atomic_write(path, lambda file: file.write(text.encode()))


def written_directories(config: TrainingConfig) -> dict[str, Path]:
    """The directories a run writes to, by the field that names them."""
    return {
        "training.checkpointDir": Path(config.training.checkpoint_dir),
        "training.outputDir": Path(config.training.resolved_output_dir),
    }


def prepare_directories(config: TrainingConfig, gang: GangPosition) -> tuple[Path, Path]:
    """(checkpointDir, outputDir), created and checked writable now rather than after epoch 1.

    On a cluster a missing volume mount is the usual cause: say so (exit code 64).
    """
    checkpoint_dir = Path(config.training.checkpoint_dir)
    output_dir = Path(config.training.resolved_output_dir)
    fields = [("training.checkpointDir", checkpoint_dir)]
    if gang.rank == 0:  # only rank 0 writes metrics.jsonl and summary.json
        fields.append(("training.outputDir", output_dir))
    for field, directory in fields:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            writable = os.access(directory, os.W_OK | os.X_OK)
            problem = "" if writable else "permission denied"
        except OSError as error:
            problem = error.strerror or str(error)
        if problem:
            raise TrainerExit(
                exit_codes.INVALID_CONFIG,
                f"error: {field} {directory} is not a writable directory ({problem}); mount a "
                "volume there (template.volumes/volumeMounts) or point the field elsewhere",
            )
    return checkpoint_dir, output_dir


def communication(algorithm: Algorithm) -> dict[str, Any]:
    """This rank's communication so far, as recorded in metrics.jsonl and summary.json."""
    counters = algorithm.counters
    return {
        "sync_rounds": dict(counters.rounds),
        "communicated_bytes": sum(counters.bytes.values()),
        "communicated_bytes_by_scope": dict(counters.bytes),
        "payload_bytes": sum(counters.payload_bytes.values()),
        "payload_bytes_by_scope": dict(counters.payload_bytes),
        "communication_seconds": counters.communication_seconds,
    }


def summarize(
    config: TrainingConfig, gang: GangPosition, run: RunState, algorithm: Algorithm
) -> dict[str, Any]:
    """summary.json: the pod contract's fields (communication is rank 0's) and a few more."""
    record = run.record or {}
    return {
        "algorithm": algorithm.name,
        "model": config.training.model,
        "dataset": config.training.dataset.name,
        "world_size": gang.world_size,
        "nodes": config.topology.nodes,
        "processes_per_node": config.topology.processes_per_node,
        "epochs": run.epoch,
        "steps": run.step,
        "samples": run.samples,
        "final_train_loss": record.get("train_loss"),
        "final_train_accuracy": record.get("train_accuracy"),
        "final_test_loss": record.get("test_loss"),
        "final_test_accuracy": record.get("test_accuracy"),
        **communication(algorithm),
        "samples_per_second": run.samples / run.train_seconds if run.train_seconds else None,
        "wall_seconds": run.wall_seconds,
    }


def describe(
    config: TrainingConfig,
    gang: GangPosition,
    device: torch.device,
    steps_per_epoch: int,
    schedule: LearningRateSchedule,
) -> str:
    return (
        f"{config.algorithm.name}: {config.training.model} on {config.training.dataset.name}, "
        f"{gang.world_size} rank(s) on {device.type}, global batch "
        f"{config.training.batch_size_per_process * gang.world_size}, "
        f"{steps_per_epoch} steps/epoch × {config.training.epochs} epochs, "
        f"lr {schedule.base_lr:g} → {schedule.peak_lr:g} over {schedule.warmup_steps} steps"
    )


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    rounds = record["sync_rounds"]
    return (
        f"epoch {record['epoch']:.4g}/{epochs} step {record['step']} "
        f"lr {record['learning_rate']:.4g} "
        f"| train loss {record['train_loss']:.4f} acc {fmt(record['train_accuracy'])} "
        f"| test loss {record['test_loss']:.4f} acc {fmt(record['test_accuracy'])} "
        f"| {record['samples_per_second']:,.0f} samples/s "
        f"| sync rounds global {rounds.get('global', 0)} intra-node {rounds.get('intra_node', 0)} "
        f"| {record['communicated_bytes'] / 1e6:,.2f} MB sent"
    )


def fmt(accuracy: float | None) -> str:
    return "n/a" if accuracy is None else f"{100 * accuracy:.2f}%"
