"""The local cluster's pod IPs: one address per pod, every one of them this machine's own.

Kubernetes validates pod IPs as a network would route them: an EndpointSlice refuses
loopback addresses, so with pod IPs in 127.0.0.0/8 no Service would ever get endpoints
(a ServiceMonitor would find nothing to scrape, a headless Service no addresses). Where
it may, `up` makes ROUTABLE local the way 127.0.0.0/8 is: a route of type `local` on the
loopback interface (Linux "AnyIP": every address of the range is this machine's, `bind()`
works on each, no interface is configured). That takes CAP_NET_ADMIN (root) and `ip`
(iproute2); without them pods get LOOPBACK addresses, as before, and Services stay
without endpoints. `release` removes the route once no node agent on the machine uses it.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

#: RFC 2544's benchmarking range: never routed on the internet, unused by Kubernetes'
#: and container engines' defaults.
ROUTABLE = ipaddress.IPv4Network("198.18.0.0/16")
LOOPBACK = ipaddress.IPv4Network("127.64.0.0/10")
_ROUTE = ["local", str(ROUTABLE), "dev", "lo"]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _routed() -> bool:
    return str(ROUTABLE) in _ip("route", "show", "table", "local", str(ROUTABLE)).stdout


def ensure() -> ipaddress.IPv4Network:
    """ROUTABLE when its local route is (or could now be) in place, else LOOPBACK."""
    if shutil.which("ip") is None:
        return LOOPBACK
    if _routed() or _ip("route", "replace", *_ROUTE).returncode == 0:
        return ROUTABLE
    return LOOPBACK


def _node_agents_running() -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"dsgd_cluster.node_agent" in cmdline.read_bytes():
                return True
        except OSError:
            continue  # exited meanwhile
    return False


def release() -> None:
    """Remove ROUTABLE's route unless a node agent (another cluster's) still runs."""
    if shutil.which("ip") is not None and _routed() and not _node_agents_running():
        _ip("route", "del", *_ROUTE)
