"""Time to accuracy on bandwidth-limited links: mini-batch vs local (blocking and overlapped
averaging), post-local, hierarchical SGD.

    python benchmarks/time_to_accuracy.py            # quick (~5 min on 2 idle cores)
    python benchmarks/time_to_accuracy.py --full     # full (~15 min on 2 cores)
    python benchmarks/time_to_accuracy.py --smoke --out /tmp/x   # seconds: CI's check

Every run trains the same model on the same data from the same seed with the
same sample budget, as a real job (the pods of `dsgd run`, torchrun and gloo),
with each node in its own network namespace and the links between nodes shaped
with tbf (see netns_cluster.py), once per link rate. Per run it reports:

- time to target: training time until the first evaluation at or above the
  target test accuracy. Training time is the sum of the trainer's per-epoch
  `epoch_seconds` from metrics.jsonl: the steps and their communication, but
  not the per-epoch evaluation or process start-up, which are the benchmark's
  instrumentation and not part of any algorithm;
- the no-communication lower bound: local SGD with H larger than the run
  (no collective during training: the same compute, collectives skipped); its
  training time at the same number of samples bounds any algorithm's from
  below, and "× lower bound" is the ratio;
- final test accuracy, bytes sent per rank and sync rounds (from the trainer's
  counters, rank 0), speed-up over mini-batch SGD at the same rate.

The goal checked at the slowest rate: local SGD with H=16 reaches the target at
least 3× sooner than mini-batch SGD, within 1.2× of the lower bound, with a
final test accuracy at most 0.5 points lower.

Overlapped averaging (algorithm.overlapSteps τ = H, rows beside the blocking
ones): the goals are local SGD H=16 within 1.10× of the lower bound and H=4
within 1.30×, final accuracy within 0.5 points of mini-batch SGD's, checked at
every rate, with one averaging's cost in steps of compute: blocking (c below)
and what overlap leaves exposed (its time in collectives per averaging). The
issue asks for the median of 3 runs: run the benchmark three times.

When the two timing goals can hold together: let T be the compute time of a
run and c the time of one model all-reduce at the slow link over the compute
time of one step. With equal samples to target, mini-batch SGD takes about
(1 + c)·T (less where DDP overlaps its all-reduce with the backward pass) and
local SGD with H=16 (1 + c/16)·T, so "≥ 3× sooner" needs c ≳ 2.5 and "≤ 1.2×
the bound" needs c ≲ 3.2: a narrow band, set by the model and the batch, not
by the algorithm. The quick size (batch 64 per rank) sits on the
communication-bound side (c ≈ 7 on 2 cores: large speed-ups, bound missed);
the full size doubles the compute per step (batch 128 per rank, the same peak
lr), which brings c down to about 4 on 2 cores: nearer the band, still above it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dsgd_contract.config import TrainingConfig
from job_runner import JobFailed, exit_on_termination, run_job
from machine import load_average
from netns_cluster import ClusterError, NetnsCluster, measure_throughput, netns_unavailable_reason
from report import DEFAULT_OUT, fmt, megabytes, percent
from scaled_run import results_header, scale_name, scale_parser, write_results
from time_to_accuracy_analysis import (  # noqa: F401 - seconds_at_samples: tests use it from here
    LOWER_BOUND,
    analyze,
    check_goal,
    check_overlap_goals,
    curve,
    seconds_at_samples,
)
from time_to_accuracy_report import write_report

NAME = "time_to_accuracy"
#: localSteps of the no-communication run: more than any run here has steps (the config's max).
NO_COMMUNICATION_STEPS = 100_000


@dataclass(frozen=True)
class Variant:
    label: str
    algorithm: dict[str, Any]  # the config's algorithm section, wire names


VARIANTS: dict[str, Variant] = {
    "mini-batch": Variant("mini-batch SGD (DDP)", {"name": "mini-batch-sgd"}),
    "local-h4": Variant("local SGD, H=4", {"name": "local-sgd", "localSteps": 4}),
    "local-h16": Variant("local SGD, H=16", {"name": "local-sgd", "localSteps": 16}),
    # Overlapped averaging (overlapSteps τ = H: each averaging hides behind the next H steps).
    "local-h4-overlap": Variant(
        "local SGD, H=4, overlapSteps=4", {"name": "local-sgd", "localSteps": 4, "overlapSteps": 4}
    ),
    "local-h16-overlap": Variant(
        "local SGD, H=16, overlapSteps=16",
        {"name": "local-sgd", "localSteps": 16, "overlapSteps": 16},
    ),
    "post-local-h16": Variant("post-local SGD, H=16", {"name": "post-local-sgd", "localSteps": 16}),
    "hierarchical": Variant(
        "hierarchical local SGD, H=4, H_b=4",
        {"name": "hierarchical-local-sgd", "localSteps": 4, "blockSteps": 4},
    ),
    "no-communication": Variant(
        "no communication (lower bound)",
        {"name": "local-sgd", "localSteps": NO_COMMUNICATION_STEPS},
    ),
}


@dataclass(frozen=True)
class Scale:
    """One size of the benchmark: the training setup shared by all its runs."""

    name: str
    nodes: int
    processes_per_node: int
    model: str
    dataset: str
    train_samples: int | None
    test_samples: int | None
    batch_size: int
    epochs: int
    learning_rate: float  # for baseBatchSize 128, scaled linearly to the global batch
    target: float
    rates: tuple[str, ...]
    variants: tuple[str, ...]

    def config(self, variant: Variant, run_dir: Path) -> TrainingConfig:
        return TrainingConfig.model_validate(
            {
                "topology": {"nodes": self.nodes, "processesPerNode": self.processes_per_node},
                "algorithm": variant.algorithm,
                "optimizer": {
                    "learningRate": self.learning_rate,
                    "baseBatchSize": 128,
                    "scaling": "linear",
                    "warmupEpochs": 0,
                    "momentum": 0.9,
                    "nesterov": True,
                    "weightDecay": 1e-4,
                    "milestones": [0.5, 0.75],  # post-local switches at the first (Lin et al.)
                    "gamma": 0.1,
                },
                "training": {
                    "model": self.model,
                    "dataset": {
                        "name": self.dataset,
                        "trainSamples": self.train_samples,
                        "testSamples": self.test_samples,
                    },
                    "batchSizePerProcess": self.batch_size,
                    "epochs": self.epochs,
                    "seed": 0,
                    "checkpointEvery": 0,
                    "checkpointDir": str(run_dir / "checkpoints"),
                    "outputDir": str(run_dir),
                },
            }
        )


ALL_VARIANTS = tuple(VARIANTS)
SCALES = {
    # CI: seconds; each run costs a torchrun start-up, so only two (the code path of every
    # variant is the same: a config and a job).
    "smoke": Scale(
        name="smoke",
        nodes=2,
        processes_per_node=1,
        model="mlp",
        dataset="synthetic",
        train_samples=512,
        test_samples=256,
        batch_size=32,
        epochs=2,
        learning_rate=0.05,
        target=0.3,
        rates=("1gbit",),
        variants=("mini-batch", "local-h4-overlap", LOWER_BOUND),
    ),
    "quick": Scale(
        name="quick",
        nodes=2,
        processes_per_node=2,
        model="cnn",
        dataset="fashion-mnist",
        train_samples=8192,
        test_samples=2000,
        batch_size=64,
        epochs=6,
        learning_rate=0.05,
        target=0.84,
        rates=("1gbit", "50mbit"),
        variants=ALL_VARIANTS,
    ),
    "full": Scale(
        name="full",
        nodes=2,
        processes_per_node=2,
        model="cnn",
        dataset="fashion-mnist",
        train_samples=30720,
        test_samples=10000,
        batch_size=128,  # twice quick's compute per step: see the docstring on the goal
        epochs=8,
        learning_rate=0.025,  # the same peak lr as quick (0.1) at the doubled global batch
        target=0.87,
        rates=("1gbit", "50mbit", "80mbit"),
        variants=ALL_VARIANTS,
    ),
}


def run_rate(
    scale: Scale, rate: str, work: Path, echo: bool
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """All variants at one link rate, in one cluster; returns (link facts, runs by key)."""
    runs: dict[str, dict[str, Any]] = {}
    with NetnsCluster(scale.nodes, rate, name=f"tta{os.getpid()}") as cluster:
        goodput = measure_throughput(cluster, seconds=1.0) if scale.nodes > 1 else None
        link = {
            **cluster.describe(),
            "measured_goodput_bits_per_second": goodput,
            "goodput_ratio_to_rate": goodput / cluster.rate_bits if goodput else None,
        }
        print(
            f"[{NAME}] {rate}: measured goodput {fmt((goodput or 0) / 1e6, 1)} Mbit/s", flush=True
        )
        for key in scale.variants:
            variant = VARIANTS[key]
            run_dir = work / rate / key
            load_before = load_average()
            result = run_job(
                scale.config(variant, run_dir), run_dir, cluster, name=f"tta-{key}", echo=echo
            )
            summary = result.summary
            runs[key] = {
                "key": key,
                "label": variant.label,
                "algorithm": variant.algorithm,
                "curve": curve(result.records),
                "final_test_accuracy": summary["final_test_accuracy"],
                "train_seconds": sum(r["epoch_seconds"] for r in result.records),
                "wall_seconds": summary["wall_seconds"],
                "samples": summary["samples"],
                "steps": summary["steps"],
                "communicated_bytes": summary["communicated_bytes"],
                "communicated_bytes_by_scope": summary["communicated_bytes_by_scope"],
                "sync_rounds": summary["sync_rounds"],
                "communication_seconds": summary["communication_seconds"],
                "process_seconds": result.seconds,
                "warning": result.warning,
                "load_average": {"before": load_before, "after": load_average()},
            }
            print(
                f"[{NAME}] {rate} {variant.label}: final test accuracy "
                f"{percent(summary['final_test_accuracy'])}, training "
                f"{fmt(runs[key]['train_seconds'], 1)} s, "
                f"{megabytes(summary['communicated_bytes'])} MB sent per rank",
                flush=True,
            )
    analyze(runs, scale.target)
    return link, runs


def settings_of(scale: Scale) -> dict[str, Any]:
    config = scale.config(VARIANTS["mini-batch"], Path("/unused"))
    world = scale.nodes * scale.processes_per_node
    train = scale.train_samples or 60_000
    steps_per_epoch = train // (world * scale.batch_size)
    return {
        **asdict(scale),
        "world_size": world,
        "steps": steps_per_epoch * scale.epochs,
        "samples": steps_per_epoch * scale.epochs * world * scale.batch_size,
        "peak_learning_rate": scale.learning_rate * world * scale.batch_size / 128,
        "optimizer": config.optimizer.to_wire(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = scale_parser(__doc__, DEFAULT_OUT, runs_jobs=True)
    parser.add_argument("--rates", help="comma-separated tc rates instead of the scale's")
    args = parser.parse_args(argv)
    exit_on_termination()
    scale = SCALES[scale_name(args)]
    rates = tuple(args.rates.split(",")) if args.rates else scale.rates
    reason = netns_unavailable_reason()
    if reason:
        print(f"[{NAME}] {reason} (run as root)", file=sys.stderr)
        return 2
    results = results_header(NAME, scale.name, settings=settings_of(scale), rates={})
    with tempfile.TemporaryDirectory(prefix="dsgdbench-tta-") as temporary:
        work = args.work or Path(temporary)
        try:
            for rate in rates:
                link, runs = run_rate(scale, rate, work, args.echo)
                results["rates"][rate] = {"link": link, "runs": runs}
        except (JobFailed, ClusterError) as error:
            print(f"[{NAME}] failed: {error}", file=sys.stderr)
            return 1
    slowest = min(rates, key=lambda rate: results["rates"][rate]["link"]["rate_bits_per_second"])
    results["goal"] = check_goal(results["rates"][slowest]["runs"], slowest)
    results["overlap_goals"] = {
        rate: check_overlap_goals(at_rate["runs"], rate)
        for rate, at_rate in results["rates"].items()
    }
    write_results(results, args.out, write_report)
    if results["goal"] is not None:
        print(f"[{NAME}] goal at {slowest}: {'met' if results['goal']['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
