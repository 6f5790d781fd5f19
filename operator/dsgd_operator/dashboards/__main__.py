"""`python -m dsgd_operator.dashboards [--check] [--output-dir DIR]`: write or check the JSON.

Writes helm/dsgd/dashboards/<name>.json for every dashboard this package builds.
With --check it writes nothing and exits 1, naming each file that is missing,
stale or not built here (`make dashboards` regenerates them).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from dsgd_operator.dashboards import operator_board, parameter_servers, training
from dsgd_operator.dashboards.panels import Board

#: File stem (the ConfigMap key is `dsgd-<stem>.json`) → the dashboard.
BOARDS = {
    "training": training.board,
    "operator": operator_board.board,
    "parameter-servers": parameter_servers.board,
}
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "helm" / "dsgd" / "dashboards"


def render(board: Board) -> str:
    """The dashboard's JSON model as committed: stable key order, two-space indent."""
    return json.dumps(board.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"{stem}.json": render(build()) for stem, build in BOARDS.items()}


def check(directory: Path) -> list[str]:
    """One line per file of `directory` that differs from what is built here."""
    wanted = rendered()
    problems = []
    for name, text in wanted.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text() != text:
            problems.append(f"{path}: stale, not what dsgd_operator.dashboards builds")
    for path in sorted(directory.glob("*.json")):
        if path.name not in wanted:
            problems.append(f"{path}: not built by dsgd_operator.dashboards")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsgd_operator.dashboards")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file differs"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.output_dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("regenerate them: make dashboards", file=sys.stderr)
        return 1 if problems else 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (args.output_dir / name).write_text(text)
        print(args.output_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
