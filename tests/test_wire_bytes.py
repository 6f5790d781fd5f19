"""communicated_bytes against the bytes that really cross an interface.

The ranks run in a network namespace of their own (`unshare --net`), so its
loopback interface carries their traffic and nothing else; its transmit
counter, read between barriers around a window of training steps, is the
independent measurement. The reported wire bytes of all ranks together must
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
    measured_bytes = ranks[0]["loopback_tx"]
    reported = sum(rank["wire"] for rank in ranks)
    payload = sum(rank["payload"] for rank in ranks)
    assert reported > 1_000_000, "the window must carry enough traffic to measure"
    assert abs(measured_bytes - reported) / reported < 0.05, (measured_bytes, reported)
    assert abs(measured_bytes - payload) / measured_bytes > 0.1, "payload is not what is sent"
