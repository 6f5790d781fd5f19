"""What a NetnsCluster's shaped link really carries: TCP goodput between two of its nodes."""

from __future__ import annotations

import json
import subprocess
import sys

from netns_links import ClusterError, run_command
from shaped_cluster import NetnsCluster

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
        run_command(cluster.exec_argv(source, sender_argv))
        out, err = receiver.communicate(timeout=30)
        if receiver.returncode != 0:
            raise ClusterError(f"throughput receiver failed: {err.strip()}")
        result = json.loads(out.strip().splitlines()[-1])
        return result["bytes"] * 8 / result["seconds"]
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
