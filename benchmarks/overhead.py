"""Per-step overhead of our algorithms against a plain PyTorch DDP loop, side by side in one run.

    python benchmarks/overhead.py            # quick: cnn, 2 ranks (~1.5 min)
    python benchmarks/overhead.py --full     # full: cnn and mlp, 2 ranks; cnn 2 nodes × 2 (~5 min)
    python benchmarks/overhead.py --smoke --out /tmp/x

K ranks (gloo on loopback) each hold one replica per contender, all built from
the same seed on the same data: a plain DDP loop (`DDP(model)`, forward,
backward, `optimizer.step()`, `zero_grad()`) and each of our algorithms driven
through the loop contract (`step_context` / `training_model` /
`after_optimizer_step`, dsgd_trainer.algorithms). The contenders take turns in
blocks of 16 steps, in a shuffled order every round (the same on all ranks), so
that a slow moment of the machine hits all of them alike; a block's time is the
slowest rank's. Overhead = median over rounds of (block time / the plain DDP
block of the same round) − 1. A second plain DDP replica (the A/A control)
shows how large differences the noise alone makes.

Communication per epoch comes from the algorithms' own counters: every
contender runs exactly one epoch of steps (rounds × 16), so the counters hold
one epoch; local SGD with H=16 must send 1/16 of mini-batch SGD's bytes.
"""

from __future__ import annotations

import json
import os
import random
import statistics
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
from dsgd_operator.local_run import free_port
from dsgd_trainer.algorithms import Algorithm, build_algorithm, make_dist_context
from dsgd_trainer.data import EpochSampler, TensorDataset, load_data
from dsgd_trainer.models import build_model
from dsgd_trainer.optim import build_optimizer
from dsgd_trainer.stopping import exit_without_teardown
from job_runner import exit_on_termination
from machine import machine_line
from plots import plot_bars
from report import DEFAULT_OUT, fmt, markdown_table
from scaled_run import results_header, scale_name, scale_parser, write_results
from torch.nn.parallel import DistributedDataParallel

NAME = "overhead"
#: Steps per block: a multiple of every H here, so each block holds whole sync cycles.
BLOCK_STEPS = 16
BASELINE = "pytorch-ddp"
CONTROL = "pytorch-ddp-again"

#: Contender key → (label, algorithm section or None for a plain DDP loop).
CONTENDERS: dict[str, tuple[str, dict[str, Any] | None]] = {
    BASELINE: ("plain PyTorch DDP loop", None),
    CONTROL: ("plain PyTorch DDP loop (A/A control)", None),
    "mini-batch": ("mini-batch SGD", {"name": "mini-batch-sgd"}),
    "local-h4": ("local SGD, H=4", {"name": "local-sgd", "localSteps": 4}),
    "local-h16": ("local SGD, H=16", {"name": "local-sgd", "localSteps": 16}),
    "post-local-h16": (
        "post-local SGD, H=16",
        {"name": "post-local-sgd", "localSteps": 16, "switchEpoch": 1},
    ),
    "local-h16-sign": (
        "local SGD, H=16, sign",
        {"name": "local-sgd", "localSteps": 16, "compression": "sign"},
    ),
    "local-h16-ef-sign": (
        "local SGD, H=16, ef-sign",
        {"name": "local-sgd", "localSteps": 16, "compression": "ef-sign"},
    ),
    "hierarchical": (
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


class Contender:
    """One replica and the loop that trains it: a plain DDP loop or one of our algorithms."""

    def __init__(
        self, key: str, setup: Setup, data: TensorDataset, batches: list[torch.Tensor], ctx: Any
    ) -> None:
        self.key = key
        self.label, algorithm_section = CONTENDERS[key]
        self.data, self.batches = data, batches
        self.step = 0
        self._counted_before: dict[str, dict[str, int]] = {"rounds": {}, "bytes": {}}
        torch.manual_seed(0)  # identical initial replicas for every contender
        config = setup.config(algorithm_section or {"name": "mini-batch-sgd"})
        input_shape = tuple(data.inputs.shape[1:])
        self.model = build_model(setup.model, input_shape, 10)
        self.optimizer = build_optimizer(self.model, config.optimizer)
        self.algorithm: Algorithm | None = None
        if algorithm_section is None:
            ddp = DistributedDataParallel(self.model)
            self._step: Callable[[torch.Tensor, torch.Tensor], None] = self._plain_step(ddp)
        else:
            # post-local's switch (switchEpoch 1) falls in the middle of the run.
            steps_per_epoch = setup.steps // 2 if key == "post-local-h16" else setup.steps
            self.algorithm = build_algorithm(config, self.model, ctx, steps_per_epoch)
            self._step = self._algorithm_step

    def _plain_step(self, ddp: DistributedDataParallel) -> Callable[..., None]:
        def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
            loss = F.cross_entropy(ddp(inputs), targets)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        return step

    def _algorithm_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        algorithm = self.algorithm
        assert algorithm is not None
        with algorithm.step_context(self.step):
            loss = F.cross_entropy(algorithm.training_model()(inputs), targets)
            loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        algorithm.after_optimizer_step(self.step)

    def phase(self) -> str:
        """Which part of the run the next block measures (post-local SGD has two)."""
        if self.key != "post-local-h16" or self.algorithm is None:
            return self.key
        local = self.algorithm.in_local_phase()  # type: ignore[attr-defined]
        return f"{self.key}:{'local' if local else 'mini-batch'} phase"

    def run(self, steps: int) -> None:
        for _ in range(steps):
            indices = self.batches[self.step % len(self.batches)]
            self._step(self.data.inputs[indices], self.data.targets[indices])
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
        ranks = mp.start_processes(
            worker, args=(setup, free_port(), path), nprocs=setup.world_size, join=False
        )
        try:
            while not ranks.join():
                pass
        finally:  # on an error or a signal, no rank outlives us
            for process in ranks.processes:
                if process.is_alive():
                    process.terminate()
                process.join()
        return json.loads(Path(path).read_text())


def analyze(setup: Setup, raw: dict[str, Any]) -> dict[str, Any]:
    """Per contender (and post-local phase): per-step time, overhead vs plain DDP, bytes/epoch."""
    baseline = dict(raw["times"][BASELINE])
    counters = raw["counters"]
    mini = counters.get("mini-batch")
    mini_bytes = sum(mini["bytes"].values()) if mini else None
    rows = {}
    order = list(CONTENDERS)
    for phase in raw["times"]:
        samples = raw["times"][phase]
        key, _, part = phase.partition(":")
        ratios = [seconds / baseline[r] for r, seconds in samples if r in baseline]
        block = [seconds for _, seconds in samples]
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        # A post-local phase is half an epoch: its counters belong to the whole-epoch line.
        sent = None if part else counters.get(key)
        epoch_bytes = sum(sent["bytes"].values()) if sent else None
        rows[phase] = {
            "label": raw["labels"][key] + (f" ({part})" if part else ""),
            "blocks": len(samples),
            "step_ms_median": 1000 * statistics.median(block) / BLOCK_STEPS,
            "overhead_median": statistics.median(ratios) - 1,
            "overhead_quartiles": [q - 1 for q in (quartiles[0], quartiles[2])],
            "sync_rounds_per_epoch": sent["rounds"] if sent else None,
            "bytes_per_epoch": epoch_bytes,
            "bytes_vs_mini_batch": (
                epoch_bytes / mini_bytes if epoch_bytes is not None and mini_bytes else None
            ),
        }
    post_local = counters.get("post-local-h16")
    if post_local and mini_bytes:
        rows["post-local-h16"] = {
            "label": raw["labels"]["post-local-h16"] + " (whole epoch, switch halfway; counters)",
            "blocks": 0,
            "step_ms_median": None,
            "overhead_median": None,
            "overhead_quartiles": None,
            "sync_rounds_per_epoch": post_local["rounds"],
            "bytes_per_epoch": sum(post_local["bytes"].values()),
            "bytes_vs_mini_batch": sum(post_local["bytes"].values()) / mini_bytes,
        }
    # Table order: the contenders'; post-local's mini-batch phase, local phase, whole epoch.
    rank = {"mini-batch phase": 0, "local phase": 1}
    rows = dict(
        sorted(
            rows.items(),
            key=lambda item: (
                order.index(item[0].partition(":")[0]),
                rank.get(item[0].partition(":")[2], 2),
            ),
        )
    )
    checks = {}
    if "mini-batch" in rows:
        checks["mini_batch_overhead_at_most_5_percent"] = {
            "value": rows["mini-batch"]["overhead_median"],
            "met": rows["mini-batch"]["overhead_median"] <= 0.05,
        }
    if "local-h16" in rows and "mini-batch" in rows:
        checks["local_sgd_overhead_below_mini_batch"] = {
            "value": rows["local-h16"]["overhead_median"],
            "met": rows["local-h16"]["overhead_median"] < rows["mini-batch"]["overhead_median"],
        }
        ratio = rows["local-h16"]["bytes_vs_mini_batch"]
        checks["local_h16_bytes_are_one_sixteenth"] = {
            "value": ratio,
            "met": ratio is not None and abs(ratio - 1 / 16) < 1e-9,
        }
    return {
        "setup": {**asdict(setup), "steps_per_epoch": setup.steps},
        "rows": rows,
        "checks": checks,
        "raw": raw,
    }


def percent_change(ratio: float | None) -> str | None:
    return None if ratio is None else f"{100 * ratio:+.1f}%"


#: Check key → (what it says, how its value is shown).
CHECKS: dict[str, tuple[str, Callable[[float], str]]] = {
    "mini_batch_overhead_at_most_5_percent": (
        "mini-batch SGD's overhead over plain DDP is at most 5%",
        lambda value: f"{100 * value:+.1f}%",
    ),
    "local_sgd_overhead_below_mini_batch": (
        "local SGD (H=16) has a lower overhead than mini-batch SGD",
        lambda value: f"{100 * value:+.1f}%",
    ),
    "local_h16_bytes_are_one_sixteenth": (
        "local SGD (H=16) sends 1/16 of mini-batch SGD's bytes per epoch",
        lambda value: f"{value:.4f} (1/16 = 0.0625)",
    ),
}


def write_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    stem = f"{NAME}-{results['scale']}"
    lines = [
        f"# Per-step overhead against a plain PyTorch DDP loop ({results['scale']})",
        "",
        f"Machine: {machine_line(results['machine'])}.",
        "",
        "Every contender trains its own replica (same seed, same batches) on the same ranks, "
        f"in blocks of {BLOCK_STEPS} steps taken in turns, shuffled every round. Overhead: "
        "median over rounds of block time / the plain DDP loop's block time in the same round, "
        "minus 1 (negative: faster); the interquartile range of that ratio shows the noise, "
        "as does the A/A control (a second plain DDP loop). Bytes and rounds: one epoch, "
        "from each algorithm's counters (rank 0).",
        "",
    ]
    written = []
    for measurement in results["measurements"]:
        setup = measurement["setup"]
        rows = measurement["rows"]
        lines += [
            f"## `{setup['model']}`, {setup['nodes']} node(s) × {setup['processes_per_node']} "
            f"processes, batch {setup['batch_size']} per rank, {setup['steps_per_epoch']} steps",
            "",
            markdown_table(
                [
                    "contender",
                    "ms per step (median)",
                    "overhead vs plain DDP",
                    "interquartile range",
                    "sync rounds / epoch (global, intra-node)",
                    "MB / epoch per rank",
                    "bytes vs mini-batch",
                ],
                [
                    [
                        row["label"],
                        fmt(row["step_ms_median"], 2),
                        percent_change(row["overhead_median"]),
                        (
                            f"{percent_change(row['overhead_quartiles'][0])} … "
                            f"{percent_change(row['overhead_quartiles'][1])}"
                            if row["overhead_quartiles"]
                            else None
                        ),
                        (
                            f"{row['sync_rounds_per_epoch']['global']}, "
                            f"{row['sync_rounds_per_epoch']['intra_node']}"
                            if row["sync_rounds_per_epoch"]
                            else None
                        ),
                        fmt(row["bytes_per_epoch"] / 1e6, 2)
                        if row["bytes_per_epoch"] is not None
                        else None,
                        fmt(row["bytes_vs_mini_batch"], 4),
                    ]
                    for row in rows.values()
                ],
            ),
            "",
        ]
        for name, check in measurement["checks"].items():
            text, render = CHECKS[name]
            value = "n/a" if check["value"] is None else render(check["value"])
            line = f"- {text}: {value}: {'met' if check['met'] else 'NOT met'}"
            control = rows.get(CONTROL)
            if name.startswith("mini_batch") and control:
                line += (
                    f" (for scale: the A/A control, plain DDP against itself, reads "
                    f"{percent_change(control['overhead_median'])})"
                )
            lines.append(line)
        figure = (
            out_dir / f"{stem}-{setup['model']}-{setup['nodes']}x{setup['processes_per_node']}.png"
        )
        timed = [row for row in rows.values() if row["overhead_median"] is not None]
        plot_bars(
            [row["label"] for row in timed],
            {"overhead vs plain DDP, %": [100 * row["overhead_median"] for row in timed]},
            figure,
            f"{setup['model']}, {setup['nodes']}×{setup['processes_per_node']} ranks: "
            "per-step overhead (median)",
            "%",
        )
        written.append(figure)
        lines += ["", f"![overhead]({figure.name})", ""]
    report = out_dir / f"{stem}.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    written.append(report)
    return written


def main(argv: list[str] | None = None) -> int:
    args = scale_parser(__doc__, DEFAULT_OUT, runs_jobs=False).parse_args(argv)
    exit_on_termination()
    scale = scale_name(args)
    results = results_header(NAME, scale, block_steps=BLOCK_STEPS, measurements=[])
    for setup in SCALES[scale]:
        print(f"[{NAME}] {setup.key}: {len(setup.contenders())} contenders × {setup.steps} steps")
        measurement = analyze(setup, measure(setup))
        results["measurements"].append(measurement)
        for row in measurement["rows"].values():
            if row["step_ms_median"] is None:
                continue  # a counters-only line
            print(
                f"[{NAME}]   {row['label']}: {fmt(row['step_ms_median'], 2)} ms/step, "
                f"overhead {percent_change(row['overhead_median'])}",
                flush=True,
            )
    write_results(results, args.out, write_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
