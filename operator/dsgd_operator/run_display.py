"""The terminal side of `dsgd run`: node-prefixed logs, a live progress bar, the summary.

Progress comes from node 0's Prometheus endpoint (the same numbers the
operator puts in `status.progress`), so the display needs no side channel
into the trainer.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.local_run import (
    LocalGang,
    LocalProcess,
    fixed_metrics_ports,
    prepare_run_directory,
    run_gang,
)
from dsgd_operator.progress import scrape_progress

NODE_STYLES = ["cyan", "magenta", "green", "yellow", "blue", "red"]


def _describe(progress) -> str:  # type: ignore[no-untyped-def]
    parts = []
    if progress.step is not None:
        parts.append(f"step {progress.step}")
    if progress.train_loss is not None:
        parts.append(f"loss {progress.train_loss:.4f}")
    if progress.test_accuracy is not None:
        parts.append(f"test acc {progress.test_accuracy:.2%}")
    if progress.samples_per_second is not None:
        parts.append(f"{progress.samples_per_second:,.0f} samples/s/rank")
    return "  ".join(parts)


def summary_table(summary: dict) -> Table:
    """summary.json as a two-column table."""
    table = Table(title="summary.json", show_header=False)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(key, str(value))
    return table


def run_with_display(
    job: DistributedSGDJob, out_dir: Path, metrics_port: int | None = None, quiet: bool = False
) -> int:
    """Run the job locally with a live display; returns the process exit code.

    Raises LocalRunError, before anything starts, when `out_dir` cannot hold the run
    or a fixed `metrics_port` range is not free.
    """
    if metrics_port:
        fixed_metrics_ports(metrics_port, job.spec.topology.nodes)
    prepare_run_directory(job, out_dir)
    console = Console(highlight=False)
    topology = job.spec.topology
    console.print(
        f"[bold]{job.name}[/]: {job.spec.algorithm.name} on {topology.nodes} node(s) × "
        f"{topology.processes_per_node} process(es), {job.spec.training.model} on "
        f"{job.spec.training.dataset.name}, {job.spec.training.epochs} epoch(s) → {out_dir}"
    )
    bar = Progress(
        TextColumn("[bold]epoch[/] {task.completed:.2f}/{task.total:g}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=False,
    )
    task = bar.add_task("starting", total=job.spec.training.epochs)
    announced = False

    def log(node_rank: int, line: str) -> None:
        if not quiet:
            style = NODE_STYLES[node_rank % len(NODE_STYLES)]
            # soft_wrap: a long log line stays one line in a file or a pipe.
            bar.console.print(
                Text(f"[node-{node_rank}] ", style=style) + Text(line), soft_wrap=True
            )

    def tick(gang: LocalGang, processes: list[LocalProcess]) -> None:
        nonlocal announced
        if not announced:
            urls = ", ".join(
                f"node-{p.node_rank}: http://127.0.0.1:{p.metrics_port}/metrics" for p in processes
            )
            bar.console.print(f"Prometheus metrics: {urls}")
            announced = True
        progress = scrape_progress(f"http://127.0.0.1:{processes[0].metrics_port}/metrics")
        if progress is not None and progress.epoch is not None:
            bar.update(task, completed=progress.epoch, description=_describe(progress))

    with bar:
        result = run_gang(job, out_dir, log=log, on_tick=tick, metrics_port=metrics_port)
    if result.interrupted:
        console.print("[yellow]interrupted: every process stopped[/]")
        return result.exit_code
    if result.failed_node is not None:
        console.print(
            f"[red]node-{result.failed_node} failed with exit code {result.exit_code}; "
            "the gang was stopped[/]"
        )
        return result.exit_code
    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        console.print(summary_table(json.loads(summary_path.read_text())))
    console.print(f"results: {out_dir}/metrics.jsonl, {summary_path}")
    return 0
