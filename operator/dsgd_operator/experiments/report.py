"""`dsgd report DIR`: an experiment's comparison as report.md, report.html and PNG figures.

The numbers come from `dsgd_operator.experiments.aggregate` (per cell, over
seeds); this module only lays them out. report.html is self-contained (figures
inlined as data: URIs) so it can be mailed or attached as it is. Figures need
matplotlib (`pip install 'dsgd[bench]'`); without it the tables are written and
the report says so.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from dsgd_operator.experiments.aggregate import (
    CellResult,
    Stat,
    comparisons,
    load_cells,
    mean_curve,
)

#: The figures: file name → (record key on the x axis, axis label, divisor for display).
FIGURES = {
    "accuracy-vs-epochs.png": ("epoch", "epochs", 1.0),
    "accuracy-vs-time.png": ("wall_seconds", "wall time, s", 1.0),
    "accuracy-vs-bytes.png": ("communicated_bytes", "MB sent per rank", 1e6),
}

HEADER = [
    "Cell",
    "Axis values",
    "n",
    "Final test accuracy",
    "Final train accuracy",
    "Generalization gap, points",
    "Time to target, s",
    "Samples to target",
    "MB to target",
    "MB sent per rank",
    "Sync rounds (global)",
    "Wall time, s",
]


def pm(stat: Stat, scale: float = 1.0, digits: int = 2) -> str:
    """`mean ± std` (`mean` alone for one seed, `—` for none) of `stat` × `scale`."""
    if stat.mean is None:
        return "—"
    shown = f"{stat.mean * scale:,.{digits}f}"
    return shown if stat.std is None else f"{shown} ± {stat.std * scale:,.{digits}f}"


def percent_pm(stat: Stat) -> str:
    """An accuracy's `mean ± std%` in percent (`—` for no seed)."""
    return pm(stat, 100) + ("%" if stat.mean is not None else "")


def target_cell(cell: CellResult, target: float | None, key: str, scale: float, digits: int) -> str:
    stat, reached = cell.to_target(target, key)
    if target is None:
        return "—"
    if reached == 0:
        return "not reached"
    shown = pm(stat, scale, digits)
    return shown if reached == cell.n else f"{shown} ({reached}/{cell.n} seeds)"


def table_rows(cells: list[CellResult], target: float | None) -> list[list[str]]:
    """One row per cell, in HEADER's order (accuracy in percent, bytes in MB)."""
    rows = []
    for cell in cells:
        rows.append(
            [
                cell.id,
                cell.description or "(template)",
                str(cell.n),
                percent_pm(cell.summary_stat("final_test_accuracy")),
                percent_pm(cell.summary_stat("final_train_accuracy")),
                pm(cell.generalization_gap(), 100),
                target_cell(cell, target, "wall_seconds", 1.0, 1),
                target_cell(cell, target, "samples", 1.0, 0),
                target_cell(cell, target, "communicated_bytes", 1e-6, 1),
                pm(cell.summary_stat("communicated_bytes"), 1e-6, 1),
                pm(cell.sync_rounds("global"), 1.0, 1),
                pm(cell.summary_stat("wall_seconds"), 1.0, 1),
            ]
        )
    return rows


def plot(cells: list[CellResult], x_key: str, label: str, divisor: float, path: Path) -> None:
    """Test accuracy against `x_key`: one line per cell (mean over seeds), a ±std band."""
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for cell in cells:
        xs, ys, stds = mean_curve(cell.trials, x_key)
        if not xs:
            continue
        xs = [x / divisor for x in xs]
        ys = [100 * y for y in ys]
        (line,) = axes.plot(
            xs, ys, marker="o", markersize=3, label=f"{cell.id}: {cell.description}"
        )
        if all(s is not None for s in stds):
            low = [y - 100 * s for y, s in zip(ys, stds, strict=True)]
            high = [y + 100 * s for y, s in zip(ys, stds, strict=True)]
            axes.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel(label)
    axes.set_ylabel("test accuracy, % (mean ± std over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_figures(cells: list[CellResult], out_dir: Path) -> list[Path] | str:
    """The PNG figures, or why there are none."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "figures need matplotlib: pip install 'dsgd[bench]'"
    if not any(cell.trials for cell in cells):
        return "no finished trial: no figure"
    paths = []
    for name, (x_key, label, divisor) in FIGURES.items():
        plot(cells, x_key, label, divisor, out_dir / name)
        paths.append(out_dir / name)
    return paths


def markdown(
    title: str, intro: list[str], rows: list[list[str]], notes: list[str], figures: list[Path] | str
) -> str:
    lines = [f"# {title}", "", *intro, ""]
    lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    lines += ["", "## Comparison", "", *[f"- {note}" for note in notes], "", "## Figures", ""]
    if isinstance(figures, str):
        lines.append(figures)
    else:
        lines += [f"![{path.stem}]({path.name})" for path in figures]
    return "\n".join(lines) + "\n"


def html_page(
    title: str, intro: list[str], rows: list[list[str]], notes: list[str], figures: list[Path] | str
) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    if isinstance(figures, str):
        images = f"<p>{esc(figures)}</p>"
    else:
        images = "".join(
            f'<img alt="{esc(p.stem)}" src="data:image/png;base64,'
            f'{base64.b64encode(p.read_bytes()).decode()}">'
            for p in figures
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em}"
        "td{text-align:right}td:nth-child(2){text-align:left}img{max-width:48%;margin:.5em}"
        "</style></head><body>"
        f"<h1>{esc(title)}</h1>{''.join(f'<p>{esc(p)}</p>' for p in intro)}"
        f"<table><tr>{head}</tr>{body}</table><h2>Comparison</h2>"
        f"<ul>{''.join(f'<li>{esc(n)}</li>' for n in notes)}</ul>"
        f"<h2>Figures</h2>{images}</body></html>\n"
    )


def write_report(directory: Path, out_dir: Path | None = None) -> list[Path]:
    """Write report.md, report.html and the figures for the experiment in `directory`.

    Returns the files written. Raises ReportError when `directory` holds no experiment.
    """
    index, cells = load_cells(directory)
    return render_report(index, cells, out_dir or directory)


def render_report(index: dict, cells: list[CellResult], out_dir: Path) -> list[Path]:
    """Write the report of `cells` (the experiment's `index`: name, trials, targetAccuracy)
    into `out_dir`, from a local directory or a cluster (`trial_results.report_cells`)."""
    target = index.get("targetAccuracy")
    unfinished = [name for cell in cells for name in cell.unfinished]
    intro = [
        f"Experiment {index['name']}: {len(cells)} cell(s), "
        f"{len(index['trials']) - len(unfinished)} of {len(index['trials'])} trials finished. "
        "Figures are mean ± sample standard deviation over seeds (n per row).",
        "Final train accuracy: over the training batches since the last evaluation; "
        "generalization gap: final train − final test accuracy per seed, in points.",
        "Target accuracy: " + (f"{100 * target:.2f}%" if target else "none (spec.targetAccuracy)"),
    ]
    if unfinished:
        intro.append(f"Not finished (left out): {', '.join(unfinished)}.")
    rows = table_rows(cells, target)
    notes = comparisons(cells)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(cells, out_dir)
    title = f"{index['name']}: comparison"
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(markdown(title, intro, rows, notes, figures))
    html_path.write_text(html_page(title, intro, rows, notes, figures))
    return [md_path, html_path, *([] if isinstance(figures, str) else figures)]
