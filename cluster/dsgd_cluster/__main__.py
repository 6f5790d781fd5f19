"""`python -m dsgd_cluster up|down|status|build|monitoring [--dir .cluster]` (`make cluster`).

`monitoring` adds the Prometheus Operator and a Prometheus it configures to a running
cluster (dsgd_cluster.monitoring); `down` stops them with the rest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsgd_cluster.control_plane import ClusterError, build_binaries, down, status, up
from dsgd_cluster.daemons import running_pid
from dsgd_cluster.monitoring import COMPONENTS as MONITORING
from dsgd_cluster.monitoring import up_monitoring


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsgd_cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build", "monitoring"])
    parser.add_argument("--dir", type=Path, default=Path(".cluster"), help="cluster directory")
    parser.add_argument("--nodes", type=int, default=4, help="Nodes the node agent registers")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="nvidia.com/gpu capacity")
    parser.add_argument(
        "--scrape-interval", default="30s", help="monitoring: Prometheus' default interval"
    )
    parser.add_argument("--scrape-timeout", default="10s", help="monitoring: at most the interval")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build_binaries())
        elif args.command == "up":
            info = up(args.dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
            print(f"cluster up at {info.server}; export KUBECONFIG={info.kubeconfig}")
            print(f"kubectl and helm: {info.binaries}")
        elif args.command == "monitoring":
            info = up(args.dir, nodes=args.nodes, gpus_per_node=args.gpus_per_node)
            monitoring = up_monitoring(info, args.scrape_interval, args.scrape_timeout)
            print(f"Prometheus at {monitoring.prometheus_url}")
            print("configured by the Prometheus Operator from every namespace's monitors and rules")
        elif args.command == "down":
            stopped = down(args.dir)
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        else:
            monitoring = {name: running_pid(args.dir, name) for name in MONITORING}
            for name, pid in {**status(args.dir), **monitoring}.items():
                print(f"{name:<24} {'pid ' + str(pid) if pid else 'not running'}")
    except ClusterError as error:
        print(f"dsgd_cluster: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
