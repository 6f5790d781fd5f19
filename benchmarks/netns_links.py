"""Network namespaces and shaped links: what a NetnsCluster (shaped_cluster.py) is made of.

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
leftovers of a crashed run. Deleting (`delete_namespaces`) is idempotent: it
stops every process still inside the namespaces, then deletes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence

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


def run_command(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip`/`tc`; ClusterError with its message when `check` and it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ClusterError(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of the network namespaces starting with `prefix` (`ip netns list`)."""
    result = run_command(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(prefix))


def namespace_pids(namespace: str) -> list[int]:
    """Processes running inside `namespace` (`ip netns pids`)."""
    result = run_command(["ip", "netns", "pids", namespace], check=False)
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
        run_command(["ip", "netns", "delete", name], check=False)
    return names


def cluster_namespaces(name: str) -> list[str]:
    """The existing namespaces of the cluster called `name` (not those of `name-other`)."""
    pattern = re.compile(rf"^{re.escape(PREFIX + name)}-(hub|node\d+)$")
    return [namespace for namespace in list_namespaces() if pattern.match(namespace)]


def remove_all() -> list[str]:
    """Delete every `dsgdbench-*` namespace (leftovers of crashed runs included)."""
    return delete_namespaces(list_namespaces())


def tbf_argv(namespace: str, device: str, rate: str, latency: str) -> list[str]:
    """`tc` replacing `device`'s root qdisc in `namespace` with a tbf of `rate`."""
    burst = tbf_burst_bytes(parse_rate(rate))
    return [
        "tc", "-n", namespace, "qdisc", "replace", "dev", device, "root",
        "tbf", "rate", rate, "burst", str(burst), "latency", latency,
    ]  # fmt: skip


def netns_unavailable_reason() -> str | None:
    """None if this process may create network namespaces and tbf qdiscs, else why not."""
    probe = f"{PREFIX}probe-{os.getpid()}"
    try:
        run_command(["ip", "netns", "add", probe])
        run_command(["ip", "-n", probe, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
        run_command(tbf_argv(probe, "p0", "1mbit", DEFAULT_LATENCY))
    except (ClusterError, OSError) as error:
        return f"cannot create network namespaces with tbf shaping here: {error}"
    finally:
        with contextlib.suppress(ClusterError, OSError):
            delete_namespaces([probe])
    return None


def add_hub(hub: str) -> None:
    """The hub namespace and its bridge br0."""
    run_command(["ip", "netns", "add", hub])
    run_command(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
    run_command(["ip", "-n", hub, "link", "set", "br0", "up"])


def add_node_namespace(hub: str, index: int, namespace: str, address: str) -> None:
    """Node namespace `namespace`, its eth0 with `address`/24, joined to the hub's bridge."""
    port = f"n{index}"
    run_command(["ip", "netns", "add", namespace])
    run_command(["ip", "-n", namespace, "link", "set", "lo", "up"])
    # Made in the hub and moved straight into the node: nothing touches our namespace.
    run_command([
        "ip", "-n", hub, "link", "add", port, "type", "veth",
        "peer", "name", INTERFACE, "netns", namespace,
    ])  # fmt: skip
    run_command(["ip", "-n", hub, "link", "set", port, "master", "br0"])
    run_command(["ip", "-n", hub, "link", "set", port, "up"])
    run_command(["ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", INTERFACE])
    run_command(["ip", "-n", namespace, "link", "set", INTERFACE, "up"])


def interface_bytes(namespace: str, device: str = INTERFACE) -> tuple[int, int]:
    """(bytes sent, bytes received) by `device` in `namespace` so far, headers included."""
    shown = run_command(["ip", "-n", namespace, "-j", "-s", "link", "show", "dev", device])
    stats = json.loads(shown.stdout)[0]["stats64"]
    return int(stats["tx"]["bytes"]), int(stats["rx"]["bytes"])
