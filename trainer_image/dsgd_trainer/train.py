"""The training loop: `python -m dsgd_trainer [--config FILE]`, one process per rank under torchrun.

Read top to bottom, `train()` is the whole run:

1. the config, validated (by `__main__`, before torch is imported), must match the gang;
2. every rank seeds the same generator and builds the same model replica, then
   re-seeds per rank (dropout, augmentation);
3. data on the device, the process group, metrics, optimizer, lr schedule, algorithm;
4. resume from the latest checkpoint if there is one;
5. epochs × steps of `algorithm.step_context / forward / backward / optimizer.step /
   algorithm.after_optimizer_step`, lr set from the schedule before each step;
6. at each epoch's end: one all-reduce of the epoch's training statistics (which is
   also the divergence check), evaluation of the synchronized model, a log line,
   a metrics.jsonl record, a checkpoint when due;
7. summary.json, process group destroyed, exit 0.

Exit codes (dsgd_trainer.exit_codes): 64 bad config/model/checkpoint, 65 bad data,
66 diverged, 128+N after signal N (SIGTERM: stop after the current step, keep the
last checkpoint). Anything unexpected propagates (a traceback, exit 1: retryable).

Divergence check, decided here: each step adds its loss to an on-device sum (no
host sync); at the epoch's end that sum is all-reduced with the accuracy and
sample counts we report anyway, so a NaN/inf on any rank makes the global sum
non-finite on every rank and all ranks stop together, with the same exit code
66, at the same point. The price is at most one epoch of wasted compute after a
divergence, in exchange for no extra collective or GPU sync per step.
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import record

from dsgd_trainer import checkpoint, results
from dsgd_trainer.algorithms import Algorithm, build_algorithm, make_dist_context
from dsgd_trainer.data import DataLoadError, EpochSampler, TensorDataset, load_data
from dsgd_trainer.distributed import (
    DeviceError,
    LaunchEnv,
    destroy_process_group,
    init_process_group,
    select_device,
)
from dsgd_trainer.metrics import PUBLISH_INTERVAL, Progress, start_metrics
from dsgd_trainer.models import ModelError, build_model
from dsgd_trainer.optim import build_optimizer
from dsgd_trainer.schedule import LearningRateSchedule
from dsgd_trainer.stopping import StopRequest, stop_when_parent_dies

#: Test-set batch size: large, since evaluation keeps no activations for backward.
EVAL_BATCH_SIZE = 1024


class TrainerExit(Exception):
    """End the run with `code`, printing `message` (on local rank 0 unless `every_rank`)."""

    def __init__(self, code: int, message: str, every_rank: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.every_rank = every_rank


@record  # torchrun's error file gets the traceback of anything unexpected
def main(config: TrainingConfig) -> int:
    """Run one rank of training with a validated `config`; return the process exit code."""
    launch = LaunchEnv.from_env()
    if launch.under_torchrun:
        stop_when_parent_dies()
    stop = StopRequest()
    try:
        return train(config, launch, stop)
    except TrainerExit as error:
        if error.every_rank or launch.local_rank == 0:
            print(error.message, file=sys.stderr, flush=True)
        return error.code
    except Exception:
        if stop.requested:
            # A peer that stopped first closed its connections under a collective of ours.
            return stop.exit_code
        raise
    finally:
        destroy_process_group()


def train(config: TrainingConfig, launch: LaunchEnv, stop: StopRequest) -> int:
    started = time.perf_counter()
    check_topology(config, launch)
    checkpoint_dir, output_dir = prepare_directories(config, launch)
    seed, epochs = config.training.seed, config.training.epochs
    try:
        device = select_device(config.topology.gpu, launch.local_rank)
    except DeviceError as error:
        raise TrainerExit(exit_codes.INVALID_CONFIG, f"error: {error}", every_rank=True) from error

    # Same seed on every rank before the model is built: identical initial replicas.
    seed_everything(seed)
    try:
        data = load_data(config.training.dataset, seed, device)
        sampler = EpochSampler(
            len(data.train),
            seed,
            launch.rank,
            launch.world_size,
            config.training.batch_size_per_process,
        )
    except DataLoadError as error:
        raise TrainerExit(exit_codes.DATA_ERROR, f"data error: {error}") from error
    try:
        model = build_model(config.training.model, data.input_shape, data.num_classes)
    except ModelError as error:
        raise TrainerExit(exit_codes.INVALID_CONFIG, f"training.model: {error}") from error
    model.to(device)

    init_process_group(launch, device)
    ctx = make_dist_context(device)
    metrics, metrics_server = start_metrics(launch)
    steps_per_epoch = len(sampler)
    schedule = LearningRateSchedule.from_config(config, launch.world_size, steps_per_epoch)
    optimizer = build_optimizer(model, config.optimizer)
    algorithm = build_algorithm(config, model, ctx, steps_per_epoch)
    # From here on randomness differs by rank (dropout, augmentation): independent streams.
    rank_seed = int(np.random.SeedSequence([seed, launch.rank]).generate_state(1)[0])
    seed_everything(rank_seed)
    learner = Learner(
        model, optimizer, algorithm, torch.Generator(device).manual_seed(rank_seed), device
    )

    run = RunState()
    if resume(checkpoint_dir, launch, steps_per_epoch, learner, run) and launch.rank == 0:
        results.drop_records_after(output_dir, run.epoch)
        log(f"resumed from {checkpoint_dir} after epoch {run.epoch} (step {run.step})")
    if launch.rank == 0:
        log(describe(config, launch, device, steps_per_epoch, schedule))
    use_bf16 = config.training.precision == "bf16" and device.type == "cuda"
    if config.training.precision == "bf16" and not use_bf16 and launch.rank == 0:
        log("note: training.precision bf16 applies on GPUs; training in fp32 on the CPU")
    wall_before = run.wall_seconds
    # Show up on the metrics page at once (with a resumed run's totals), not after a while.
    metrics.publish(
        progress(run, algorithm, schedule(run.step), RunningStats(device), steps_per_epoch)
    )
    if run.record is not None:
        metrics.publish_evaluation(run.record["test_loss"], run.record["test_accuracy"])

    for epoch in range(run.epoch, epochs):
        model.train()
        epoch_stats = RunningStats(device)
        window = RunningStats(device)  # since the last metrics update
        last_step_end = time.perf_counter()
        for indices in sampler.batches(epoch):
            if stop.requested:
                raise TrainerExit(stop.exit_code, "stopped on request; last checkpoint kept")
            lr = schedule(run.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            indices = indices.to(device, non_blocking=True)
            inputs, targets = data.train.inputs[indices], data.train.targets[indices]
            if data.augment is not None:
                inputs = data.augment(inputs, learner.augment_generator)

            with algorithm.step_context(run.step):
                with autocast(device, use_bf16):
                    outputs = algorithm.training_model()(inputs)
                loss = F.cross_entropy(outputs.float(), targets)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            algorithm.after_optimizer_step(run.step)
            run.step += 1

            with torch.no_grad():
                epoch_stats.add(loss, outputs, targets)
                window.add(loss, outputs, targets)
            run.samples += len(targets) * launch.world_size
            now = time.perf_counter()
            # Without a device sync this is launch-to-launch time: right on average, noisy per step.
            metrics.observe_step(now - last_step_end)
            run.train_seconds += now - last_step_end
            last_step_end = now
            if now - window.since >= PUBLISH_INTERVAL:
                metrics.publish(progress(run, algorithm, lr, window, steps_per_epoch))
                window = RunningStats(device)

        # One collective per epoch: the global training statistics, which are also the
        # divergence check (a NaN/inf on any rank makes the sum non-finite on all of them).
        totals = epoch_stats.totals()
        dist.all_reduce(totals)
        loss_sum, correct_sum, count = totals.tolist()
        if not math.isfinite(loss_sum):
            raise TrainerExit(
                exit_codes.DIVERGED,
                f"training diverged: the training loss became {loss_sum} in epoch {epoch + 1} "
                f"(steps {epoch * steps_per_epoch}-{run.step - 1}, lr {lr:g}); lower "
                "optimizer.learningRate, lengthen optimizer.warmupEpochs or check the data",
            )
        epoch_seconds = time.perf_counter() - epoch_stats.since
        run.epoch = epoch + 1

        eval_start = time.perf_counter()
        test_loss, test_accuracy = evaluate(
            algorithm.synchronize_for_evaluation(), data.test, launch, use_bf16
        )
        model.train()  # the evaluated model may be the training model itself
        run.record = {
            "epoch": run.epoch,
            "step": run.step,
            "samples": run.samples,
            "learning_rate": lr,
            "train_loss": loss_sum / count,
            "train_accuracy": correct_sum / count,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "samples_per_second": count / epoch_seconds,
            "epoch_seconds": epoch_seconds,
            "eval_seconds": time.perf_counter() - eval_start,
            **communication(algorithm),
            "wall_seconds": wall_before + time.perf_counter() - started,
        }
        metrics.publish(progress(run, algorithm, lr, window, steps_per_epoch))
        metrics.publish_evaluation(test_loss, test_accuracy)
        if launch.rank == 0:
            results.append_record(output_dir, run.record)
            log(epoch_line(run.record, epochs))

        every = config.training.checkpoint_every
        if every and (run.epoch % every == 0 or run.epoch == epochs):
            if stop.requested:  # a save is collective: peers may be gone already
                raise TrainerExit(stop.exit_code, "stopped on request; last checkpoint kept")
            run.wall_seconds = wall_before + time.perf_counter() - started
            state = snapshot(run, launch, steps_per_epoch, learner)
            checkpoint.save(
                checkpoint_dir, run.epoch, run.step, launch.rank, launch.world_size, state
            )

    run.wall_seconds = wall_before + time.perf_counter() - started
    if launch.rank == 0:
        summary = summarize(config, launch, run, algorithm)
        results.write_summary(output_dir, summary)
        log(
            f"done: {summary['epochs']} epochs, {summary['steps']} steps, "
            f"test accuracy {fmt(summary['final_test_accuracy'])}, "
            f"{summary['wall_seconds']:.1f} s; results in {output_dir}"
        )
    if metrics_server is not None:
        metrics_server.shutdown()
    return exit_codes.OK


@dataclass
class RunState:
    """What the loop carries across epochs and checkpoints (besides model/optimizer/algorithm)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # global optimizer steps taken
    samples: int = 0  # training samples processed by all ranks together
    train_seconds: float = 0.0  # wall time inside training steps, all attempts
    wall_seconds: float = 0.0  # wall time of the run up to the last checkpoint, all attempts
    record: dict[str, Any] | None = None  # the latest evaluation record


@dataclass
class Learner:
    """What one rank trains, and what its checkpoint file saves besides the RunState."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    algorithm: Algorithm
    augment_generator: torch.Generator
    device: torch.device


class RunningStats:
    """Σ loss·n and Σ correct on the device (no step waits for the GPU), n on the host."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        self.count = 0
        self.since = time.perf_counter()

    def add(self, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        correct = (outputs.argmax(dim=1) == targets).sum()
        self.sums += torch.stack([loss.double() * len(targets), correct.double()])
        self.count += len(targets)

    def totals(self) -> torch.Tensor:
        """[Σ loss·n, Σ correct, n] as one float64 tensor (for an all-reduce)."""
        return torch.cat([self.sums, self.sums.new_tensor([self.count])])


def check_topology(config: TrainingConfig, launch: LaunchEnv) -> None:
    """The gang torchrun started must be the one the config describes (algorithms depend on it)."""
    topology = config.topology
    if not launch.under_torchrun:
        if topology.world_size != 1:
            raise TrainerExit(
                exit_codes.INVALID_CONFIG,
                f"error: topology asks for {topology.world_size} ranks; start them with "
                "`python -m dsgd_trainer.launch` (torchrun), or set nodes and "
                "processesPerNode to 1",
            )
        return
    if (launch.world_size, launch.local_world_size) != (
        topology.world_size,
        topology.processes_per_node,
    ):
        raise TrainerExit(
            exit_codes.INVALID_CONFIG,
            f"error: topology says {topology.nodes} node(s) × {topology.processes_per_node} "
            f"process(es), but torchrun started {launch.world_size} rank(s), "
            f"{launch.local_world_size} per node (PET_NNODES / PET_NPROC_PER_NODE must match)",
        )


def prepare_directories(config: TrainingConfig, launch: LaunchEnv) -> tuple[Path, Path]:
    """(checkpointDir, outputDir), created and checked writable now rather than after epoch 1.

    On a cluster a missing volume mount is the usual cause: say so (exit code 64).
    """
    checkpoint_dir = Path(config.training.checkpoint_dir)
    output_dir = Path(config.training.resolved_output_dir)
    fields = [("training.checkpointDir", checkpoint_dir)]
    if launch.rank == 0:  # only rank 0 writes metrics.jsonl and summary.json
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager[None]:
    """bfloat16 autocast of the forward pass on GPUs when enabled (the loss stays fp32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def resume(
    directory: Path, launch: LaunchEnv, steps_per_epoch: int, learner: Learner, run: RunState
) -> bool:
    """Load the latest checkpoint into `learner` and `run` if there is one (collective).

    Returns whether it resumed; TrainerExit(64) when the checkpoint cannot be used.
    """
    try:
        latest = checkpoint.find_resume_point(
            directory, launch.rank, launch.world_size, learner.device
        )
        if latest is None:
            return False
        state = checkpoint.load(directory, latest, launch.rank)
        if state["steps_per_epoch"] != steps_per_epoch:
            raise checkpoint.CheckpointError(
                f"{directory} holds a run with {state['steps_per_epoch']} steps per epoch, this "
                f"one has {steps_per_epoch}: the dataset or batch size changed; use a fresh "
                "training.checkpointDir"
            )
        try:
            learner.model.load_state_dict(state["model"])
            learner.optimizer.load_state_dict(state["optimizer"])
            algorithm_state = checkpoint.to_device(state["algorithm"], learner.device)
            learner.algorithm.load_state_dict(algorithm_state)
        except (RuntimeError, ValueError, KeyError) as error:
            raise checkpoint.CheckpointError(
                f"the checkpoint in {directory / latest.checkpoint} does not fit this run's "
                f"model, optimizer or algorithm: {error}"
            ) from error
        checkpoint.restore_rng(state["rng"], learner.augment_generator, learner.device)
    except checkpoint.CheckpointError as error:
        raise TrainerExit(exit_codes.INVALID_CONFIG, f"checkpoint error: {error}") from error
    run.epoch, run.step = state["epoch"], state["step"]
    run.samples = state["samples"]
    run.train_seconds = state["train_seconds"]
    run.wall_seconds = state["wall_seconds"]
    run.record = state["record"]
    return True


def snapshot(
    run: RunState, launch: LaunchEnv, steps_per_epoch: int, learner: Learner
) -> dict[str, Any]:
    """This rank's checkpoint contents (see dsgd_trainer.checkpoint)."""
    return {
        "format": checkpoint.FORMAT_VERSION,
        "rank": launch.rank,
        "world_size": launch.world_size,
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
        "rng": checkpoint.capture_rng(learner.augment_generator, learner.device),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, test: TensorDataset, launch: LaunchEnv, use_bf16: bool
) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` on the whole test set, identical on every rank.

    Each rank evaluates a contiguous 1/K of the test set and one all-reduce adds
    the sums up: K times faster than every rank doing all of it, same numbers.
    """
    model.eval()
    device = test.inputs.device
    shard = torch.tensor_split(torch.arange(len(test)), launch.world_size)[launch.rank]
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # Σ loss, Σ correct, n
    for indices in shard.split(EVAL_BATCH_SIZE):
        indices = indices.to(device)
        inputs, targets = test.inputs[indices], test.targets[indices]
        with autocast(device, use_bf16):
            outputs = model(inputs)
        sums[0] += F.cross_entropy(outputs.float(), targets, reduction="sum")
        sums[1] += (outputs.argmax(dim=1) == targets).sum()
        sums[2] += len(targets)
    dist.all_reduce(sums)
    loss_sum, correct_sum, count = sums.tolist()
    return loss_sum / count, correct_sum / count


def communication(algorithm: Algorithm) -> dict[str, Any]:
    """This rank's communication so far, as recorded in metrics.jsonl and summary.json."""
    counters = algorithm.counters
    return {
        "sync_rounds": dict(counters.rounds),
        "communicated_bytes": sum(counters.bytes.values()),
        "communicated_bytes_by_scope": dict(counters.bytes),
        "communication_seconds": counters.communication_seconds,
    }


def progress(
    run: RunState, algorithm: Algorithm, lr: float, window: RunningStats, steps_per_epoch: int
) -> Progress:
    """This rank's progress for the metrics; `window` holds the batches since the last update."""
    loss_sum, correct_sum, count = window.totals().tolist()  # the one host sync per update
    seconds = time.perf_counter() - window.since
    counters = algorithm.counters
    return Progress(
        epoch=run.step / steps_per_epoch,
        steps=run.step,
        samples=run.samples // dist.get_world_size(),  # this rank's share
        learning_rate=lr,
        train_loss=loss_sum / count if count else None,
        train_accuracy=correct_sum / count if count else None,
        samples_per_second=count / seconds if count and seconds > 0 else None,
        sync_rounds=dict(counters.rounds),
        communicated_bytes=dict(counters.bytes),
        communication_seconds=counters.communication_seconds,
        compute_seconds=max(0.0, run.train_seconds - counters.communication_seconds),
    )


def summarize(
    config: TrainingConfig, launch: LaunchEnv, run: RunState, algorithm: Algorithm
) -> dict[str, Any]:
    """summary.json: the pod contract's fields (communication is rank 0's) and a few more."""
    record = run.record or {}
    return {
        "algorithm": algorithm.name,
        "model": config.training.model,
        "dataset": config.training.dataset.name,
        "world_size": launch.world_size,
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
    launch: LaunchEnv,
    device: torch.device,
    steps_per_epoch: int,
    schedule: LearningRateSchedule,
) -> str:
    return (
        f"{config.algorithm.name}: {config.training.model} on {config.training.dataset.name}, "
        f"{launch.world_size} rank(s) on {device.type}, global batch "
        f"{config.training.batch_size_per_process * launch.world_size}, "
        f"{steps_per_epoch} steps/epoch × {config.training.epochs} epochs, "
        f"lr {schedule.base_lr:g} → {schedule.peak_lr:g} over {schedule.warmup_steps} steps"
    )


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    rounds = record["sync_rounds"]
    return (
        f"epoch {record['epoch']}/{epochs} step {record['step']} lr {record['learning_rate']:.4g} "
        f"| train loss {record['train_loss']:.4f} acc {fmt(record['train_accuracy'])} "
        f"| test loss {record['test_loss']:.4f} acc {fmt(record['test_accuracy'])} "
        f"| {record['samples_per_second']:,.0f} samples/s "
        f"| sync rounds global {rounds.get('global', 0)} intra-node {rounds.get('intra_node', 0)} "
        f"| {record['communicated_bytes'] / 1e6:,.2f} MB sent"
    )


def fmt(accuracy: float | None) -> str:
    return "n/a" if accuracy is None else f"{100 * accuracy:.2f}%"


def log(message: str) -> None:
    print(f"[dsgd] {message}", flush=True)
