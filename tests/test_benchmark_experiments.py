"""benchmarks/: the paper-findings and time-to-accuracy comparisons are SGDExperiments.

Their manifests (benchmarks/experiments/) expand, at every size of the script that
runs them, to the variants the benchmark compares, each trial valid by the job's
own rules; the sizes change what their tables say and nothing else. Then each
script runs end to end at its `--smoke` size: the experiment's trials (locally, or
across shaped links: root only), `dsgd report` on them (its numbers against the
trials' summaries, with numpy), and the benchmark's own verdict.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from dsgd_operator.experiments.grid import expand_trials, trial_job
from dsgd_operator.manifest import parse_job

from tests.test_benchmarks_smoke import (  # noqa: F401 - netns: a fixture
    BENCHMARKS,
    REPO,
    assert_index_links,
    assert_png,
    import_benchmark,
    netns,
    run_script,
)
from tests.test_experiment_report import numbers, report_rows
from tests.test_time_to_accuracy_analysis import evaluation_points

TIME_TO_ACCURACY = [
    "mini-batch",
    "local-h4",
    "local-h16",
    "local-h4-overlap",
    "local-h16-overlap",
    "local-h16-overlap8",
    "local-h16-overlap6",
    "local-h16-overlap4",
    "post-local-h16",
    "hierarchical",
    "no-communication",
    "downpour",
]


def sized(module: ModuleType, size: str):
    bench = import_benchmark("bench_experiment")
    _, experiment = bench.sized_experiment(module.MANIFEST, module.SIZES[size])
    trials = expand_trials(experiment.spec)
    for trial in trials:
        parse_job(trial_job(experiment, trial))  # every child job passes the job's rules
    return experiment, trials, [bench.variant_key(t.spec) for t in trials]


def test_paper_findings_manifest_compares_its_variants_at_every_size() -> None:
    paper = import_benchmark("paper_findings")
    for size in ("quick", "full"):
        experiment, trials, keys = sized(paper, size)
        assert keys == [k for k in ("mini-batch", "post-local-h16", "local-h16") for _ in "012"]
        assert experiment.spec.seeds == [0, 1, 2]
        assert {t.spec.topology.world_size for t in trials} == {8}
        samples = {(t.spec.training.dataset.train_samples, t.spec.training.epochs) for t in trials}
        assert samples == {"quick": {(16384, 6)}, "full": {(24576, 8)}}[size]
    experiment, trials, keys = sized(paper, "smoke")
    assert keys == ["mini-batch", "post-local-h16"] and experiment.spec.seeds == [0]
    assert {(t.spec.training.model, t.spec.training.dataset.name) for t in trials} == {
        ("mlp", "synthetic")
    }


def test_time_to_accuracy_manifest_holds_every_variant_downpour_included() -> None:
    pytest.importorskip("matplotlib", reason="the benchmarks' figures need matplotlib (bench)")
    tta = import_benchmark("time_to_accuracy")
    for size in ("quick", "full"):
        experiment, trials, keys = sized(tta, size)
        assert keys == TIME_TO_ACCURACY
        # The same sample budget and data for every cell.
        budget = {
            (t.spec.training.epochs, t.spec.training.batch_size_per_process, t.spec.topology.nodes)
            for t in trials
        }
        assert budget == {"quick": {(6, 64, 2)}, "full": {(8, 128, 2)}}[size]
        assert experiment.spec.target_accuracy == {"quick": 0.84, "full": 0.87}[size]
        by_key = dict(zip(keys, (t.spec for t in trials), strict=True))
        lower = by_key["no-communication"]
        run_steps = (
            lower.training.epochs
            * lower.training.dataset.train_samples
            // (lower.topology.world_size * lower.training.batch_size_per_process)
        )
        assert lower.algorithm.local_steps > run_steps  # no averaging in the whole run
        assert by_key["local-h16-overlap"].algorithm.overlap_steps == 16
        assert by_key["local-h16-overlap8"].algorithm.overlap_steps == 8
        assert by_key["local-h16-overlap6"].algorithm.overlap_steps == 6
        assert by_key["local-h16-overlap4"].algorithm.overlap_steps == 4
        downpour = by_key["downpour"]
        assert downpour.topology.parameter_servers == 2
        assert (downpour.algorithm.fetch_steps, downpour.algorithm.push_steps) == (4, 4)
        assert downpour.algorithm.server_optimizer == "adagrad"
        optimizer = downpour.optimizer
        assert (optimizer.learning_rate, optimizer.scaling, optimizer.momentum) == (0.01, "none", 0)
        assert optimizer.milestones == [] and not optimizer.nesterov
        others = {k: s for k, s in by_key.items() if k != "downpour"}
        assert {s.topology.parameter_servers for s in others.values()} == {0}
        assert {s.optimizer.learning_rate for s in others.values()} == {
            {"quick": 0.05, "full": 0.025}[size]
        }
    _, trials, keys = sized(tta, "smoke")
    assert keys == ["mini-batch", "local-h4-overlap", "no-communication"]
    assert {(t.spec.topology.nodes, t.spec.topology.processes_per_node) for t in trials} == {(2, 1)}


def test_a_chosen_set_of_variants_keeps_exactly_those_cells_and_refuses_an_unknown_one() -> None:
    pytest.importorskip("matplotlib", reason="the benchmarks' figures need matplotlib (bench)")
    bench = import_benchmark("bench_experiment")
    tta = import_benchmark("time_to_accuracy")
    wanted = ("mini-batch", "local-h16-overlap", "no-communication")
    size = bench.Size(tta.SIZES["full"].overrides, variants=wanted)
    _, experiment = bench.sized_experiment(tta.MANIFEST, size)
    trials = expand_trials(experiment.spec)
    assert [bench.variant_key(t.spec) for t in trials] == list(wanted)
    assert {t.spec.training.batch_size_per_process for t in trials} == {128}  # full's, kept
    with pytest.raises(bench.BenchmarkUnavailable, match=r"no such variant local-h32 \(known: "):
        bench.sized_experiment(tta.MANIFEST, bench.Size(variants=("mini-batch", "local-h32")))


def test_a_manifest_that_is_not_an_experiment_is_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: dsgd.io/v1alpha1\nkind: SGDExperiment\nmetadata: {name: x}\n"
        "spec: {axes: [{field: training.seed, values: [1]}]}\n"
    )
    process = subprocess.run(
        [sys.executable, str(BENCHMARKS / "paper_findings.py"), "--manifest", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert process.returncode == 2, process.stdout + process.stderr
    assert process.stderr.strip().splitlines() == [
        f"[paper_findings] {bad}: spec.axes[0].field: training.seed: the seed is "
        "not an axis: list replicates in spec.seeds"
    ]


@pytest.mark.slow
def test_paper_findings_smoke_runs_the_experiment_and_reports_seed_statistics(tmp_path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    run_script("paper_findings.py", out, "--work", str(work))
    results = json.loads((out / "paper_findings-smoke.json").read_text())
    variants = results["variants"]
    assert set(variants) == {"mini-batch", "post-local-h16"}
    # Post-local SGD communicates less than mini-batch SGD after its switch.
    assert (
        variants["post-local-h16"]["communicated_bytes"]
        < variants["mini-batch"]["communicated_bytes"]
    )
    assert isinstance(results["verdict"]["at_least_as_good"], bool)
    assert "## Verdict" in (out / "paper_findings-smoke.md").read_text()
    assert_index_links(out, "paper_findings-smoke.md")
    # dsgd report's table: test and train accuracy and their gap are the trials' summaries'.
    report_dir = out / "paper_findings-smoke"
    rows = report_rows(report_dir)
    for cell, key in (("c0", "mini-batch"), ("c1", "post-local-h16")):
        summary = json.loads(
            (work / "paper-findings" / f"paper-findings-{cell}-s0" / "summary.json").read_text()
        )
        test, train = summary["final_test_accuracy"], summary["final_train_accuracy"]
        assert numbers(rows[cell][3]) == pytest.approx([100 * test], abs=0.0051)
        assert numbers(rows[cell][4]) == pytest.approx([100 * train], abs=0.0051)
        assert numbers(rows[cell][5]) == pytest.approx([100 * (train - test)], abs=0.0051)
        figures = variants[key]
        assert figures["final_test_accuracy"]["mean"] == pytest.approx(np.mean([test]))
        assert figures["generalization_gap"]["mean"] == pytest.approx(train - test)
    assert_png(report_dir / "accuracy-vs-epochs.png")


@pytest.mark.slow
def test_time_to_accuracy_smoke_runs_the_experiment_across_shaped_links(
    netns: ModuleType,  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    before = set(netns.list_namespaces())
    run_script("time_to_accuracy.py", tmp_path, "--seeds", "2")
    assert set(netns.list_namespaces()) <= before, "the benchmark left namespaces behind"
    results = json.loads((tmp_path / "time_to_accuracy-smoke.json").read_text())
    assert results["benchmark"] == "time_to_accuracy" and results["machine"]["cores"] >= 1
    link = results["rates"]["1gbit"]["link"]
    assert 0.8 <= link["goodput_ratio_to_rate"] <= 1.2
    runs = results["rates"]["1gbit"]["runs"]
    assert set(runs) == {"mini-batch", "local-h4-overlap", "no-communication"}
    settings = results["settings"]
    for run in runs.values():
        assert [p["epoch"] for p in run["curve"]] == list(range(1, settings["epochs"] + 1))
        assert run["samples"] == settings["samples"]  # the same sample budget for all
        seconds = [p["train_seconds"] for p in run["curve"]]
        assert seconds == sorted(seconds) and seconds[0] > 0
    mini, lower = runs["mini-batch"], runs["no-communication"]
    assert mini["sync_rounds"]["global"] == settings["steps"]  # one gradient round per step
    assert runs["local-h4-overlap"]["sync_rounds"]["global"] == settings["steps"] // 4
    assert "1gbit" in results["overlap_goals"]
    assert lower["sync_rounds"]["global"] == 0 and lower["communicated_bytes"] == 0
    # --seeds 2: every figure is the median of the two seeds' own analyses.
    assert settings["seeds"] == [0, 1]
    for run in runs.values():
        accuracies = run["per_seed"]["final_test_accuracy"]
        assert len(accuracies) == 2 and run["final_test_accuracy"] == np.mean(accuracies)
    report = (tmp_path / "time_to_accuracy-smoke.md").read_text()
    assert "seeds 0, 1 (each figure in the tables and goals: the median" in report
    assert "| mini-batch SGD (DDP) |" in report and "no communication (lower bound)" in report
    assert "(time_to_accuracy-smoke-1gbit/report.md)" in report
    rows = report_rows(tmp_path / "time_to_accuracy-smoke-1gbit")
    assert len(rows) == 3 and {row[2] for row in rows.values()} == {"2"}  # 3 cells, 2 seeds each
    assert_png(tmp_path / "time_to_accuracy-smoke-1gbit.png")
    assert_png(tmp_path / "time_to_accuracy-smoke-time-to-target.png")
    assert_index_links(tmp_path, "time_to_accuracy-smoke.md", "time_to_accuracy-smoke-1gbit.png")


def test_median_over_seeds_takes_each_seeds_own_ratio_and_counts_a_miss_as_longest() -> None:
    """Each seed is analysed against its own lower bound first; then the medians (oracle:
    statistics.median of the per-seed figures, a missed target counted as +inf)."""
    tta = import_benchmark("time_to_accuracy_analysis")

    def seed(local: list[float], local_seconds: float, lower_seconds: float) -> dict:
        return {
            "mini-batch": {
                "curve": evaluation_points([0.5, 0.8], 10.0),
                "final_test_accuracy": 0.85,
            },
            "local-h16": {
                "curve": evaluation_points(local, local_seconds),
                "final_test_accuracy": local[-1],
            },
            "no-communication": {
                "curve": evaluation_points([0.3, 0.4], lower_seconds),
                "final_test_accuracy": 0.4,
            },
        }

    per_seed = [
        seed([0.6, 0.8], 3.0, 2.0),  # target at 200 samples: 6 s over 4 s = 1.5
        seed([0.8, 0.9], 3.0, 2.5),  # at 100 samples: 3 s over 2.5 s = 1.2
        seed([0.6, 0.7], 3.0, 2.0),  # never: counts as the longest
    ]
    for runs in per_seed:
        tta.analyze(runs, target=0.8)
    merged = tta.median_runs(per_seed)["local-h16"]
    assert merged["per_seed"]["ratio_to_lower_bound"] == [1.5, 1.2, None]
    assert merged["ratio_to_lower_bound"] == statistics.median([1.5, 1.2, math.inf])
    assert merged["time_to_target"] == statistics.median([6.0, 3.0, math.inf])
    assert merged["final_test_accuracy"] == statistics.median([0.8, 0.9, 0.7])
    assert merged["speedup_vs_mini_batch"] == statistics.median([20 / 6, 20 / 3, 0.0])
    assert merged["curve"] == per_seed[0]["local-h16"]["curve"]  # curves: the first seed's
    # Two seeds of three missing the target: no median time.
    per_seed[0]["local-h16"] = seed([0.6, 0.7], 3.0, 2.0)["local-h16"]
    tta.analyze(per_seed[0], target=0.8)
    assert tta.median_runs(per_seed)["local-h16"]["time_to_target"] is None
