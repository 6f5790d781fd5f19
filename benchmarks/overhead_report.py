"""What benchmarks/overhead.py's raw block times mean: per-step times, overheads against the
plain PyTorch loops, the checks, and the Markdown report with its figures."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import machine_line
from plots import plot_bars
from report import fmt, markdown_table

#: Steps per block: a multiple of every H there, so each block holds whole sync cycles.
BLOCK_STEPS = 16
NAME = "overhead"
BASELINE = "pytorch-ddp"
CONTROL = "pytorch-ddp-again"


def analyze(setup: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """Per contender (and post-local phase): per-step time, overhead vs plain DDP and vs its
    PyTorch reference, bytes/epoch; and the checks."""
    baseline = dict(raw["times"][BASELINE])
    counters = raw["counters"]
    mini = counters.get("mini-batch")
    mini_bytes = sum(mini["bytes"].values()) if mini else None
    rows = {}
    order = raw["order"]
    for phase in raw["times"]:
        samples = raw["times"][phase]
        key, _, part = phase.partition(":")
        ratios = [seconds / baseline[r] for r, seconds in samples if r in baseline]
        reference_key = raw["references"][key]
        reference = dict(raw["times"].get(reference_key, []))
        to_reference = [seconds / reference[r] for r, seconds in samples if r in reference]
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
            "reference": reference_key,
            "vs_reference_median": (
                statistics.median(to_reference) - 1 if to_reference and not part else None
            ),
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
            "reference": BASELINE,
            "vs_reference_median": None,
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
    for key, check in (("mini-batch", "mini_batch"), ("local-h4", "local_h4")):
        if key in rows:  # the goal: at most 3 % over PyTorch's own loop, same run
            value = rows[key]["vs_reference_median"]
            checks[f"{check}_at_most_3_percent_over_pytorch"] = {
                "value": value,
                "met": value is not None and value <= 0.03,
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
        "setup": setup,
        "rows": rows,
        "checks": checks,
        "raw": raw,
    }


def percent_change(ratio: float | None) -> str | None:
    return None if ratio is None else f"{100 * ratio:+.1f}%"


#: Check key → (what it says, how its value is shown).
CHECKS: dict[str, tuple[str, Callable[[float], str]]] = {
    "mini_batch_at_most_3_percent_over_pytorch": (
        "mini-batch SGD takes at most 3% more time per step than the plain DDP loop",
        lambda value: f"{100 * value:+.1f}%",
    ),
    "local_h4_at_most_3_percent_over_pytorch": (
        "local SGD (H=4) takes at most 3% more time per step than PyTorch's "
        "PeriodicModelAverager loop (H=4)",
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
        f"# Per-step overhead against plain PyTorch loops ({results['scale']})",
        "",
        f"Machine: {machine_line(results['machine'])}.",
        "",
        "Every contender trains its own replica (same seed, same batches) on the same ranks, "
        f"in blocks of {BLOCK_STEPS} steps taken in turns, shuffled every round; ours run the "
        "trainer's own step (dsgd_trainer.step) with train.py's per-step clock and histogram. "
        "Overhead: median over rounds of block time / the plain DDP loop's block time in the "
        "same round, minus 1 (negative: faster); the interquartile range of that ratio shows "
        "the noise, as does the A/A control (a second plain DDP loop). 'vs PyTorch': the same "
        "against the contender's PyTorch reference (local SGD with H: the "
        "PeriodicModelAverager loop with H; the others: the DDP loop). Bytes and rounds: one "
        "epoch, from each algorithm's counters (rank 0).",
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
                    "vs PyTorch",
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
                        percent_change(row["vs_reference_median"])
                        if row["reference"] != BASELINE
                        else None,
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
            if control:
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
