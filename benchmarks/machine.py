"""What a benchmark ran on: quoted next to every figure, since timings mean nothing without it."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    """The 1/5/15-minute load averages: a busy machine slows every timing down."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def describe_machine() -> dict[str, object]:
    """CPU, cores, memory, kernel, Python/torch versions, load and time of the run."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gib: float | None = round(pages * page_size / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": load_average(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def machine_line(machine: dict[str, object]) -> str:
    """One line for a markdown report."""
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}, torch {machine['torch']}; "
        f"load average at start {machine['load_average_at_start']}; {machine['started']}"
    )
