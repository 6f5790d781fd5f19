"""communicated_bytes against the bytes that really cross an interface.

First, the ranks run in a network namespace of their own (`unshare --net`), so
its loopback interface carries their traffic and nothing else; its transmit
counter, read between barriers around a window of training steps, is the
independent measurement. Second (slow tier), one rank per node of the
benchmarks' network-namespace cluster: each node's veth counter against its
rank's figure. The reported wire bytes of all ranks together must
agree with it within 5 % (what remains is TCP/IP headers, acknowledgements and
the barriers themselves). The payload figure, by contrast, is too small by
the ring factor 2·(K−1)/K = 4/3 at K = 3 and must not agree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def namespace_unavailable() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs unshare and ip (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace here: {probe.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict:
    reason = namespace_unavailable()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("wire") / "wire.json"
    command = f"ip link set lo up && exec {sys.executable} -m tests._wire_probe {out}"
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", command],
        cwd=REPO,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "scenario", ["mini-batch-sgd", "local-sgd", "local-sgd-sign", "hierarchical-local-sgd"]
)
def test_reported_wire_bytes_match_the_interface_counter(measured: dict, scenario: str) -> None:
    ranks = measured[scenario]
    measured_bytes = ranks[0]["interface_tx"]  # one loopback, shared by all ranks
    reported = sum(rank["wire"] for rank in ranks)
    payload = sum(rank["payload"] for rank in ranks)
    assert reported > 1_000_000, "the window must carry enough traffic to measure"
    assert abs(measured_bytes - reported) / reported < 0.05, (measured_bytes, reported)
    assert abs(measured_bytes - payload) / measured_bytes > 0.1, "payload is not what is sent"


# ---------------------------------------------------------------- per node, on the veth links

NODES = 3


@pytest.fixture(scope="module")
def per_node(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each scenario on the benchmarks' network-namespace cluster, one rank per node."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    netns = __import__("netns_cluster")
    reason = netns.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("veth")
    results: dict[str, list[dict]] = {}
    with netns.NetnsCluster(NODES, "2gbit", name=f"wire{os.getpid()}") as cluster:
        for port, scenario in enumerate(VETH_SCENARIOS, start=29_600):
            processes = [
                subprocess.Popen(
                    cluster.exec_argv(
                        node,
                        [
                            sys.executable,
                            "-m",
                            "tests._wire_probe",
                            "--node",
                            str(node),
                            str(NODES),
                            cluster.master_address,
                            str(port),
                            scenario,
                            str(out / f"{scenario}-{node}.json"),
                        ],
                    ),
                    cwd=REPO,
                    env=os.environ.copy(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                for node in range(NODES)
            ]
            outputs = [process.communicate(timeout=180)[0] for process in processes]
            for process, output in zip(processes, outputs, strict=True):
                assert process.returncode == 0, output[-4000:]
            results[scenario] = [
                json.loads((out / f"{scenario}-{node}.json").read_text()) for node in range(NODES)
            ]
    return results


VETH_SCENARIOS = ["mini-batch-sgd", "local-sgd", "local-sgd-sign"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", VETH_SCENARIOS)
def test_each_nodes_veth_carries_what_its_rank_reports(per_node: dict, scenario: str) -> None:
    """One rank per node: everything a rank sends leaves through its node's veth."""
    for node, result in enumerate(per_node[scenario]):
        reported, measured_bytes = result["wire"], result["interface_tx"]
        print(f"{scenario} node {node}: veth {measured_bytes} B, reported {reported} B")
        assert reported > 500_000
        assert abs(measured_bytes - reported) / reported < 0.05, (node, measured_bytes, reported)
        assert abs(measured_bytes - result["payload"]) / measured_bytes > 0.1
