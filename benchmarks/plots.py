"""Figures of the benchmarks: test accuracy against wall time, bytes sent and samples seen.

matplotlib (the `bench` extra) with the Agg backend: files only, no display needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

#: x axes the figures can use: record key → (axis label, scale, divisor for display).
AXES: dict[str, tuple[str, str, float]] = {
    "train_seconds": ("training time, s (evaluation excluded)", "linear", 1.0),
    "wall_seconds": ("wall time, s", "linear", 1.0),
    "communicated_bytes": ("MB sent per rank (log)", "log", 1e6),
    "samples": ("training samples (all ranks)", "linear", 1.0),
}


@dataclass(frozen=True)
class Series:
    """One curve: test accuracy `y` at points whose x values per axis key are in `x`.

    `low`/`high`, when given, shade a band around the curve (e.g. min/max over seeds).
    """

    label: str
    x: dict[str, Sequence[float]]
    y: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    dashed: bool = False  # e.g. a reference that is not a contender


def plot_accuracy(
    series: Sequence[Series],
    path: Path,
    title: str,
    axes: Sequence[str] = ("train_seconds", "communicated_bytes", "samples"),
    target: float | None = None,
) -> Path:
    """One row of panels, test accuracy against each of `axes`; writes a PNG to `path`.

    On the log-scale bytes axis, curves that never communicate (all zero) are left out.
    """
    figure, panels = plt.subplots(1, len(axes), figsize=(5.2 * len(axes), 4.2), squeeze=False)
    for panel, axis in zip(panels[0], axes, strict=True):
        label, scale, divisor = AXES[axis]
        for index, curve in enumerate(series):
            xs = [value / divisor for value in curve.x[axis]]
            points = [(x, y) for x, y in zip(xs, curve.y, strict=True) if scale != "log" or x > 0]
            if not points:
                continue
            color = f"C{index % 10}"
            panel.plot(
                *zip(*points, strict=True),
                marker="o",
                markersize=3,
                label=curve.label,
                color=color,
                linestyle="--" if curve.dashed else "-",
            )
            if curve.low is not None and curve.high is not None:
                kept = [
                    (x, lo, hi)
                    for x, lo, hi in zip(xs, curve.low, curve.high, strict=True)
                    if scale != "log" or x > 0
                ]
                band_x, band_low, band_high = zip(*kept, strict=True)
                panel.fill_between(band_x, band_low, band_high, color=color, alpha=0.18)
        if target is not None:
            panel.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
        panel.set_xscale(scale)
        if scale == "log":
            panel.xaxis.set_minor_formatter(NullFormatter())  # labels on decades only
        panel.set_xlabel(label)
        panel.set_ylabel("test accuracy")
        panel.grid(True, alpha=0.3)
    panels[0][0].legend(fontsize=8, loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_bars(
    labels: Sequence[str],
    groups: dict[str, Sequence[float | None]],
    path: Path,
    title: str,
    ylabel: str,
) -> Path:
    """Grouped bars: one group per label, one bar per key of `groups` (None: no bar)."""
    figure, panel = plt.subplots(figsize=(max(6.0, 1.3 * len(labels) + 2), 4.2))
    width = 0.8 / max(1, len(groups))
    for index, (name, values) in enumerate(groups.items()):
        positions = [i + (index - (len(groups) - 1) / 2) * width for i in range(len(labels))]
        heights = [0.0 if value is None else value for value in values]
        bars = panel.bar(positions, heights, width, label=name)
        for bar, value in zip(bars, values, strict=True):
            if value is None:
                panel.annotate(
                    "n/a",
                    (bar.get_x() + bar.get_width() / 2, 0),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    panel.set_xticks(range(len(labels)))
    panel.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    panel.set_ylabel(ylabel)
    panel.grid(True, axis="y", alpha=0.3)
    panel.legend(fontsize=8)
    panel.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
