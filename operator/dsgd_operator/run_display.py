"""The terminal side of `dsgd run`: node-prefixed logs, progress, the summary.

Progress comes from node 0's Prometheus endpoint (the same numbers the
operator puts in `status.progress`), so the display needs no side channel
into the trainer. On a terminal it is a live bar; anywhere else (a CI log,
`| tee`, a cluster's log collector), where a bar cannot redraw itself, it is
a plain line at a steady interval (see `dsgd_operator.plain_progress`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Table
from rich.text import Text

from dsgd_operator.api import DistributedSGDJob
from dsgd_operator.api_status import Progress
from dsgd_operator.local_gang import LocalGang, LocalProcess
from dsgd_operator.local_run import (
    check_local_gpus,
    fixed_metrics_ports,
    member_label,
    prepare_run_directory,
    run_gang,
)
from dsgd_operator.plain_progress import PlainProgress, describe
from dsgd_operator.trainer_progress import scrape_progress

NODE_STYLES = ["cyan", "magenta", "green", "yellow", "blue", "red"]


class LiveBar:
    """The terminal's progress: a rich bar redrawn in place, with `describe`'s figures."""

    def __init__(self, console: Console, total_epochs: int) -> None:
        self.console = console
        self._bar = RichProgress(
            TextColumn("[bold]epoch[/] {task.completed:.2f}/{task.total:g}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("starting", total=total_epochs)

    def update(self, progress: Progress) -> None:
        self._bar.update(self._task, completed=progress.epoch, description=describe(progress))

    @contextmanager
    def shown(self) -> Iterator[None]:
        with self._bar:
            yield


def progress_view(console: Console, total_epochs: int) -> LiveBar | PlainProgress:
    """A live bar when `console` writes to a terminal that can redraw, else plain lines.

    Both must hold: the file is a tty (FORCE_COLOR or TTY_COMPATIBLE, which some CI
    set-ups export for colour, must not bring cursor movements into a log), and rich
    finds it interactive (not a dumb terminal; TTY_INTERACTIVE=0 forces plain lines).
    """
    isatty = getattr(console.file, "isatty", None)
    if isatty is not None and isatty() and console.is_interactive:
        return LiveBar(console, total_epochs)
    return PlainProgress(console, total_epochs)


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
    job: DistributedSGDJob,
    out_dir: Path,
    metrics_port: int | None = None,
    quiet: bool = False,
    console: Console | None = None,
) -> int:
    """Run the job locally, showing logs and progress on `console` (default: stdout).

    Returns the process exit code. Raises LocalRunError, before anything starts,
    when this machine lacks the GPUs of a GPU job, `out_dir` cannot hold the run
    or a fixed `metrics_port` range is not free.
    """
    check_local_gpus(job)
    if metrics_port:
        fixed_metrics_ports(metrics_port, job.spec.topology.gang_members)
    prepare_run_directory(job, out_dir)
    console = console or Console(highlight=False)
    topology = job.spec.topology
    console.print(
        f"[bold]{job.name}[/]: {job.spec.algorithm.name} on {topology.nodes} node(s) × "
        f"{topology.processes_per_node} process(es), {job.spec.training.model} on "
        f"{job.spec.training.dataset.name}, {job.spec.training.epochs} epoch(s) → {out_dir}",
        soft_wrap=True,  # off a terminal the width is a guess: never break a line (or a path)
    )
    view = progress_view(console, job.spec.training.epochs)
    announced = False

    def log(node_rank: int, line: str) -> None:
        if not quiet:
            style = NODE_STYLES[node_rank % len(NODE_STYLES)]
            # soft_wrap: a long log line stays one line in a file or a pipe.
            view.console.print(
                Text(f"[{member_label(topology.nodes, node_rank)}] ", style=style) + Text(line),
                soft_wrap=True,
            )

    def tick(gang: LocalGang, processes: list[LocalProcess]) -> None:
        nonlocal announced
        if not announced:
            urls = ", ".join(
                f"{member_label(topology.nodes, p.node_rank)}: "
                f"http://127.0.0.1:{p.metrics_port}/metrics"
                for p in processes
            )
            view.console.print(f"Prometheus metrics: {urls}", soft_wrap=True)
            announced = True
        progress = scrape_progress(f"http://127.0.0.1:{processes[0].metrics_port}/metrics")
        if progress is not None and progress.epoch is not None:
            view.update(progress)

    with view.shown():
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
