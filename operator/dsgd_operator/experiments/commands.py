"""The `dsgd` commands of experiments: `experiment run`, `report`, and the policy check of
`dsgd validate` for experiment files (the rest of the CLI is dsgd_operator.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dsgd_operator.manifest import ManifestError


def cmd_experiment_run(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    from dsgd_operator.cli import EXIT_INVALID  # cli imports this module; so late
    from dsgd_operator.experiments.manifest import load_experiment

    try:
        experiment = load_experiment(args.file)
    except ManifestError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID
    if find_spec("torch") is None:
        print("dsgd experiment run needs the trainer: pip install 'dsgd[trainer]'", file=sys.stderr)
        return EXIT_INVALID
    from dsgd_operator.experiments.local import run_experiment
    from dsgd_operator.local_gang import interrupt_on_stop_signals
    from dsgd_operator.local_run import LocalRunError

    out_dir = Path(args.out) if args.out else Path("runs") / experiment.name
    interrupt_on_stop_signals()  # SIGTERM and SIGINT stop the gangs like Ctrl-C
    try:
        return run_experiment(experiment, out_dir, parallel=args.parallel)
    except LocalRunError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID


def cmd_report(args: argparse.Namespace) -> int:
    from dsgd_operator.cli import EXIT_INVALID
    from dsgd_operator.experiments.aggregate import ReportError
    from dsgd_operator.experiments.cluster_report import cluster_report, is_resource
    from dsgd_operator.experiments.report import write_report

    out = Path(args.out) if args.out else None
    try:
        if is_resource(args.dir):
            written = cluster_report(args.dir, args.namespace, out)
        else:
            written = write_report(Path(args.dir), out)
    except ReportError as error:
        print(f"dsgd report: {error}", file=sys.stderr)
        return EXIT_INVALID
    for path in written:
        print(f"wrote {path}")
    return 0


def add_experiment_commands(sub: Any) -> None:
    """Add `experiment run` and `report` to the `dsgd` subcommands `sub`."""
    experiment = sub.add_parser("experiment", help="run an SGDExperiment's trials locally")
    experiment_sub = experiment.add_subparsers(dest="experiment_command", required=True)
    experiment_run = experiment_sub.add_parser(
        "run", help="run every trial as local processes; re-run to continue"
    )
    experiment_run.add_argument("file", metavar="FILE")
    experiment_run.add_argument("--out", help="results directory (default: runs/<name>)")
    experiment_run.add_argument(
        "--parallel",
        type=int,
        choices=range(1, 65),
        metavar="N",
        help="trials at once (default: spec.parallelism)",
    )
    experiment_run.set_defaults(func=cmd_experiment_run)

    report = sub.add_parser(
        "report", help="an experiment directory's tables and figures (report.md, report.html)"
    )
    report.add_argument(
        "dir",
        metavar="DIR | sgdexperiment/NAME",
        help="the --out of `dsgd experiment run`, or an experiment on the current kube context",
    )
    report.add_argument(
        "--out", help="where the report goes (default: DIR; runs/NAME for an experiment)"
    )
    report.add_argument(
        "-n", "--namespace", help="the experiment's namespace (default: the context's)"
    )
    report.set_defaults(func=cmd_report)
