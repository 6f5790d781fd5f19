"""What every scaled benchmark's `main()` shares: the command line, the results' header,
and how results are written (JSON, Markdown report, the results index)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from machine import describe_machine, load_average
from report import write_index, write_json

SCALE_NAMES = ("quick", "full", "smoke")


def scale_parser(doc: str | None, default_out: Path, runs_jobs: bool) -> argparse.ArgumentParser:
    """--full | --smoke (default: quick), --out; with `runs_jobs`, also --work and --echo."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the full benchmark")
    size.add_argument("--smoke", action="store_true", help="a seconds-long check (CI)")
    parser.add_argument("--out", type=Path, default=default_out, help="results directory")
    if runs_jobs:
        parser.add_argument("--work", type=Path, help="run directories (default: a temporary one)")
        parser.add_argument("--echo", action="store_true", help="show the trainers' output")
    return parser


def scale_name(args: argparse.Namespace) -> str:
    return "full" if args.full else "smoke" if args.smoke else "quick"


def results_header(benchmark: str, scale: str, **fields: Any) -> dict[str, Any]:
    """The first keys of every results file: what ran, at which scale, on which machine."""
    return {"benchmark": benchmark, "scale": scale, "machine": describe_machine(), **fields}


def write_results(
    results: dict[str, Any], out: Path, write_report: Callable[[dict[str, Any], Path], list[Path]]
) -> list[Path]:
    """Record the load at the end, write `<benchmark>-<scale>.json`, the report and the index."""
    results["machine"]["load_average_at_end"] = load_average()
    json_path = out / f"{results['benchmark']}-{results['scale']}.json"
    write_json(json_path, results)
    written = [json_path, *write_report(results, out)]
    write_index(out)
    print(f"[{results['benchmark']}] wrote {', '.join(str(path) for path in written)}")
    return written
