"""Fixtures shared by every test module."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def pick_free_port() -> int:
    """A TCP port that was free a moment ago on loopback (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Call it for each port a test needs."""
    return pick_free_port


@pytest.fixture
def repo_root() -> Path:
    return REPO


# The real-control-plane tier's fixtures (cluster, kubectl, kube_api, crd_installed,
# namespace): see tests/_cluster.py.
from tests._cluster import (  # noqa: E402,F401
    cluster,
    crd_installed,
    kube_api,
    kubectl,
    namespace,
)
