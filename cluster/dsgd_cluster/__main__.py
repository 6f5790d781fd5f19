"""`python -m dsgd_cluster up|down|status|build [--dir .cluster]` (`make cluster`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsgd_cluster.control_plane import ClusterError, build_binaries, down, status, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsgd_cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument("--dir", type=Path, default=Path(".cluster"), help="cluster directory")
    parser.add_argument("--nodes", type=int, default=4, help="Nodes the node agent registers")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="nvidia.com/gpu capacity")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build_binaries())
        elif args.command == "up":
            info = up(args.dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
            print(f"cluster up at {info.server}; export KUBECONFIG={info.kubeconfig}")
            print(f"kubectl and helm: {info.binaries}")
        elif args.command == "down":
            stopped = down(args.dir)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        else:
            for name, pid in status(args.dir).items():
                print(f"{name:<24} {'pid ' + str(pid) if pid else 'not running'}")
    except ClusterError as error:
        print(f"dsgd_cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
