"""`python -m dsgd_cluster.node_agent --kubeconfig K --workdir D [--nodes N]`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from kubernetes import client, config

from dsgd_cluster import pod_network
from dsgd_cluster.node_agent.agent import NodeAgent
from dsgd_cluster.node_agent.container import AgentContext
from dsgd_cluster.node_agent.nodes import node_names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsgd_cluster.node_agent", description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--server", required=True, help="API server URL the pods are given")
    parser.add_argument("--ca-file", type=Path, required=True, help="the cluster's CA certificate")
    parser.add_argument("--workdir", type=Path, required=True, help="where pods' files and logs go")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--node-prefix", default="dsgd-node")
    parser.add_argument(
        "--pod-network", type=ipaddress.IPv4Network, default=pod_network.LOOPBACK,
        help="pod IPs come from here; every address must be local (dsgd_cluster.pod_network)",
    )  # fmt: skip
    parser.add_argument(
        "--no-run", action="store_true", help="report pods Running without running them"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    api = config.new_client_from_config(config_file=str(args.kubeconfig))
    ctx = AgentContext(client.CoreV1Api(api), args.workdir.resolve(), args.server, args.ca_file)
    agent = NodeAgent(
        api,
        ctx,
        node_names(args.nodes, args.node_prefix),
        args.gpus_per_node,
        not args.no_run,
        args.pod_network,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
