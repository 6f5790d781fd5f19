"""The training loop: `python -m dsgd_trainer [--config FILE]`, one process per rank under torchrun.

Read top to bottom, `train()` is the whole run:

1. the config, validated (by `__main__`, before torch is imported), must match the gang;
2. every rank seeds the same generator and builds the same model replica, then
   re-seeds per rank (dropout, augmentation);
3. data on the device, the process group, metrics, optimizer, lr schedule, algorithm;
4. resume from the latest checkpoint if there is one;
5. epochs × steps of `algorithm.step_context / forward / backward / optimizer.step /
   algorithm.after_optimizer_step`, lr set from the schedule before each step
   (dsgd_trainer.step.TrainStep: nothing else per step but one on-device
   accumulation of the statistics, and the step's time in the metrics);
6. every `training.evalEvery` steps (default: at each epoch's end) and at the end:
   one all-reduce of the training statistics since the last evaluation (which is
   also the divergence check), evaluation of the model the algorithm holds, a log
   line, a metrics.jsonl record; at epoch ends, a checkpoint when due;
7. summary.json, process group destroyed, exit 0.

Exit codes (dsgd_contract.exit_codes): 64 bad config/model/checkpoint, 65 bad data,
66 diverged, 74 checkpointDir or outputDir full (one line naming it), 128+N after
signal N (SIGTERM: stop after the current step, keep the last checkpoint). Anything
unexpected propagates (a traceback, exit 1: retryable).

Divergence check, decided here: each step adds its loss to an on-device sum (no
host sync); at each evaluation that sum is all-reduced with the accuracy and
sample counts we report anyway, so a NaN/inf on any rank makes the global sum
non-finite on every rank and all ranks stop together, with the same exit code
66, at the same point. The price is at most one evaluation interval of wasted
compute after a divergence, in exchange for no extra collective or GPU sync per step.
"""

from __future__ import annotations

import math
import random
import sys
import time
from functools import partial

import numpy as np
import torch
import torch.distributed as dist
from dsgd_contract import exit_codes
from dsgd_contract.config import TrainingConfig
from dsgd_contract.training_steps import eval_interval_steps
from torch.distributed.elastic.multiprocessing.errors import record

from dsgd_trainer import checkpoint, results
from dsgd_trainer.algorithms import (
    Algorithm,
    build_algorithm,
    make_dist_context,
    uses_intra_node_groups,
)
from dsgd_trainer.checkpoint import Learner, RunState, snapshot
from dsgd_trainer.data import DataLoadError, EpochSampler, load_data
from dsgd_trainer.distributed import (
    DeviceError,
    bf16_autocast,
    check_topology,
    init_process_group,
    leave_process_group,
    select_device,
)
from dsgd_trainer.evaluation import EVALUATION_WINDOW, METRICS_WINDOW, RunningStats, evaluate
from dsgd_trainer.gang import GangPosition
from dsgd_trainer.metrics import PUBLISH_INTERVAL, RankProgress, start_metrics
from dsgd_trainer.models import ModelError, build_model
from dsgd_trainer.optim import build_optimizer
from dsgd_trainer.parameter_server import rpc_world
from dsgd_trainer.results import (
    communication,
    describe,
    epoch_line,
    fmt,
    prepare_directories,
    written_directories,
)
from dsgd_trainer.resume import resume
from dsgd_trainer.schedule import LearningRateSchedule
from dsgd_trainer.step import TrainStep
from dsgd_trainer.stop_vote import StopVote
from dsgd_trainer.stopping import StopRequest, TrainerExit, stop_when_parent_dies
from dsgd_trainer.storage import disk_full_exit, is_disk_full, write_together


@record  # torchrun's error file gets the traceback of anything unexpected
def main(config: TrainingConfig) -> int:
    """Run one rank of training with a validated `config`; return the process exit code."""
    gang = GangPosition.from_env()
    if gang.under_torchrun:
        stop_when_parent_dies()
    stop = StopRequest()
    agreed = False  # whether every rank ends here together (else the group is aborted)
    try:
        code = train(config, gang, stop)
        agreed = True
        return code
    except TrainerExit as error:
        agreed = error.agreed
        if error.every_rank or gang.local_rank == 0:
            print(error.message, file=sys.stderr, flush=True)
        return error.code
    except OSError as error:
        if not is_disk_full(error):
            raise
        full = disk_full_exit(error, written_directories(config))
        print(full.message, file=sys.stderr, flush=True)
        return full.code
    except Exception:
        if stop.requested:
            # A peer that stopped first closed its connections under a collective of ours.
            return stop.exit_code
        raise
    finally:
        rpc_world.leave(graceful=False)  # downpour-sgd's, unless train() left it in order
        leave_process_group(abort=not agreed)


def train(config: TrainingConfig, gang: GangPosition, stop: StopRequest) -> int:
    started = time.perf_counter()
    check_topology(config, gang)
    checkpoint_dir, output_dir = prepare_directories(config, gang)
    seed, epochs = config.training.seed, config.training.epochs
    try:
        device = select_device(config.topology.gpu, gang.local_rank)
    except DeviceError as error:
        raise TrainerExit(exit_codes.INVALID_CONFIG, f"error: {error}", every_rank=True) from error

    # Same seed on every rank before the model is built: identical initial replicas.
    seed_everything(seed)
    try:
        data = load_data(config.training.dataset, seed, device)
        sampler = EpochSampler(
            len(data.train),
            seed,
            gang.rank,
            gang.world_size,
            config.training.batch_size_per_process,
        )
    except DataLoadError as error:
        # Every rank: the first rank to exit makes torchrun stop the others, so rank 0
        # may never get to print; the same line twice beats none.
        raise TrainerExit(exit_codes.DATA_ERROR, f"data error: {error}", every_rank=True) from error
    try:
        model = build_model(
            config.training.model,
            data.input_shape,
            data.num_classes,
            zero_init_residual=config.training.zero_init_residual,
        )
    except ModelError as error:
        raise TrainerExit(exit_codes.INVALID_CONFIG, f"training.model: {error}") from error
    model.to(device)

    init_process_group(gang, device)
    vote = StopVote(stop, device)
    ctx = make_dist_context(
        device, gang, intra_node_groups=uses_intra_node_groups(config), stop_vote=vote
    )
    metrics, metrics_server = start_metrics(gang)
    steps_per_epoch = len(sampler)
    schedule = LearningRateSchedule.from_config(config, gang.world_size, steps_per_epoch)
    optimizer = build_optimizer(
        model, config.optimizer, sign_steps=config.algorithm.local_sign_steps
    )
    algorithm = build_algorithm(config, model, ctx, steps_per_epoch)
    # From here on randomness differs by rank (dropout, augmentation): independent streams.
    rank_seed = int(np.random.SeedSequence([seed, gang.rank]).generate_state(1)[0])
    seed_everything(rank_seed)
    learner = Learner(
        model, optimizer, algorithm, torch.Generator(device).manual_seed(rank_seed), device
    )

    run = RunState()
    resumed = resume(checkpoint_dir, gang, steps_per_epoch, learner, run)
    metrics.count_skipped_checkpoints(run.checkpoints_skipped)
    if resumed and gang.rank == 0:
        results.drop_records_after(output_dir, run.epoch)
        log(f"resumed from {checkpoint_dir} after epoch {run.epoch} (step {run.step})")
    if gang.rank == 0:
        log(describe(config, gang, device, steps_per_epoch, schedule))
    use_bf16, precision_note = bf16_autocast(config.training.precision, device)
    if precision_note and gang.rank == 0:
        log(f"note: {precision_note}")
    wall_before = run.wall_seconds
    # Show up on the metrics page at once (with a resumed run's totals), not after a while.
    metrics.publish(
        progress(run, algorithm, schedule(run.step), RunningStats(device), 0, steps_per_epoch)
    )
    if run.record is not None:
        metrics.publish_evaluation(run.record["test_loss"], run.record["test_accuracy"])

    eval_interval = eval_interval_steps(config.training, steps_per_epoch)
    # Windows: since the last metrics update, since the last evaluation.
    stats = RunningStats(device, windows=2)
    eval_train_seconds = 0.0  # training time since the last evaluation
    train_step = TrainStep(
        algorithm,
        optimizer,
        schedule,
        data.train,
        data.augment,
        learner.augment_generator,
        stats,
        device,
        use_bf16,
    )

    def evaluation_point(lr: float) -> None:
        """All-reduce the training statistics since the last evaluation (also the divergence
        check: a NaN/inf on any rank makes the global sum non-finite on all of them),
        evaluate the model the algorithm holds, record, publish, log."""
        nonlocal eval_train_seconds
        # The consensus distance and the stop ballots (dsgd_trainer.stop_vote) ride along:
        # [Σ loss·n, Σ correct, n, Σ distance, ranks with a distance, Σ stop ballots].
        distance = algorithm.consensus_distance
        measured = torch.zeros(2, dtype=torch.float64, device=device)
        if distance is not None:
            measured[0], measured[1] = distance.value(), 1.0
        totals = torch.cat([stats.totals(EVALUATION_WINDOW), measured, vote.ballot(torch.float64)])
        dist.all_reduce(totals)
        loss_sum, correct_sum, count, distance_sum, distance_ranks, ballots = totals.tolist()
        vote.count_read(ballots)
        if vote.agreed:
            raise stopped_together(vote, gang, run.step)
        if not math.isfinite(loss_sum):
            raise TrainerExit(
                exit_codes.DIVERGED,
                f"training diverged: the training loss became {loss_sum} in epoch "
                f"{(run.step - 1) // steps_per_epoch + 1} (by step {run.step - 1}, lr {lr:g}); "
                "lower optimizer.learningRate, lengthen optimizer.warmupEpochs or check the data",
                agreed=True,  # every rank read the same sum at the same point
            )
        eval_start = time.perf_counter()
        test_loss, test_accuracy = evaluate(
            algorithm.synchronize_for_evaluation(), data.test, gang, use_bf16
        )
        model.train()  # the evaluated model may be the training model itself
        epoch_now = run.step / steps_per_epoch
        run.record = {
            "epoch": int(epoch_now) if epoch_now.is_integer() else epoch_now,
            "step": run.step,
            "samples": run.samples,
            "learning_rate": lr,
            "train_loss": loss_sum / count,
            "train_accuracy": correct_sum / count,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            # Mean over ranks of ‖x_k − x̄‖/‖x̄‖ at the last global averaging (None: none yet).
            "consensus_distance": distance_sum / distance_ranks if distance_ranks else None,
            "samples_per_second": count / eval_train_seconds,
            # Training time since the previous record (one epoch at the default cadence).
            "epoch_seconds": eval_train_seconds,
            "train_seconds": run.train_seconds,
            "eval_seconds": time.perf_counter() - eval_start,
            **communication(algorithm),
            "wall_seconds": wall_before + time.perf_counter() - started,
        }
        metrics.publish(progress(run, algorithm, lr, stats, METRICS_WINDOW, steps_per_epoch))
        stats.restart(METRICS_WINDOW)
        metrics.publish_evaluation(test_loss, test_accuracy)
        # Rank 0 writes; all learn together whether it could (a full outputDir stops the gang).
        write_together(
            partial(results.append_record, output_dir, run.record) if gang.rank == 0 else str,
            "training.outputDir",
            device,
        )
        if gang.rank == 0:
            log(epoch_line(run.record, epochs))
        stats.restart(EVALUATION_WINDOW)
        eval_train_seconds = 0.0

    for epoch in range(run.epoch, epochs):
        model.train()
        last_step_end = time.perf_counter()
        for indices in sampler.batches_on(epoch, device):
            if vote.agreed:
                raise stopped_together(vote, gang, run.step)
            batch = train_step(run.step, indices)  # DSGD_CUDA_SYNC_DEBUG: no host sync in here
            run.step += 1
            run.samples += batch * gang.world_size
            now = time.perf_counter()
            # Without a device sync this is launch-to-launch time: right on average, noisy per step.
            metrics.observe_step(now - last_step_end)
            run.train_seconds += now - last_step_end
            eval_train_seconds += now - last_step_end
            last_step_end = now
            if now - stats.since(METRICS_WINDOW) >= PUBLISH_INTERVAL:
                metrics.publish(
                    progress(run, algorithm, train_step.lr, stats, METRICS_WINDOW, steps_per_epoch)
                )
                stats.restart(METRICS_WINDOW)
            if run.step % eval_interval == 0 or run.step == epochs * steps_per_epoch:
                evaluation_point(train_step.lr)
                last_step_end = time.perf_counter()  # evaluation is not training time
        if run.step % eval_interval and run.step != epochs * steps_per_epoch:
            # No evaluation at this epoch end: the ranks still agree on a stop request here,
            # before the (collective) checkpoint, as they do with the evaluation's all-reduce.
            ballots = vote.ballot(torch.float64).clone()
            dist.all_reduce(ballots)
            vote.count_read(ballots.item())
        if vote.agreed:
            raise stopped_together(vote, gang, run.step)
        run.epoch = epoch + 1

        every = config.training.checkpoint_every
        if every and (run.epoch % every == 0 or run.epoch == epochs):
            run.wall_seconds = wall_before + time.perf_counter() - started
            state = snapshot(run, gang, steps_per_epoch, learner)
            checkpoint.save(
                checkpoint_dir, run.epoch, run.step, gang.rank, gang.world_size, state, device
            )

    run.wall_seconds = wall_before + time.perf_counter() - started
    if gang.rank == 0:
        summary = results.summarize(config, gang, run, algorithm)
        results.write_summary(output_dir, summary)
        problem = results.write_results_message(output_dir, summary)
        if problem:
            log(f"warning: {problem}")
        log(
            f"done: {summary['epochs']} epochs, {summary['steps']} steps, "
            f"test accuracy {fmt(summary['final_test_accuracy'])}, "
            f"{summary['wall_seconds']:.1f} s; results in {output_dir}"
        )
    # Downpour: the parameter servers finish when every worker has left their RPC world.
    rpc_world.leave(graceful=True)
    if metrics_server is not None:
        metrics_server.shutdown()
    return exit_codes.OK


def stopped_together(vote: StopVote, gang: GangPosition, step: int) -> TrainerExit:
    """The exit of a stop every rank agreed on, at the same step (dsgd_trainer.stop_vote)."""
    return TrainerExit(
        vote.exit_code,
        f"rank {gang.rank}: stopped before step {step}, as every rank agreed on a stop "
        "request; the last checkpoint stands",
        every_rank=True,
        agreed=True,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CPU and every CUDA device


def progress(
    run: RunState,
    algorithm: Algorithm,
    lr: float,
    stats: RunningStats,
    window: int,
    steps_per_epoch: int,
) -> RankProgress:
    """This rank's progress for the metrics; `stats`' `window` holds the batches since the
    last update."""
    loss_sum, correct_sum, count = stats.totals(window).tolist()  # the one host sync per update
    seconds = time.perf_counter() - stats.since(window)
    counters = algorithm.counters
    return RankProgress(
        epoch=run.step / steps_per_epoch,
        steps=run.step,
        samples=run.samples // dist.get_world_size(),  # this rank's share
        learning_rate=lr,
        train_loss=loss_sum / count if count else None,
        train_accuracy=correct_sum / count if count else None,
        samples_per_second=count / seconds if count and seconds > 0 else None,
        sync_rounds=dict(counters.rounds),
        communicated_bytes=dict(counters.bytes),
        payload_bytes=dict(counters.payload_bytes),
        communication_seconds=counters.communication_seconds,
        compute_seconds=max(0.0, run.train_seconds - counters.communication_seconds),
        consensus_distance=(
            None
            if algorithm.consensus_distance is None
            else algorithm.consensus_distance.value().item()
        ),
    )


def log(message: str) -> None:
    print(f"[dsgd] {message}", flush=True)
