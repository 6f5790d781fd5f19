"""A bandwidth-limited cluster on one machine: one network namespace per node, shaped links.

    python benchmarks/netns_cluster.py up --nodes 2 --rate 50mbit [--name NAME]
    python benchmarks/netns_cluster.py run --nodes 2 --rate 50mbit -- CMD ARG...
    python benchmarks/netns_cluster.py measure --rate 50mbit      # check the shaping
    python benchmarks/netns_cluster.py list
    python benchmarks/netns_cluster.py down [--name NAME]         # no name: every dsgdbench-*

or, from Python (what the other benchmarks do)::

    with NetnsCluster(nodes=2, rate="50mbit") as cluster:
        subprocess.run(cluster.exec_argv(0, ["python", ...]))

Layout of a cluster named NAME with N nodes (needs root, or CAP_NET_ADMIN + CAP_SYS_ADMIN):

    namespace dsgdbench-NAME-hub      bridge br0, veth ends n0 .. n(N-1) attached to it
    namespace dsgdbench-NAME-node<i>  veth end eth0 with 10.213.0.<i+1>/24, lo up

Every node's egress (eth0) is shaped with `tc qdisc ... tbf rate R burst B latency L`
(token bucket; this kernel has no netem, so there is no added delay, only a rate).
A byte from node i to node j leaves through node i's eth0, so every flow between
two nodes is limited to R in each direction: a full-duplex link of rate R per
node. Ranks of the same node talk over that namespace's loopback, unshaped, as
processes of one machine would (shared memory / NVLink in the real thing).

Nothing is created in the caller's namespace: the veth pairs are made inside
the hub and moved straight into the node namespaces, and the addresses exist
only inside them, so the benchmark's traffic cannot leave the namespaces it
made. Names start with `dsgdbench-` so that `down` without a name finds
leftovers of a crashed run. Teardown (`NetnsCluster.down`) is idempotent: it
stops every process still inside the namespaces, then deletes them; the context
manager runs it on exceptions, Ctrl-C and SIGTERM (and at interpreter exit as a
backstop). Only SIGKILL escapes it: then run `down`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType

#: Every namespace this module creates starts with this; `down` with no name removes them all.
PREFIX = "dsgdbench-"
#: The node interface inside each node namespace (GLOO_SOCKET_IFNAME for the trainers).
INTERFACE = "eth0"
#: The private /24 of every cluster; it exists only inside the cluster's namespaces.
SUBNET = "10.213.0"
#: Queueing delay tbf allows before dropping: deep enough that TCP reaches the rate.
DEFAULT_LATENCY = "50ms"
#: Rates as `tc` writes them: a number and a unit (bit, kbit, mbit, gbit, tbit).
RATE_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|tbit)$", re.IGNORECASE)
RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12}
MAX_NODES = 250  # addresses .1 .. .250 of the /24
#: How long processes left inside a namespace get after SIGTERM before SIGKILL.
STOP_GRACE_SECONDS = 5.0


class ClusterError(RuntimeError):
    """A cluster cannot be made (bad arguments, no permission, a failing `ip`/`tc` command)."""


def parse_rate(rate: str) -> float:
    """`rate` ("50mbit", "1gbit", ...) in bits per second; ClusterError naming it otherwise."""
    match = RATE_PATTERN.match(rate.strip())
    if not match:
        raise ClusterError(
            f"link rate {rate!r} is not a tc rate: a number and one of "
            f"{', '.join(RATE_UNITS)} (e.g. 50mbit, 1gbit)"
        )
    bits = float(match.group(1)) * RATE_UNITS[match.group(2).lower()]
    if bits < 8_000:
        raise ClusterError(f"link rate {rate!r} is below 8kbit: too slow for a training job")
    return bits


def tbf_burst_bytes(rate_bits: float) -> int:
    """The token bucket size for `rate_bits`: 4 ms worth of data, at least 32 KiB.

    tbf needs at least rate / HZ bytes of burst to reach its rate (one timer
    tick's worth; HZ is at most 1000, so 4 ms covers HZ ≥ 250), and a burst
    much larger than that lets short messages through at memory speed, which
    would flatter small collectives.
    """
    return max(32 * 1024, int(rate_bits / 8 * 0.004))


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ClusterError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of the network namespaces starting with `prefix` (`ip netns list`)."""
    result = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(prefix))


def namespace_pids(namespace: str) -> list[int]:
    """Processes running inside `namespace` (`ip netns pids`)."""
    result = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def _signal_pids(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def delete_namespaces(names: Sequence[str]) -> list[str]:
    """Stop the processes inside `names` (SIGTERM, then SIGKILL) and delete them; idempotent.

    Only processes inside our own `dsgdbench-` namespaces are signalled: by
    construction they were started by a benchmark. Returns the names deleted.
    """
    names = [name for name in names if name.startswith(PREFIX)]
    existing = set(list_namespaces())
    names = [name for name in names if name in existing]
    pids = [pid for name in names for pid in namespace_pids(name)]
    if pids:
        _signal_pids(pids, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and any(namespace_pids(n) for n in names):
            time.sleep(0.1)
        _signal_pids([pid for name in names for pid in namespace_pids(name)], signal.SIGKILL)
    for name in names:
        # Deleting the hub first would also do: veth pairs die with either end.
        _run(["ip", "netns", "delete", name], check=False)
    return names


def cluster_namespaces(name: str) -> list[str]:
    """The existing namespaces of the cluster called `name` (not those of `name-other`)."""
    pattern = re.compile(rf"^{re.escape(PREFIX + name)}-(hub|node\d+)$")
    return [namespace for namespace in list_namespaces() if pattern.match(namespace)]


def remove_all() -> list[str]:
    """Delete every `dsgdbench-*` namespace (leftovers of crashed runs included)."""
    return delete_namespaces(list_namespaces())


def netns_unavailable_reason() -> str | None:
    """None if this process may create network namespaces and tbf qdiscs, else why not."""
    probe = f"{PREFIX}probe-{os.getpid()}"
    try:
        _run(["ip", "netns", "add", probe])
        _run(["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        _run(
            [
                "tc",
                "-n",
                probe,
                "qdisc",
                "replace",
                "dev",
                "p0",
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "32kb",
                "latency",
                "50ms",
            ]
        )
    except (ClusterError, OSError) as error:
        return f"cannot create network namespaces with tbf shaping here: {error}"
    finally:
        with contextlib.suppress(ClusterError, OSError):
            delete_namespaces([probe])
    return None


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
        self.nodes = [
            Node(i, f"{PREFIX}{self.name}-node{i}", f"{SUBNET}.{i + 1}") for i in range(nodes)
        ]
        self._previous_handlers: dict[int, object] = {}

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
            _run(["ip", "netns", "add", self.hub])
            _run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
            for node in self.nodes:
                self._add_node(node)
            self.set_rate(self.rate)
        except BaseException:
            self.down()
            raise

    def _add_node(self, node: Node) -> None:
        ns, port = node.namespace, f"n{node.index}"
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Made in the hub and moved straight into the node: nothing touches our namespace.
        _run(
            [
                "ip",
                "-n",
                self.hub,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                INTERFACE,
                "netns",
                ns,
            ]
        )
        _run(["ip", "-n", self.hub, "link", "set", port, "master", "br0"])
        _run(["ip", "-n", self.hub, "link", "set", port, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{node.address}/24", "dev", INTERFACE])
        _run(["ip", "-n", ns, "link", "set", INTERFACE, "up"])

    def set_rate(self, rate: str) -> None:
        """Shape every node's egress to `rate` (replaces the previous shaping)."""
        bits = parse_rate(rate)
        burst = tbf_burst_bytes(bits)
        for node in self.nodes:
            _run(
                [
                    "tc",
                    "-n",
                    node.namespace,
                    "qdisc",
                    "replace",
                    "dev",
                    INTERFACE,
                    "root",
                    "tbf",
                    "rate",
                    rate,
                    "burst",
                    str(burst),
                    "latency",
                    self.latency,
                ]
            )
        self.rate, self.rate_bits = rate, bits

    def down(self) -> None:
        """Stop whatever still runs inside the namespaces and delete them (idempotent)."""
        delete_namespaces(self.namespaces)
        atexit.unregister(self.down)

    def exec_argv(self, node: int, argv: Sequence[str]) -> list[str]:
        """`argv` run inside node `node`'s namespace (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.nodes[node].namespace, *argv]

    def node_env(self, node: int, master_port: int = 29500) -> dict[str, str]:
        """What a node's trainer needs besides the pod env: torchrun's wiring, gloo's interface."""
        return {
            "PET_NNODES": str(len(self.nodes)),
            "PET_NODE_RANK": str(node),
            "PET_MASTER_ADDR": self.master_address,
            "PET_MASTER_PORT": str(master_port),
            # gloo binds to this interface's address, so ranks of other nodes reach it
            # through the shaped link (and ranks of the same node over loopback).
            "GLOO_SOCKET_IFNAME": INTERFACE,
        }

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
        if not _in_main_thread():
            return

        def raise_exit(signum: int, _frame: FrameType | None) -> None:
            raise SystemExit(128 + signum)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._previous_handlers[sig] = signal.signal(sig, raise_exit)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


#: Receiver: counts bytes from the first one to EOF, prints {"bytes", "seconds"}.
_RECEIVER = """
import json, socket, sys, time
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
server.settimeout(30)
conn, _ = server.accept()
conn.settimeout(30)
total, start = 0, None
while chunk := conn.recv(1 << 20):
    start = start or time.perf_counter()
    total += len(chunk)
print(json.dumps({"bytes": total, "seconds": time.perf_counter() - (start or 0)}), flush=True)
"""
#: Sender: sends for argv[3] seconds or argv[4] bytes, whichever comes first.
_SENDER = """
import socket, sys, time
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
chunk, sent, end = b"x" * 65536, 0, time.perf_counter() + float(sys.argv[3])
while time.perf_counter() < end and sent < int(sys.argv[4]):
    conn.sendall(chunk)
    sent += len(chunk)
conn.close()
"""


def measure_throughput(
    cluster: NetnsCluster,
    source: int = 0,
    destination: int = 1,
    seconds: float = 2.0,
    port: int = 5201,
) -> float:
    """TCP goodput from node `source` to node `destination`, in bits per second.

    A Python sender inside the source namespace streams for `seconds` (at most
    what the link could carry in 4× that time); a receiver inside the
    destination namespace times the bytes from the first to the last. Goodput
    is payload only, so it reads a few percent below the tbf rate (which
    counts Ethernet/IP/TCP headers).
    """
    limit = int(cluster.rate_bits / 8 * seconds * 4) + 1
    receiver = subprocess.Popen(
        cluster.exec_argv(destination, [sys.executable, "-c", _RECEIVER, str(port)]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise ClusterError(f"throughput receiver did not start: {receiver.stderr.read()}")
        address = cluster.nodes[destination].address
        sender_argv = [sys.executable, "-c", _SENDER, address, str(port), str(seconds), str(limit)]
        _run(cluster.exec_argv(source, sender_argv))
        out, err = receiver.communicate(timeout=30)
        if receiver.returncode != 0:
            raise ClusterError(f"throughput receiver failed: {err.strip()}")
        result = json.loads(out.strip().splitlines()[-1])
        return result["bytes"] * 8 / result["seconds"]
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()


@contextlib.contextmanager
def _interrupt_as_exit() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _command_up(args: argparse.Namespace) -> int:
    cluster = NetnsCluster(args.nodes, args.rate, args.name)
    cluster.up()
    atexit.unregister(cluster.down)  # `up` leaves it running on purpose
    print(json.dumps(cluster.describe(), indent=2))
    print(f"tear down with: {sys.argv[0]} down --name {cluster.name}", file=sys.stderr)
    return 0


def _command_down(args: argparse.Namespace) -> int:
    removed = delete_namespaces(cluster_namespaces(args.name)) if args.name else remove_all()
    print("\n".join(f"deleted {name}" for name in removed) or "no dsgdbench namespaces")
    return 0


def _command_list(_args: argparse.Namespace) -> int:
    print("\n".join(list_namespaces()) or "no dsgdbench namespaces")
    return 0


def _command_measure(args: argparse.Namespace) -> int:
    with NetnsCluster(2, args.rate, args.name) as cluster:
        goodput = measure_throughput(cluster, seconds=args.seconds)
    ratio = goodput / cluster.rate_bits
    print(
        json.dumps(
            {"rate": args.rate, "goodput_bits_per_second": goodput, "ratio_to_rate": ratio},
            indent=2,
        )
    )
    return 0 if 0.8 <= ratio <= 1.2 else 1


def _command_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ClusterError("run: give the command after `--`")
    with NetnsCluster(args.nodes, args.rate, args.name) as cluster:
        processes = []
        for node in range(args.nodes):
            env = {**os.environ, **cluster.node_env(node, args.master_port)}
            processes.append(subprocess.Popen(cluster.exec_argv(node, command), env=env))
        codes = [process.wait() for process in processes]
    return next((code for code in codes if code != 0), 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="netns_cluster.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="action", required=True)
    up = commands.add_parser("up", help="create a cluster and leave it up")
    run = commands.add_parser("run", help="create a cluster, run CMD on every node, tear down")
    for sub in (up, run):
        sub.add_argument("--nodes", type=int, required=True)
        sub.add_argument("--rate", required=True, help="tc rate of each node's link, e.g. 50mbit")
        sub.add_argument("--name", help="cluster name (default: this process's id)")
    run.add_argument("--master-port", type=int, default=29500)
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARG...")
    measure = commands.add_parser("measure", help="measure the goodput of a shaped link")
    measure.add_argument("--rate", required=True)
    measure.add_argument("--seconds", type=float, default=2.0)
    measure.add_argument("--name")
    down = commands.add_parser("down", help="delete a cluster, or every dsgdbench-* namespace")
    down.add_argument("--name", help="only this cluster")
    commands.add_parser("list", help="list dsgdbench-* namespaces")
    args = parser.parse_args(argv)
    handlers = {
        "up": _command_up,
        "down": _command_down,
        "list": _command_list,
        "measure": _command_measure,
        "run": _command_run,
    }
    try:
        with _interrupt_as_exit():
            return handlers[args.action](args)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
