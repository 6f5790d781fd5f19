"""The GPU path's first run, in one go (benchmarks/gpu_check.sh; issues 13 and 17).

On a machine with NVIDIA GPUs, in under 8 minutes, writing one JSON (--out):

1. environment: torch, CUDA, NCCL, the GPUs and whether each has bf16 in hardware;
2. gpu_tests: the suite's GPU-only tests (`pytest -m gpu`: torch's sync debugger
   around the input path and the communication timing);
3. algorithms: start-up and a short run of every algorithm, bf16, with each
   training step under torch's CUDA sync debugger (DSGD_CUDA_SYNC_DEBUG=warn):
   the warnings are counted per step. One GPU: world size 1 only (NCCL refuses
   two ranks on one GPU); 2 nodes × 1 from 2 GPUs; hierarchical needs 2 × 2;
4. resume: a run stopped by SIGTERM after its first checkpoint (exit 143),
   resumed to the end, against the same run uninterrupted (GPU backward passes
   are not deterministic: within a tolerance, not bit for bit);
5. throughput: images/s of a 1 × 1 job (ResNet-20 on CIFAR-shaped synthetic
   data, bf16 and fp32), the same model in a bare loop on GPU-resident data
   (with and without the per-step host copies the trainer used to make) and a
   typical DataLoader script, and the ratios issue 13 sets goals for.

Every part records its error instead of stopping the others. `--dry-run` runs
the same parts on CPUs at a tiny size (gloo, fp32 where bf16 needs a GPU): what
the test suite checks, so that the script works the first time on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / d) for d in ("contract", "operator", "trainer_image")]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from dsgd_contract.config import TrainingConfig  # noqa: E402
from dsgd_contract.pod import CUDA_SYNC_DEBUG_ENV  # noqa: E402
from dsgd_operator.local_gang import LocalGang  # noqa: E402
from dsgd_operator.local_run import (  # noqa: E402
    free_port,
    plan_local_processes,
    prepare_run_directory,
)
from dsgd_trainer import results  # noqa: E402
from dsgd_trainer.checkpoint import read_latest  # noqa: E402
from job_runner import exit_on_termination, make_job  # noqa: E402
from machine import describe_machine  # noqa: E402

#: The whole check stays under 8 minutes; parts that would not fit are skipped, saying so.
BUDGET_SECONDS = 450
SYNC_WARNING = "called a synchronizing CUDA operation"
GOALS = {"dsgd_over_bare_bf16": 0.95, "dsgd_over_dataloader_bf16": 2.0}


@dataclass(frozen=True)
class Profile:
    """Sizes: a GPU's, or a tiny one for the CPU dry run."""

    gpu: bool
    dataset: str
    batch: int
    short_steps: int  # steps per rank of each algorithm run
    resume_epochs: int
    throughput_samples: int
    throughput_epochs: int
    loop_steps: int
    loop_warmup: int


GPU = Profile(True, "gpu_data:cifar_shaped", 128, 30, 5, 50_000, 3, 390, 50)
DRY = Profile(False, "gpu_data:cifar_shaped_small", 8, 3, 3, 128, 2, 6, 2)


def config(profile: Profile, nodes: int, per_node: int, algorithm: dict, **training: Any) -> dict:
    return {
        "topology": {"nodes": nodes, "processesPerNode": per_node, "gpu": profile.gpu},
        "algorithm": algorithm,
        "optimizer": {"learningRate": 0.1, "baseBatchSize": 128, "warmupEpochs": 0},
        "training": {
            "model": "resnet20",
            "dataset": {"name": profile.dataset},
            "batchSizePerProcess": profile.batch,
            "precision": "bf16",
            "epochs": 1,
            "checkpointEvery": 0,
            **training,
        },
    }


def child_env(sync_debug: bool) -> dict[str, str]:
    sources = [str(REPO / d) for d in ("contract", "operator", "trainer_image", "benchmarks")]
    inherited = [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*sources, *inherited])}
    if sync_debug:  # every sync inside a step warns, every time (not once per call site)
        env.update({CUDA_SYNC_DEBUG_ENV: "warn", "PYTHONWARNINGS": "always"})
    return env


def run_job(
    document: dict,
    out_dir: Path,
    timeout: float,
    *,
    sync_debug: bool = False,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Run a training config as `dsgd run` would; SIGTERM it after a checkpoint if asked."""
    job = make_job(TrainingConfig.model_validate(document), out_dir.name)
    config_path = prepare_run_directory(job, out_dir)
    log: list[str] = []
    started = time.monotonic()

    def tick() -> None:
        if time.monotonic() - started > timeout:
            log.append(f"gpu_check: stopped after {timeout:.0f} s")
            raise KeyboardInterrupt
        latest = read_latest(out_dir / "checkpoints")
        if stop_after_epoch is not None and latest and latest.epoch >= stop_after_epoch:
            raise KeyboardInterrupt  # the gang gets SIGTERM, as pods do

    with tempfile.TemporaryDirectory(prefix="gpu-check-metrics-") as metrics_dir:
        nodes = job.spec.topology.nodes
        processes = plan_local_processes(
            job,
            out_dir,
            config_path,
            Path(metrics_dir),
            free_port(),
            [0] * nodes,
            base_env=child_env(sync_debug),
        )
        outcome = LocalGang(processes, lambda node, line: log.append(f"[{node}] {line}")).run(
            tick, tick_seconds=0.2
        )
    summary_path = out_dir / results.SUMMARY_FILE
    records = results.read_records(out_dir) if (out_dir / results.METRICS_FILE).exists() else []
    steps = records[-1]["step"] if records else 0
    warnings = sum(SYNC_WARNING in line for line in log)
    return {
        "exit_codes": sorted(set(outcome.exit_codes.values())),
        "seconds": round(time.monotonic() - started, 1),
        "summary": json.loads(summary_path.read_text()) if summary_path.exists() else None,
        "records": records,
        "sync_warnings": warnings,
        "sync_warnings_per_step": round(warnings / steps, 3) if steps else None,
        "log_tail": log[-15:],
    }


def images_per_second(run: dict[str, Any]) -> float | None:
    """Mean of the epochs after the first (start-up and warm-up excluded when there are some)."""
    rates = [r["samples_per_second"] for r in run["records"]]
    rates = rates[1:] or rates
    return round(sum(rates) / len(rates), 1) if rates else None


def environment() -> dict[str, Any]:
    count = torch.cuda.device_count()
    devices = []
    for index in range(count):
        properties = torch.cuda.get_device_properties(index)
        devices.append(
            {
                "name": properties.name,
                "capability": f"{properties.major}.{properties.minor}",
                "memory_gib": round(properties.total_memory / 2**30, 1),
                "native_bf16": properties.major >= 8,
            }
        )
    nccl = torch.cuda.nccl.version() if count and torch.distributed.is_nccl_available() else None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl,
        "gpus": devices,
        "python": sys.version.split()[0],
    }


def gpu_tests() -> dict[str, Any]:
    test = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu"]
    done = subprocess.run(
        [*test, "tests/test_gpu_path.py"],
        cwd=REPO,
        env=child_env(False),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    last = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0:
        raise RuntimeError(f"pytest -m gpu exited {done.returncode}: {done.stdout[-2000:]}")
    return {"result": last}


def algorithms(profile: Profile, gpus: int, work: Path, notes: list[str]) -> dict[str, Any]:
    nodes = 2 if gpus >= 2 else 1
    if gpus < 2:
        notes.append("one GPU: only world size 1 runs (NCCL refuses two ranks on one GPU)")
    samples = profile.short_steps * profile.batch * nodes
    runs = {
        "mini-batch-sgd": config(profile, nodes, 1, {"name": "mini-batch-sgd"}),
        "local-sgd": config(profile, nodes, 1, {"name": "local-sgd", "localSteps": 4}),
        "post-local-sgd": config(
            profile,
            nodes,
            1,
            {"name": "post-local-sgd", "localSteps": 4, "switchEpoch": 1},
            epochs=2,
        ),
    }
    if gpus >= 4:
        runs["hierarchical-local-sgd"] = config(
            profile, 2, 2, {"name": "hierarchical-local-sgd", "localSteps": 2, "blockSteps": 2}
        )
    else:
        notes.append(f"hierarchical-local-sgd skipped: needs 2 nodes × 2 GPUs, {gpus} here")
    found = {}
    for name, document in runs.items():
        world = document["topology"]["nodes"] * document["topology"]["processesPerNode"]
        document["training"]["dataset"]["trainSamples"] = samples * world // nodes
        document["training"]["dataset"]["testSamples"] = 8 * profile.batch
        run = run_job(document, work / name, 150, sync_debug=True)
        found[name] = {"world_size": world, "ok": run["exit_codes"] == [0], **_brief(run)}
    return found


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("exit_codes", "seconds", "sync_warnings", "sync_warnings_per_step", "log_tail")
    summary = run["summary"] or {}
    return {
        "images_per_second": images_per_second(run),
        "final_test_accuracy": summary.get("final_test_accuracy"),
        "communication_seconds": summary.get("communication_seconds"),
        **{key: run[key] for key in keys},
    }


def resume(profile: Profile, gpus: int, work: Path) -> dict[str, Any]:
    nodes = 2 if gpus >= 2 else 1
    document = config(
        profile,
        nodes,
        1,
        {"name": "local-sgd", "localSteps": 4},
        epochs=profile.resume_epochs,
        checkpointEvery=1,
    )
    document["training"]["dataset"].update(
        trainSamples=profile.short_steps * 2 * profile.batch * nodes, testSamples=4 * profile.batch
    )
    reference = run_job(document, work / "uninterrupted", 150)
    stopped = run_job(document, work / "resumed", 150, stop_after_epoch=1)
    resumed = run_job(document, work / "resumed", 150)
    ends = [run["summary"] or {} for run in (reference, resumed)]
    accuracy = [end.get("final_test_accuracy") for end in ends]
    loss = [end.get("final_train_loss") for end in ends]
    complete = None not in accuracy + loss
    return {
        "ok": stopped["exit_codes"] == [143] and resumed["exit_codes"] == [0] and complete,
        "stopped_exit_codes": stopped["exit_codes"],
        "resumed_from": [line for line in resumed["log_tail"] if "resumed from" in line],
        "final_test_accuracy": accuracy,
        "final_train_loss": loss,
        "identical": complete and accuracy[0] == accuracy[1] and loss[0] == loss[1],
        # GPU backward passes are not deterministic (docs/algorithms.md): a tolerance there.
        "within_tolerance": complete
        and abs(accuracy[0] - accuracy[1]) <= 0.05
        and abs(loss[0] - loss[1]) <= 0.1 * abs(loss[0]),
        "logs": {"stopped": stopped["log_tail"], "resumed": resumed["log_tail"]},
    }


def throughput(profile: Profile, work: Path) -> dict[str, Any]:
    from gpu_loops import bare_loop, dataloader_loop

    found: dict[str, Any] = {}
    for precision in ("bf16", "fp32"):
        document = config(profile, 1, 1, {"name": "mini-batch-sgd"}, precision=precision)
        document["training"].update(epochs=profile.throughput_epochs)
        document["training"]["dataset"].update(trainSamples=profile.throughput_samples)
        run = run_job(document, work / f"throughput-{precision}", 240)
        if run["exit_codes"] != [0]:
            raise RuntimeError(f"the {precision} job failed: {run['log_tail']}")
        found[f"dsgd_{precision}"] = images_per_second(run)
    device = torch.device("cuda", 0) if profile.gpu else torch.device("cpu")
    sizes = {"batch": profile.batch, "steps": profile.loop_steps, "warmup": profile.loop_warmup}
    small = not profile.gpu
    for precision, bf16 in (("bf16", profile.gpu), ("fp32", False)):
        found[f"bare_{precision}"] = bare_loop(device, bf16=bf16, small=small, **sizes)
    found["bare_bf16_with_per_step_copies"] = bare_loop(
        device, bf16=profile.gpu, small=small, per_step_copies=True, **sizes
    )
    found["dataloader_bf16"] = dataloader_loop(device, bf16=profile.gpu, small=small, **sizes)
    ratios = {
        "dsgd_over_bare_bf16": found["dsgd_bf16"] / found["bare_bf16"],
        "dsgd_over_bare_fp32": found["dsgd_fp32"] / found["bare_fp32"],
        "dsgd_over_dataloader_bf16": found["dsgd_bf16"] / found["dataloader_bf16"],
        "bare_without_over_with_per_step_copies": found["bare_bf16"]
        / found["bare_bf16_with_per_step_copies"],
    }
    found = {key: round(value, 1) for key, value in found.items()}
    return {
        "images_per_second": found,
        "ratios": {key: round(value, 3) for key, value in ratios.items()},
        "goals_met": {key: ratios[key] >= goal for key, goal in GOALS.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPUs, tiny sizes: check the script")
    parser.add_argument(
        "--out", default="gpu-check.json", help="the JSON written (default: %(default)s)"
    )
    parser.add_argument("--work", help="run directories (default: a temporary directory)")
    args = parser.parse_args(argv)
    exit_on_termination()  # SIGTERM (the shell's timeout) stops the gangs we started
    started = time.monotonic()
    profile = DRY if args.dry_run else GPU
    gpus = torch.cuda.device_count() if profile.gpu else 4  # the dry run plays 4 "GPUs" on CPUs
    report: dict[str, Any] = {"dry_run": args.dry_run, "machine": describe_machine()}
    report.update(profile=asdict(profile), notes=[])
    report["parts"], report["errors"] = {}, {}
    work_root = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))

    def part(name: str, body: Callable[[], Any], needs: float) -> None:
        left = BUDGET_SECONDS - (time.monotonic() - started)
        if left < needs:
            report["notes"].append(f"{name} skipped: {left:.0f} s left of {BUDGET_SECONDS}")
            return
        began = time.monotonic()
        print(f"gpu_check: {name} …", flush=True)
        try:
            report["parts"][name] = body()
        except Exception as error:  # every part reports, whatever happens in another
            report["errors"][name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
        print(f"gpu_check: {name} done in {time.monotonic() - began:.0f} s", flush=True)
        write(report)  # after every part: a hard stop still leaves what was measured

    def write(report: dict[str, Any]) -> None:
        report["seconds"] = round(time.monotonic() - started, 1)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    part("environment", environment, 1)
    if profile.gpu and gpus == 0:
        report["errors"]["environment"] = "no CUDA GPU visible; --dry-run checks the script on CPUs"
    else:
        part("gpu_tests", gpu_tests, 60)
        part(
            "algorithms",
            lambda: algorithms(profile, gpus, work_root / "algorithms", report["notes"]),
            120,
        )
        part("resume", lambda: resume(profile, gpus, work_root / "resume"), 90)
        part("throughput", lambda: throughput(profile, work_root / "throughput"), 120)
    failed = [
        name
        for name, value in report["parts"].items()
        if isinstance(value, dict) and value.get("ok") is False
    ]
    failed += [
        name for name, runs in report["parts"].get("algorithms", {}).items() if not runs["ok"]
    ]
    report["ok"] = not report["errors"] and not failed
    write(report)
    print(f"gpu_check: {'ok' if report['ok'] else 'PROBLEMS'}; wrote {args.out}", flush=True)
    for note in report["notes"]:
        print(f"gpu_check: note: {note}", flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
