"""What every scaled benchmark's `main()` shares: the command line, the results' header,
a work directory, the one-line failures, and how results are written (JSON, Markdown
report, the results index).

A benchmark is `benchmark_main(NAME, __doc__, argv, run, write_report, ...)`: `run`
measures (given the arguments, the size and a work directory) and returns its results'
fields; `write_report` lays them out. A size is `--smoke`, quick (the default) or
`--full`; an experiment benchmark also takes `--manifest FILE` (then the size is the
file's name, and the file runs as written).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from job_runner import exit_on_termination
from machine import describe_machine, load_average
from report import DEFAULT_OUT, write_index, write_json

SCALE_NAMES = ("quick", "full", "smoke")

#: `run(args, scale, work)`: the results' fields beyond the header.
Run = Callable[[argparse.Namespace, str, Path], dict[str, Any]]
WriteReport = Callable[[dict[str, Any], Path], list[Path]]


class BenchmarkFailed(RuntimeError):
    """A run of the benchmark failed (exit 1); the message says which and why."""


class BenchmarkUnavailable(RuntimeError):
    """The benchmark cannot run here or with this input (exit 2); the message says why."""


def scale_parser(
    doc: str | None, default_out: Path, runs_jobs: bool, experiment: bool = False
) -> argparse.ArgumentParser:
    """--full | --smoke (default: quick), --out; with `runs_jobs`, also --work and --echo;
    with `experiment`, also --manifest (instead of a size)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the full benchmark")
    size.add_argument("--smoke", action="store_true", help="a seconds-long check (CI)")
    if experiment:
        size.add_argument(
            "--manifest",
            type=Path,
            metavar="FILE",
            help="run this SGDExperiment, as written, in the benchmark's environment",
        )
    parser.add_argument("--out", type=Path, default=default_out, help="results directory")
    if runs_jobs:
        parser.add_argument("--work", type=Path, help="run directories (default: a temporary one)")
        parser.add_argument("--echo", action="store_true", help="show the trainers' output")
    return parser


def scale_name(args: argparse.Namespace) -> str:
    """The size asked for; with --manifest, the manifest file's name (e.g. `my-study`)."""
    if getattr(args, "manifest", None) is not None:
        return args.manifest.stem
    return "full" if args.full else "smoke" if args.smoke else "quick"


def results_header(benchmark: str, scale: str, **fields: Any) -> dict[str, Any]:
    """The first keys of every results file: what ran, at which scale, on which machine."""
    return {"benchmark": benchmark, "scale": scale, "machine": describe_machine(), **fields}


def write_results(results: dict[str, Any], out: Path, write_report: WriteReport) -> list[Path]:
    """Record the load at the end, write `<benchmark>-<scale>.json`, the report and the index."""
    results["machine"]["load_average_at_end"] = load_average()
    json_path = out / f"{results['benchmark']}-{results['scale']}.json"
    write_json(json_path, results)
    written = [json_path, *write_report(results, out)]
    write_index(out)
    print(f"[{results['benchmark']}] wrote {', '.join(str(path) for path in written)}")
    return written


def benchmark_main(
    name: str,
    doc: str | None,
    argv: list[str] | None,
    run: Run,
    write_report: WriteReport,
    *,
    runs_jobs: bool,
    experiment: bool = False,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse the command line, run, write the results: 0, or 1 (a run failed) or 2 (cannot
    run here), each with one line on stderr. SIGTERM/SIGHUP stop the runs started."""
    parser = scale_parser(doc, DEFAULT_OUT, runs_jobs, experiment)
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    exit_on_termination()
    scale = scale_name(args)
    results = results_header(name, scale)
    with tempfile.TemporaryDirectory(prefix=f"dsgdbench-{name}-") as temporary:
        work = getattr(args, "work", None) or Path(temporary)
        try:
            results.update(run(args, scale, work))
        except BenchmarkUnavailable as error:
            print(f"[{name}] {error}", file=sys.stderr)
            return 2
        except BenchmarkFailed as error:
            print(f"[{name}] failed: {error}", file=sys.stderr)
            return 1
    write_results(results, args.out, write_report)
    return 0
