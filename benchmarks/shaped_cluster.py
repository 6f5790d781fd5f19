"""NetnsCluster: a bandwidth-limited cluster on one machine, one network namespace per node.

    with NetnsCluster(nodes=2, rate="50mbit") as cluster:
        subprocess.run(cluster.exec_argv(0, ["python", ...]))

The namespaces, links and shaping are netns_links.py's. A node stands for one pod:
a torchrun node of a job, or one of a downpour-sgd job's parameter servers (gang
member nodes + i sits in node namespace nodes + i; `ensure_nodes` adds namespaces
when a job has more members than the cluster has nodes). `isolated_argv` also
gives the process a PID namespace of its own, as a pod has: torch.distributed.rpc's
TensorPipe otherwise sees its peers as processes of the same machine and moves
tensors through shared memory and cross-memory attach (its shm transport and cma
channel), around the shaped links.

Teardown (`down`) is idempotent: it stops every process still inside the
namespaces, then deletes them; the context manager runs it on exceptions, Ctrl-C
and SIGTERM (and at interpreter exit as a backstop). Only SIGKILL escapes it:
then run `netns_cluster.py down`.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType

from netns_links import (
    DEFAULT_LATENCY,
    INTERFACE,
    MAX_NODES,
    PREFIX,
    SUBNET,
    ClusterError,
    add_hub,
    add_node_namespace,
    delete_namespaces,
    interface_bytes,
    list_namespaces,
    parse_rate,
    run_command,
    tbf_argv,
    tbf_burst_bytes,
)

#: The pod contract's variable for the parameter servers' RPC store host
#: (dsgd_contract.pod.PS_ADDR_ENV; not imported: this module needs no dsgd package).
PS_ADDR_ENV = "DSGD_PS_ADDR"
#: Each process its own PID namespace (and /proc), like a pod; killed with its `unshare`.
PID_NAMESPACE_ARGV = ("unshare", "--pid", "--fork", "--kill-child", "--mount-proc")


@dataclass(frozen=True)
class Node:
    """One node of the cluster: its namespace and its address on the cluster's /24."""

    index: int
    namespace: str
    address: str


class NetnsCluster:
    """`nodes` network namespaces joined by a bridge, each node's egress shaped to `rate`.

    Use as a context manager (`up` on entry, `down` on exit, on errors and on
    SIGTERM too), or call `up()` / `down()` yourself. `name` tells concurrent
    clusters apart (default: this process's id).
    """

    def __init__(
        self,
        nodes: int,
        rate: str,
        name: str | None = None,
        latency: str = DEFAULT_LATENCY,
    ) -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ClusterError(f"--nodes must be between 1 and {MAX_NODES}, got {nodes}")
        self.name = name or str(os.getpid())
        if not re.match(r"^[a-z0-9][a-z0-9-]{0,30}$", self.name):
            raise ClusterError(
                f"cluster name {self.name!r}: use 1-31 lower-case letters, digits and '-'"
            )
        self.rate = rate
        self.rate_bits = parse_rate(rate)
        self.latency = latency
        self.hub = f"{PREFIX}{self.name}-hub"
        self.nodes = [self._node(i) for i in range(nodes)]
        self._is_up = False
        self._previous_handlers: dict[int, object] = {}

    def _node(self, index: int) -> Node:
        return Node(index, f"{PREFIX}{self.name}-node{index}", f"{SUBNET}.{index + 1}")

    @property
    def namespaces(self) -> list[str]:
        return [self.hub, *(node.namespace for node in self.nodes)]

    @property
    def master_address(self) -> str:
        """Node 0's address: where torchrun's rendezvous store listens."""
        return self.nodes[0].address

    def up(self) -> None:
        """Create the namespaces, the bridge, the veth links, addresses and shaping.

        On any failure everything made so far is removed before the error propagates.
        """
        taken = set(self.namespaces) & set(list_namespaces())
        if taken:
            raise ClusterError(
                f"namespaces {sorted(taken)} exist already: another cluster named "
                f"{self.name!r} is up (or a crashed one: `netns_cluster.py down`)"
            )
        atexit.register(self.down)
        try:
            add_hub(self.hub)
            for node in self.nodes:
                add_node_namespace(self.hub, node.index, node.namespace, node.address)
            self._is_up = True
            self.set_rate(self.rate)
        except BaseException:
            self.down()
            raise

    def ensure_nodes(self, count: int) -> None:
        """At least `count` nodes: the missing ones joined and shaped like the others.

        For jobs with more gang members than the cluster has nodes (a downpour-sgd
        job's parameter servers). Existing nodes and their addresses do not change.
        """
        if count > MAX_NODES:
            raise ClusterError(f"{count} nodes: at most {MAX_NODES} fit the cluster's subnet")
        while len(self.nodes) < count:
            node = self._node(len(self.nodes))
            self.nodes.append(node)
            if self._is_up:
                add_node_namespace(self.hub, node.index, node.namespace, node.address)
                run_command(tbf_argv(node.namespace, INTERFACE, self.rate, self.latency))

    def set_rate(self, rate: str) -> None:
        """Shape every node's egress to `rate` (replaces the previous shaping)."""
        bits = parse_rate(rate)
        for node in self.nodes:
            run_command(tbf_argv(node.namespace, INTERFACE, rate, self.latency))
        self.rate, self.rate_bits = rate, bits

    def down(self) -> None:
        """Stop whatever still runs inside the namespaces and delete them (idempotent)."""
        delete_namespaces(self.namespaces)
        self._is_up = False
        atexit.unregister(self.down)

    def exec_argv(self, node: int, argv: Sequence[str]) -> list[str]:
        """`argv` run inside node `node`'s namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.nodes[node].namespace, *argv]

    def isolated_argv(self, node: int, argv: Sequence[str]) -> list[str]:
        """`argv` inside node `node`'s network namespace and a PID namespace of its own.

        What a process needs to reach the others only through the shaped links when
        it talks torch.distributed.rpc (see the module docstring); gloo needs no more
        than `exec_argv`. `argv` runs as the PID namespace's init: a SIGTERM reaches it
        only if it handles SIGTERM (torchrun does), else the SIGKILL that follows does;
        SIGKILLing the `unshare` in front of it kills it and everything it started.
        """
        return self.exec_argv(node, [*PID_NAMESPACE_ARGV, *argv])

    def wiring_env(self, parameter_server_node: int | None = None) -> dict[str, str]:
        """What any process of a job needs to reach the others through the shaped links.

        Rendezvous on node 0, gloo and TensorPipe bound to the shaped interface (ranks of
        one node still meet over its loopback), and, for a downpour-sgd job, the RPC
        store on `parameter_server_node` (parameter server 0).
        """
        env = {
            "PET_MASTER_ADDR": self.master_address,
            "GLOO_SOCKET_IFNAME": INTERFACE,
            "TP_SOCKET_IFNAME": INTERFACE,
        }
        if parameter_server_node is not None:
            env[PS_ADDR_ENV] = self.nodes[parameter_server_node].address
        return env

    def node_env(self, node: int, master_port: int = 29500) -> dict[str, str]:
        """What a node's trainer needs besides the pod env: torchrun's wiring, the interface."""
        return {
            "PET_NNODES": str(len(self.nodes)),
            "PET_NODE_RANK": str(node),
            "PET_MASTER_PORT": str(master_port),
            **self.wiring_env(),
        }

    def interface_bytes(self, node: int) -> tuple[int, int]:
        """(bytes sent, bytes received) through node `node`'s shaped link so far."""
        return interface_bytes(self.nodes[node].namespace)

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "rate": self.rate,
            "rate_bits_per_second": self.rate_bits,
            "tbf_burst_bytes": tbf_burst_bytes(self.rate_bits),
            "tbf_latency": self.latency,
            "hub": self.hub,
            "nodes": [{"namespace": n.namespace, "address": n.address} for n in self.nodes],
        }

    def __enter__(self) -> NetnsCluster:
        self._install_signal_handlers()
        try:
            self.up()
        except BaseException:
            self._restore_signal_handlers()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.down()
        finally:
            self._restore_signal_handlers()

    def _install_signal_handlers(self) -> None:
        """Turn SIGTERM/SIGHUP into SystemExit so that `with` blocks unwind and tear down."""
        if threading.current_thread() is not threading.main_thread():
            return

        def raise_exit(signum: int, _frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[sig] = signal.signal(sig, raise_exit)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()
