"""The Markdown report and figures of benchmarks/time_to_accuracy.py's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from machine import machine_line
from plots import Series, plot_accuracy, plot_bars
from report import fmt, markdown_table, megabytes, percent
from time_to_accuracy_analysis import LOWER_BOUND, seconds_at_samples


def write_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """The markdown report and figures of `results`; returns the files written."""
    scale, target = results["scale"], results["settings"]["target"]
    stem = f"{results['benchmark']}-{scale}"
    written = []
    lines = [
        f"# Time to accuracy on bandwidth-limited links ({scale})",
        "",
        f"Machine: {machine_line(results['machine'])}.",
        "",
        describe_setup(results["settings"]),
        "",
    ]
    for rate, at_rate in results["rates"].items():
        runs, link = at_rate["runs"], at_rate["link"]
        goodput = link["measured_goodput_bits_per_second"]
        lines += [
            f"## {rate} links (measured TCP goodput "
            f"{fmt(goodput / 1e6 if goodput else None, 1)} Mbit/s)",
            "",
            f"The experiment's own report (`dsgd report`: every cell, wall times, train "
            f"accuracy and generalization gap): [{at_rate['report']}]({at_rate['report']}).",
            "",
            markdown_table(
                [
                    "algorithm",
                    f"time to {percent(target, 1)} (s)",
                    "× lower bound",
                    "speed-up vs mini-batch",
                    "samples to target",
                    "final test acc.",
                    "MB sent per rank",
                    "sync rounds (global / intra-node)",
                    "training time (s)",
                    "in collectives",
                ],
                [
                    [
                        run["label"],
                        fmt(run["time_to_target"], 1),
                        fmt(run["ratio_to_lower_bound"], 2, "×"),
                        fmt(run["speedup_vs_mini_batch"], 2, "×"),
                        f"{run['samples_to_target']:,}" if run["samples_to_target"] else None,
                        percent(run["final_test_accuracy"]),
                        megabytes(run["communicated_bytes"]),
                        f"{run['sync_rounds']['global']} / {run['sync_rounds']['intra_node']}",
                        fmt(run["train_seconds"], 1),
                        collective_share(run),
                    ]
                    for run in runs.values()
                ],
            ),
            "",
        ]
        figure = out_dir / f"{stem}-{rate}.png"
        plot_accuracy(
            [
                Series(
                    run["label"]
                    + (" (its accuracy: a one-shot average)" if key == LOWER_BOUND else ""),
                    {axis: [p[axis] for p in run["curve"]] for axis in AXIS_KEYS},
                    [p["test_accuracy"] for p in run["curve"]],
                    dashed=key == LOWER_BOUND,
                )
                for key, run in runs.items()
            ],
            figure,
            f"{results['settings']['model']} on {results['settings']['dataset']}, "
            f"K={results['settings']['world_size']}, {rate} links",
            target=target,
        )
        written.append(figure)
        lines += [f"![accuracy vs time, bytes and samples at {rate}]({figure.name})", ""]
    bars = out_dir / f"{stem}-time-to-target.png"
    labels = [
        run["label"] + (" at mini-batch's samples" if key == LOWER_BOUND else "")
        for key, run in next(iter(results["rates"].values()))["runs"].items()
    ]
    keys = list(next(iter(results["rates"].values()))["runs"])
    plot_bars(
        labels,
        {
            rate: [bar_seconds(at_rate["runs"], key) for key in keys]
            for rate, at_rate in results["rates"].items()
        },
        bars,
        f"training time to {percent(target, 1)} test accuracy",
        "seconds",
    )
    written.append(bars)
    lines += [f"![time to target by rate]({bars.name})", ""]
    lines += goal_lines(results.get("goal"))
    for overlap_goal in (results.get("overlap_goals") or {}).values():
        lines += overlap_goal_lines(overlap_goal)
    report = out_dir / f"{stem}.md"
    report.write_text("\n".join(lines).rstrip() + "\n")
    written.append(report)
    return written


AXIS_KEYS = ("train_seconds", "communicated_bytes", "samples")


def bar_seconds(runs: dict[str, dict[str, Any]], key: str) -> float | None:
    """Time to target of run `key`; for the lower bound (which never reaches it), its
    training time at the samples mini-batch SGD needed."""
    if key != LOWER_BOUND:
        return runs[key]["time_to_target"]
    samples = runs.get("mini-batch", {}).get("samples_to_target")
    return seconds_at_samples(runs[key]["curve"], samples) if samples else None


def collective_share(run: dict[str, Any]) -> str | None:
    """The share of training time spent inside averaging collectives (same run, so no
    cross-run noise); None where DDP is involved: its all-reduce overlaps the backward pass,
    untimed."""
    if run["algorithm"]["name"] in ("mini-batch-sgd", "post-local-sgd"):
        return None
    if not run["sync_rounds"]["global"]:
        return None
    return fmt(100 * run["communication_seconds"] / run["train_seconds"], 0, "%")


def describe_setup(settings: dict[str, Any]) -> str:
    return (
        f"Setup: K = {settings['world_size']} ranks ({settings['nodes']} nodes × "
        f"{settings['processes_per_node']} processes), `{settings['model']}` on "
        f"`{settings['dataset']}` ({settings['train_samples']} training / "
        f"{settings['test_samples']} test samples), batch {settings['batch_size']} per rank, "
        f"{settings['epochs']} epochs = {settings['steps']} steps = {settings['samples']:,} "
        f"samples for every algorithm, {seeds_text(settings.get('seeds', [0]))}, SGD with "
        f"Nesterov momentum 0.9, lr "
        f"{settings['peak_learning_rate']:g} (linear scaling), × 0.1 at 50% and 75%. Each node "
        "runs in its own network namespace; every node's egress is shaped with tbf to the "
        "rate; the ranks of one node talk over loopback. Training time = sum of the trainer's "
        "`epoch_seconds` (steps and their communication; per-epoch evaluation and start-up "
        "excluded). × lower bound = time to target / training time of the no-communication "
        "run (local SGD with H > all steps: the same compute, collectives skipped) for the "
        "same number of samples. Bytes and rounds: rank 0's counters. In collectives: the "
        "trainer's communication_seconds / training time of the same run (time inside the "
        "averaging collectives, waiting for the slowest rank included; not measurable for "
        "DDP, which overlaps its all-reduce with the backward pass)."
    )


def seeds_text(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return (
        f"seeds {', '.join(map(str, seeds))} (each figure in the tables and goals: the median "
        "over seeds, each seed's time to target taken over the same seed's lower bound, a "
        "seed that missed the target counted as the longest; curves: the first seed's)"
    )


def seed_lines(per_seed: dict[str, list[float | None] | None]) -> str:
    """Each seed's figures behind an overlap goal's medians ("" for one seed)."""
    ratios = per_seed.get("ratio_to_lower_bound") or []
    if len(ratios) < 2:
        return ""
    accuracy = per_seed.get("final_test_accuracy") or []
    mini = per_seed.get("mini_batch_final_test_accuracy") or []
    return (
        f"; by seed: × lower bound {', '.join(fmt(r, 2, '×') or 'n/a' for r in ratios)}, "
        f"final test accuracy {', '.join(percent(a) or 'n/a' for a in accuracy)} "
        f"(mini-batch SGD: {', '.join(percent(a) or 'n/a' for a in mini)})"
    )


def goal_lines(goal: dict[str, Any] | None) -> list[str]:
    if goal is None:
        return []
    checks = goal["checks"]
    speed = checks["speedup_vs_mini_batch_at_least_3"]
    ratio = checks["ratio_to_lower_bound_at_most_1.2"]
    drop = checks["final_accuracy_drop_at_most_0.5_points"]

    def verdict(check: dict[str, Any]) -> str:
        return "met" if check["met"] else "NOT met"

    def shown(value: float | None, suffix: str = "") -> str:
        return fmt(value, 2, suffix) or "n/a (target not reached)"

    return [
        f"## Goal at {goal['rate']}: {'met' if goal['met'] else 'NOT met'}",
        "",
        f"- local SGD H=16 reaches the target {shown(speed['value'], '×')} sooner than "
        f"mini-batch SGD (goal ≥ 3×): {verdict(speed)}",
        f"- … within {shown(ratio['value'], '×')} of the lower bound (goal ≤ 1.2×): "
        f"{verdict(ratio)}",
        f"- … with a final test accuracy {shown(drop['value'])} points below mini-batch SGD's "
        f"(goal ≤ 0.5): {verdict(drop)}",
        "",
        *cost_lines(goal.get("where_the_time_goes")),
    ]


def cost_lines(cost: dict[str, float] | None) -> list[str]:
    if cost is None:
        return []
    return [
        f"Where the time goes (same-run measurements): one global averaging of the model "
        f"takes {cost['sync_seconds']:.3f} s (local SGD H=16: time in collectives / rounds), "
        f"one step's compute {1000 * cost['step_seconds']:.0f} ms (lower bound: training "
        f"time / steps), so c = {cost['c']:.1f} and even without noise local SGD with H=16 "
        f"would take {cost['ideal_ratio_to_lower_bound']:.2f}× the lower bound; "
        f"H ≥ {cost['local_steps_needed_for_1.2']:.0f} (or that much more compute per step) "
        "would be needed for 1.2× with this model and batch. The rest of the gap is the "
        "run-to-run noise of a shared 2-core machine (compare the two rates' lower bounds).",
        "",
    ]


def overlap_goal_lines(goal: dict[str, Any] | None) -> list[str]:
    """Where the overlap goals hold at one rate, and what one averaging costs in steps."""
    if goal is None:
        return []
    lines = [f"## Overlap goals at {goal['rate']}: {'met' if goal['met'] else 'NOT met'}", ""]
    for run in goal["runs"].values():
        ratio, drop = (
            run["checks"]["ratio_to_lower_bound"],
            run["checks"]["final_accuracy_drop_points"],
        )
        lines.append(
            f"- {run['label']}: {fmt(ratio['value'], 2, '×') or 'n/a (target not reached)'} the "
            f"lower bound (goal ≤ {ratio['limit']:.2f}×; blocking: "
            f"{fmt(run['blocking_ratio_to_lower_bound'], 2, '×') or 'n/a'}): "
            f"{'met' if ratio['met'] else 'NOT met'}; final test accuracy "
            f"{fmt(drop['value'], 2)} points below mini-batch SGD's (goal ≤ 0.5): "
            f"{'met' if drop['met'] else 'NOT met'}; one averaging costs "
            f"{fmt(run['blocking_steps_per_averaging'], 1) or 'n/a'} steps of compute blocking, "
            f"{fmt(run['exposed_steps_per_averaging'], 1) or 'n/a'} left exposed overlapped"
            + seed_lines(run.get("per_seed") or {})
        )
    return [*lines, ""]
