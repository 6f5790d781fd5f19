"""Where benchmark results go and how they are written: JSON, markdown tables, the index.

Every benchmark writes `<name>-<scale>.json` (all numbers, every curve),
`<name>-<scale>.md` (the tables) and PNG figures into one output directory,
`docs/benchmarks/` by default, and refreshes `docs/benchmarks/README.md`, an
index of whatever results are there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "benchmarks"
INDEX = "README.md"
#: Hand-kept notes on the results (e.g. which are older than the code), put in the index.
NOTES = "NOTES.md"

#: The benchmarks and one line on what each shows (the index lists them in this order).
BENCHMARKS = {
    "time_to_accuracy": "time to a target accuracy on bandwidth-limited links (netns + tbf)",
    "paper_findings": "Lin et al.: post-local SGD vs large-batch mini-batch SGD, 3 seeds",
    "overhead": "per-step overhead of our algorithms against a plain PyTorch DDP loop",
}
#: Results kept by hand in one page (the operator benchmark prints; its page is written up).
HAND_WRITTEN = {
    "operator.md": "Operator: jobs to pods on the real control plane, against a bare client "
    "(`benchmarks/operator_bench.py`)",
}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed, None shows as an em dash."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join("—" if cell is None else str(cell) for cell in row) + " |")
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str | None:
    """`value` rounded for a table (None stays None, shown as an em dash)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return f"{value:,.{digits}f}{suffix}"


def percent(accuracy: float | None, digits: int = 2) -> str | None:
    return None if accuracy is None else f"{100 * accuracy:.{digits}f}%"


def megabytes(nbytes: float | None) -> str | None:
    return None if nbytes is None else f"{nbytes / 1e6:,.1f}"


def write_index(out_dir: Path) -> Path:
    """(Re)write the index of the results present in `out_dir`; returns its path."""
    lines = [
        "# Benchmark results",
        "",
        "Written by the scripts in `benchmarks/` (`make bench` runs the quick versions, "
        "`make bench FULL=1` the full ones). Each result names the machine it ran on.",
        "",
    ]
    notes = out_dir / NOTES
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    for name, what in BENCHMARKS.items():
        found = sorted(out_dir.glob(f"{name}-*.md"))
        if not found:
            continue
        lines.append(f"## {name.replace('_', ' ').capitalize()}: {what}")
        lines.append("")
        for report in found:
            scale = report.stem.removeprefix(f"{name}-")
            figures = sorted(out_dir.glob(f"{name}-{scale}*.png"))
            links = ", ".join(f"[{png.name}]({png.name})" for png in figures)
            lines.append(
                f"- {scale}: [{report.name}]({report.name}), [{report.stem}.json]"
                f"({report.stem}.json)" + (f"; figures {links}" if links else "")
            )
        lines.append("")
    for page, what in HAND_WRITTEN.items():
        if (out_dir / page).exists():
            lines += [f"## {what}", "", f"- [{page}]({page})", ""]
    path = out_dir / INDEX
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
