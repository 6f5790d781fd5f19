"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from dsgd_operator.local_run import free_port as local_free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


#: A TCP port that was free a moment ago on loopback (the OS picks it): `dsgd run`'s own.
pick_free_port = local_free_port


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Call it for each port a test needs."""
    return pick_free_port


@pytest.fixture
def repo_root() -> Path:
    return REPO


# The real-control-plane tier's fixtures (cluster, kubectl, kube_api, crd_installed,
# monitoring_crds_installed, namespace): see tests/_cluster.py.
from tests._cluster import (  # noqa: E402,F401
    cluster,
    crd_installed,
    kube_api,
    kubectl,
    monitoring_crds_installed,
    namespace,
)
from tests._helm_release import helm, release  # noqa: E402,F401
