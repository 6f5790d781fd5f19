"""`dsgd experiment run`: a 2-cell × 2-seed experiment of tiny jobs, for real (torchrun, gloo).

One test, because the interesting run is the interrupted one: it is stopped
(SIGINT, as Ctrl-C) after the second trial's first checkpoint, then re-run into
the same directory. The oracles are the files the trainers wrote: a finished
trial's summary.json is never rewritten (same mtime and bytes), the interrupted
trial's first metrics.jsonl record survives and no epoch is recorded twice (a
resume keeps the epochs of its checkpoint; a fresh start would append them
again), and every trial's config holds its cell's algorithm and its seed.
Beside it: parallel trials, and a custom trial runner (what the benchmarks plug in to
run trials on shaped links) on a 2-cell × 1-seed, one-epoch experiment.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.cli import main as dsgd
from dsgd_operator.experiments.local import run_experiment
from dsgd_operator.experiments.manifest import load_experiment
from dsgd_operator.local_run import run_gang

from tests.test_experiment_report import numbers, report_rows
from tests.test_local_run import processes_of_run

pytestmark = pytest.mark.slow

ALGORITHMS = [{"name": "mini-batch-sgd"}, {"name": "local-sgd", "localSteps": 2}]
SEEDS = [3, 5]
TRIALS = [f"tiny-c{c}-s{s}" for c in range(2) for s in SEEDS]


def write_experiment(tmp_path: Path, seeds: list[int] = SEEDS, epochs: int = 4) -> Path:
    document = {
        "apiVersion": "dsgd.io/v1alpha1",
        "kind": "SGDExperiment",
        "metadata": {"name": "tiny"},
        "spec": {
            "template": {
                "topology": {"nodes": 1},
                "optimizer": {"learningRate": 0.05, "baseBatchSize": 32, "warmupEpochs": 0},
                "training": {
                    "model": "mlp",
                    "dataset": {"name": "synthetic", "trainSamples": 1024, "testSamples": 64},
                    "batchSizePerProcess": 32,
                    "epochs": epochs,
                },
            },
            "axes": [{"field": "algorithm", "values": ALGORITHMS}],
            "seeds": seeds,
        },
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def experiment_run(path: Path, out: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "dsgd_operator.cli", "experiment", "run", str(path)]
    return subprocess.Popen(
        [*argv, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"exited early: {process.communicate()[0]}"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.05)


def test_interrupted_experiment_continues_without_repeating_finished_trials(tmp_path) -> None:
    path, out = write_experiment(tmp_path), tmp_path / "out"
    first = experiment_run(path, out)
    try:
        wait_for(out / TRIALS[0] / "summary.json", first)
        wait_for(out / TRIALS[1] / "checkpoints" / "latest.json", first)
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, output
    assert "interrupted: re-run the same command to continue" in output
    assert all(processes_of_run(out / name) == [] for name in TRIALS)

    finished = {n: out / n / "summary.json" for n in TRIALS if (out / n / "summary.json").exists()}
    assert TRIALS[0] in finished and TRIALS[3] not in finished
    stamps = {n: (p.stat().st_mtime_ns, p.read_bytes()) for n, p in finished.items()}
    interrupted = next(n for n in TRIALS if n not in finished)
    first_record = (out / interrupted / "metrics.jsonl").read_text().splitlines()[0]

    second = experiment_run(path, out)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    assert f"tiny: 4 trials, {len(finished)} already finished" in output
    assert "4 of 4 trials finished" in output
    for name, (mtime, content) in stamps.items():
        summary = out / name / "summary.json"
        assert (summary.stat().st_mtime_ns, summary.read_bytes()) == (mtime, content), name
        assert f"{name}:" not in output.split("already finished", 1)[1]  # never started again
    # The interrupted trial resumed from its checkpoint: its first epoch's record is kept and
    # no epoch is recorded twice (a fresh start would have appended epoch 1 again).
    lines = (out / interrupted / "metrics.jsonl").read_text().splitlines()
    assert lines[0] == first_record
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]

    index = json.loads((out / "experiment.json").read_text())
    assert [t["name"] for t in index["trials"]] == TRIALS
    for trial in index["trials"]:
        config = json.loads((out / trial["name"] / "config.json").read_text())
        summary = json.loads((out / trial["name"] / "summary.json").read_text())
        cell = int(trial["cell"].removeprefix("c"))
        assert config["training"]["seed"] == trial["seed"]
        assert config["algorithm"]["name"] == summary["algorithm"] == ALGORITHMS[cell]["name"]
        assert summary["epochs"] == 4

    # dsgd report on the real trials: report.md's accuracy is their summaries' (numpy).
    assert dsgd(["report", str(out)]) == 0
    rows = report_rows(out)
    for cell in ("c0", "c1"):
        accuracy = 100 * np.array(
            [
                json.loads((out / f"tiny-{cell}-s{seed}" / "summary.json").read_text())[
                    "final_test_accuracy"
                ]
                for seed in SEEDS
            ]
        )
        assert numbers(rows[cell][3]) == pytest.approx(
            [accuracy.mean(), accuracy.std(ddof=1)], abs=0.005
        )


def test_parallel_trials_stay_within_the_limit_and_log_to_their_directories(tmp_path) -> None:
    path, out = write_experiment(tmp_path), tmp_path / "out"
    argv = [sys.executable, "-m", "dsgd_operator.cli", "experiment", "run", str(path)]
    run = subprocess.Popen(
        [*argv, "--out", str(out), "--parallel", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    most = 0
    try:
        while run.poll() is None:
            alive = [name for name in TRIALS if processes_of_run(out / name)]
            most = max(most, len(alive))
            time.sleep(0.2)
        output, _ = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, output
    assert 1 <= most <= 2, most
    for name in TRIALS:
        assert json.loads((out / name / "summary.json").read_text())["epochs"] == 4
        assert "[node-0] [dsgd] epoch 4/4" in (out / name / "trial.log").read_text()


def test_a_custom_runner_runs_each_unfinished_trial_into_its_directory(tmp_path) -> None:
    """run_experiment(runner=...): the runner gets each trial's job and directory; what it
    leaves there is the trial's result (`dsgd report` reads it), a finished trial is not
    handed to it again, and its failures count as a gang's do. Here it runs the first
    cell's job as a real local gang (quietly) and fails the second's."""
    experiment = load_experiment(write_experiment(tmp_path, seeds=[3], epochs=1))
    out, calls = tmp_path / "out", []

    def first_cell_only(job: DistributedSGDJob, directory: Path) -> int:
        calls.append((job.name, directory))
        if job.name != "tiny-c0-s3":
            return 3
        return run_gang(job, directory, log=lambda _node, _line: None).exit_code

    assert run_experiment(experiment, out, runner=first_cell_only) == 1
    assert calls == [(f"tiny-c{c}-s3", out / f"tiny-c{c}-s3") for c in range(2)]
    config = json.loads((out / "tiny-c0-s3" / "config.json").read_text())  # the trial's job
    assert config["algorithm"]["name"] == ALGORITHMS[0]["name"]
    assert config["training"]["seed"] == 3
    # Re-run: the finished trial is not handed over again; the failed one is.
    assert run_experiment(experiment, out, runner=first_cell_only) == 1
    assert [name for name, _ in calls[2:]] == ["tiny-c1-s3"]
    assert dsgd(["report", str(out)]) == 0
    rows = report_rows(out)
    summary = json.loads((out / "tiny-c0-s3" / "summary.json").read_text())
    assert rows["c0"][2] == "1" and rows["c1"][2] == "0"
    assert numbers(rows["c0"][3]) == pytest.approx(
        [100 * summary["final_test_accuracy"]],
        abs=0.0051,  # shown to 2 decimals
    )
    assert "Not finished (left out): tiny-c1-s3." in (out / "report.md").read_text()
