"""Per-step overhead of our algorithms against plain PyTorch loops, side by side in one run.

    python benchmarks/overhead.py            # quick: cnn, 2 ranks (~1.5 min)
    python benchmarks/overhead.py --full     # full: cnn and mlp, 2 ranks; cnn 2 nodes × 2 (~5 min)
    python benchmarks/overhead.py --smoke --out /tmp/x

K ranks (gloo on loopback) each hold one replica per contender, all built from
the same seed, trained on the same data at the same learning rate (the trainer's,
linearly scaled): a plain DDP loop (`DDP(model)`, forward, backward,
`optimizer.step()`, `zero_grad()`), plain loops with PyTorch's own
`PeriodicModelAverager` (local SGD as PyTorch writes it: the same loop on the
bare model, then `average_parameters` every H steps), and each of our
algorithms run by the trainer's own step (dsgd_trainer.step.TrainStep: lr,
algorithm hooks, on-device statistics) plus what train.py does per step around
it (the clock, the step-duration histogram). The contenders take turns in
blocks of 16 steps, in a shuffled order every round (the same on all ranks), so
that a slow moment of the machine hits all of them alike; a block's time is the
slowest rank's. Overhead = median over rounds of (block time / the plain DDP
block of the same round) − 1; each of ours is also set against its PyTorch
reference (mini-batch SGD: the DDP loop; local SGD with H: the
PeriodicModelAverager loop with H). A second plain DDP replica (the A/A
control) shows how large differences the noise alone makes.

Communication per epoch comes from the algorithms' own counters: every
contender runs exactly one epoch of steps (rounds × 16), so the counters hold
one epoch; local SGD with H=16 must send 1/16 of mini-batch SGD's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from dsgd_contract.config import Dataset, TrainingConfig
from dsgd_contract.pod import MULTIPROC_DIR_ENV
from dsgd_operator.local_run import free_port
from dsgd_trainer.algorithms import Algorithm, build_algorithm, make_dist_context
from dsgd_trainer.data import EpochSampler, TensorDataset, load_data
from dsgd_trainer.evaluation import RunningStats
from dsgd_trainer.metrics import TrainerMetrics
from dsgd_trainer.models import build_model
from dsgd_trainer.optim import build_optimizer
from dsgd_trainer.schedule import LearningRateSchedule
from dsgd_trainer.step import TrainStep
from dsgd_trainer.stopping import exit_without_teardown
from overhead_report import (
    BASELINE,
    BLOCK_STEPS,
    CONTROL,
    NAME,
    analyze,
    percent_change,
    write_report,
)
from prometheus_client import CollectorRegistry
from report import fmt
from scaled_run import benchmark_main
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Spec:
    """A contender: ours (`algorithm`, a spec section) or a plain PyTorch loop (DDP, or
    PeriodicModelAverager with period `periodic`), and the PyTorch loop it is set against."""

    label: str
    algorithm: dict[str, Any] | None = None
    periodic: int | None = None
    reference: str = BASELINE


def periodic_key(h: int) -> str:
    return f"pytorch-periodic-h{h}"


CONTENDERS: dict[str, Spec] = {
    BASELINE: Spec("plain PyTorch DDP loop"),
    CONTROL: Spec("plain PyTorch DDP loop (A/A control)"),
    periodic_key(4): Spec("PyTorch PeriodicModelAverager loop, H=4", periodic=4),
    periodic_key(16): Spec("PyTorch PeriodicModelAverager loop, H=16", periodic=16),
    "mini-batch": Spec("mini-batch SGD", {"name": "mini-batch-sgd"}),
    "local-h4": Spec(
        "local SGD, H=4", {"name": "local-sgd", "localSteps": 4}, reference=periodic_key(4)
    ),
    "local-h4-overlap": Spec(
        "local SGD, H=4, overlapSteps=4",
        {"name": "local-sgd", "localSteps": 4, "overlapSteps": 4},
        reference=periodic_key(4),
    ),
    "local-h16": Spec(
        "local SGD, H=16", {"name": "local-sgd", "localSteps": 16}, reference=periodic_key(16)
    ),
    "post-local-h16": Spec(
        "post-local SGD, H=16", {"name": "post-local-sgd", "localSteps": 16, "switchEpoch": 1}
    ),
    "local-h16-sign": Spec(
        "local SGD, H=16, sign", {"name": "local-sgd", "localSteps": 16, "compression": "sign"}
    ),
    "local-h16-ef-sign": Spec(
        "local SGD, H=16, ef-sign",
        {"name": "local-sgd", "localSteps": 16, "compression": "ef-sign"},
    ),
    "hierarchical": Spec(
        "hierarchical local SGD, H=4, H_b=4",
        {"name": "hierarchical-local-sgd", "localSteps": 4, "blockSteps": 4},
    ),
}


@dataclass(frozen=True)
class Setup:
    """One measurement: a model and a layout of ranks."""

    model: str
    dataset: str
    batch_size: int
    rounds: int  # blocks per contender; rounds × BLOCK_STEPS steps = one epoch
    nodes: int
    processes_per_node: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @property
    def steps(self) -> int:
        return self.rounds * BLOCK_STEPS

    @property
    def train_samples(self) -> int:
        """Exactly one epoch of `steps` steps."""
        return self.steps * self.world_size * self.batch_size

    @property
    def key(self) -> str:
        return f"{self.model}-{self.nodes}x{self.processes_per_node}"

    def contenders(self) -> list[str]:
        hierarchical = self.nodes >= 2 and self.processes_per_node >= 2
        return [key for key in CONTENDERS if key != "hierarchical" or hierarchical]

    def config(self, algorithm: dict[str, Any]) -> TrainingConfig:
        return TrainingConfig.model_validate(
            {
                "topology": {"nodes": self.nodes, "processesPerNode": self.processes_per_node},
                "algorithm": algorithm,
                "optimizer": {"learningRate": 0.05, "warmupEpochs": 0},
                "training": {
                    "model": self.model,
                    "dataset": {"name": self.dataset, "trainSamples": self.train_samples},
                    "batchSizePerProcess": self.batch_size,
                    "epochs": 2,  # only so that post-local's switchEpoch 1 lies inside training
                    "checkpointEvery": 0,
                },
            }
        )


SCALES: dict[str, tuple[Setup, ...]] = {
    "smoke": (Setup("mlp", "synthetic", 16, 2, 1, 2),),
    "quick": (Setup("cnn", "fashion-mnist", 32, 12, 1, 2),),
    "full": (
        Setup("cnn", "fashion-mnist", 32, 24, 1, 2),
        Setup("mlp", "fashion-mnist", 32, 24, 1, 2),
        Setup("cnn", "fashion-mnist", 32, 16, 2, 2),
    ),
}


def constant_lr(config: TrainingConfig, world_size: int, steps: int) -> float:
    """The trainer's learning rate for `config`, which the setups keep constant over the run."""
    schedule = LearningRateSchedule.from_config(config, world_size, steps)
    rates = {schedule(step) for step in range(steps)}
    if len(rates) != 1:
        raise ValueError(f"the overhead setups need a constant learning rate, got {sorted(rates)}")
    return rates.pop()


class Contender:
    """One replica and the loop that trains it: a plain PyTorch loop or one of our algorithms."""

    def __init__(
        self, key: str, setup: Setup, data: TensorDataset, batches: list[torch.Tensor], ctx: Any
    ) -> None:
        self.key = key
        spec = CONTENDERS[key]
        self.label = spec.label
        self.data, self.batches = data, batches
        self.step = 0
        self._counted_before: dict[str, dict[str, int]] = {"rounds": {}, "bytes": {}}
        torch.manual_seed(0)  # identical initial replicas for every contender
        config = setup.config(spec.algorithm or {"name": "mini-batch-sgd"})
        input_shape = tuple(data.inputs.shape[1:])
        self.model = build_model(setup.model, input_shape, 10)
        self.optimizer = build_optimizer(self.model, config.optimizer)
        self.algorithm: Algorithm | None = None
        self._run_step: Callable[[torch.Tensor], None]
        if spec.algorithm is not None:
            # post-local's switch (switchEpoch 1) falls in the middle of the run.
            steps_per_epoch = setup.steps // 2 if key == "post-local-h16" else setup.steps
            self.algorithm = build_algorithm(config, self.model, ctx, steps_per_epoch)
            self._run_step = self._trainer_step(config, steps_per_epoch, ctx)
        else:
            # The learning rate ours train with (linear scaling: not the config's figure), set
            # once as a plain script would: a run at another rate takes another trajectory,
            # and on the CPU that alone changed the time per step by 6 %.
            lr = constant_lr(config, ctx.gang.world_size, setup.steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if spec.periodic is None:
                self._run_step = self._plain_step(DistributedDataParallel(self.model), None)
            else:
                averager = PeriodicModelAverager(period=spec.periodic, warmup_steps=0)
                self._run_step = self._plain_step(self.model, averager)

    def _plain_step(
        self, net: torch.nn.Module, averager: PeriodicModelAverager | None
    ) -> Callable[[torch.Tensor], None]:
        """The PyTorch loop: DDP, or the bare model averaged by `averager` after each step."""

        def step(indices: torch.Tensor) -> None:
            loss = F.cross_entropy(net(self.data.inputs[indices]), self.data.targets[indices])
            loss.backward()
            self.optimizer.step()
            if averager is not None:  # before zero_grad: it averages the parameters with a grad
                averager.average_parameters(self.model.parameters())
            self.optimizer.zero_grad(set_to_none=True)

        return step

    def _trainer_step(
        self, config: TrainingConfig, steps_per_epoch: int, ctx: Any
    ) -> Callable[[torch.Tensor], None]:
        """The trainer's step and what train.py does per step around it (clock, histogram)."""
        assert self.algorithm is not None
        device = torch.device("cpu")
        schedule = LearningRateSchedule.from_config(config, ctx.gang.world_size, steps_per_epoch)
        train_step = TrainStep(
            self.algorithm,
            self.optimizer,
            schedule,
            self.data,
            None,
            torch.Generator(device).manual_seed(0),
            RunningStats(device, windows=2),
            device,
            False,
        )
        metrics = TrainerMetrics(ctx.gang.rank, registry=CollectorRegistry())
        last = [time.perf_counter()]

        def step(indices: torch.Tensor) -> None:
            train_step(self.step, indices)
            now = time.perf_counter()
            metrics.observe_step(now - last[0])
            last[0] = now

        return step

    def phase(self) -> str:
        """Which part of the run the next block measures (post-local SGD has two)."""
        if self.key != "post-local-h16" or self.algorithm is None:
            return self.key
        local = self.algorithm.in_local_phase()  # type: ignore[attr-defined]
        return f"{self.key}:{'local' if local else 'mini-batch'} phase"

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self._run_step(self.batches[self.step % len(self.batches)])
            self.step += 1

    def forget_counts(self) -> None:
        """Count from here on: the counters then hold exactly the measured steps."""
        self._counted_before = self._counts()

    def _counts(self) -> dict[str, dict[str, int]]:
        if self.algorithm is None:
            return {"rounds": {}, "bytes": {}}
        counters = self.algorithm.counters
        return {"rounds": dict(counters.rounds), "bytes": dict(counters.bytes)}

    def counters(self) -> dict[str, Any] | None:
        """Sync rounds and bytes by scope since `forget_counts` (None for plain DDP)."""
        if self.algorithm is None:
            return None
        now, before = self._counts(), self._counted_before
        return {
            kind: {scope: value - before[kind].get(scope, 0) for scope, value in now[kind].items()}
            for kind in ("rounds", "bytes")
        }


def worker(rank: int, setup: Setup, port: int, result_path: str) -> None:
    """One rank: build every contender, time them in shuffled blocks, rank 0 writes the result."""
    local = setup.processes_per_node
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(setup.world_size),
        LOCAL_RANK=str(rank % local),
        LOCAL_WORLD_SIZE=str(local),
        GROUP_RANK=str(rank // local),
    )
    torch.set_num_threads(1)  # the ranks share the machine's cores, as under torchrun
    dist.init_process_group("gloo", rank=rank, world_size=setup.world_size)
    try:
        ctx = make_dist_context(torch.device("cpu"))
        bundle = load_data(
            Dataset(name=setup.dataset, train_samples=setup.train_samples), 0, torch.device("cpu")
        )
        sampler = EpochSampler(len(bundle.train), 0, rank, setup.world_size, setup.batch_size)
        batches = sampler.batches(0)
        contenders = [
            Contender(key, setup, bundle.train, batches, ctx) for key in setup.contenders()
        ]
        for contender in contenders:  # warm-up: allocator, DDP buckets, first-step broadcasts
            contender.run(1)
            contender.step = 0
            contender.forget_counts()
        times: dict[str, list[tuple[int, float]]] = {}
        shuffle = random.Random(0)
        for round_index in range(setup.rounds):
            order = list(contenders)
            shuffle.shuffle(order)  # same seed: the same order on every rank
            for contender in order:
                phase = contender.phase()
                dist.barrier()
                start = time.perf_counter()
                contender.run(BLOCK_STEPS)
                elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank's time
                times.setdefault(phase, []).append((round_index, elapsed.item()))
        if rank == 0:
            result = {
                "times": times,
                "labels": {c.key: c.label for c in contenders},
                "references": {c.key: CONTENDERS[c.key].reference for c in contenders},
                "order": list(CONTENDERS),
                "counters": {c.key: c.counters() for c in contenders},
                "steps": {c.key: c.step for c in contenders},
            }
            Path(result_path).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
    exit_without_teardown(0)


def measure(setup: Setup) -> dict[str, Any]:
    """Run `setup` in world_size spawned processes; the raw block times and counters."""
    with tempfile.TemporaryDirectory(prefix="dsgdbench-overhead-") as directory:
        path = str(Path(directory) / "result.json")
        # As in a trainer pod: the metrics in prometheus-client's multiprocess mode (the ranks
        # are spawned, so they see this variable and the mode applies from their first import).
        before = os.environ.get(MULTIPROC_DIR_ENV)
        os.environ[MULTIPROC_DIR_ENV] = directory
        try:
            ranks = mp.start_processes(
                worker, args=(setup, free_port(), path), nprocs=setup.world_size, join=False
            )
        finally:
            os.environ.pop(MULTIPROC_DIR_ENV)
            if before is not None:
                os.environ[MULTIPROC_DIR_ENV] = before
        try:
            while not ranks.join():
                pass
        finally:  # on an error or a signal, no rank outlives us
            for process in ranks.processes:
                if process.is_alive():
                    process.terminate()
                process.join()
        return json.loads(Path(path).read_text())


def run(_args: argparse.Namespace, scale: str, _work: Path) -> dict[str, Any]:
    """Every setup of the size: its contenders measured side by side, then analysed."""
    results: dict[str, Any] = {"block_steps": BLOCK_STEPS, "measurements": []}
    for setup in SCALES[scale]:
        print(f"[{NAME}] {setup.key}: {len(setup.contenders())} contenders × {setup.steps} steps")
        setup_fields = {**asdict(setup), "steps_per_epoch": setup.steps}
        measurement = analyze(setup_fields, measure(setup))
        results["measurements"].append(measurement)
        for row in measurement["rows"].values():
            if row["step_ms_median"] is None:
                continue  # a counters-only line
            print(
                f"[{NAME}]   {row['label']}: {fmt(row['step_ms_median'], 2)} ms/step, "
                f"overhead {percent_change(row['overhead_median'])}, "
                f"vs PyTorch {percent_change(row['vs_reference_median'])}",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> int:
    return benchmark_main(NAME, __doc__, argv, run, write_report, runs_jobs=False)


if __name__ == "__main__":
    sys.exit(main())
