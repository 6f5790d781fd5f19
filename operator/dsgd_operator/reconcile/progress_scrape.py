"""Training progress for status.progress, scraped from node 0's metrics endpoint.

Trainer pods get no API access at all: the operator reads rank 0's Prometheus
series from `http://<node-0 pod IP>:<metrics port>/metrics` (the container
port named `metrics`) and copies them into the job's status.
"""

from __future__ import annotations

import aiohttp
from dsgd_contract.pod import METRICS_PORT

from dsgd_operator.api import Progress
from dsgd_operator.reconcile.status import PodState
from dsgd_operator.trainer_progress import parse_progress


def metrics_url(pod: PodState) -> str | None:
    """Node 0's metrics URL, or None while the pod has no IP."""
    if not pod.pod_ip:
        return None
    port = pod.metrics_port or METRICS_PORT
    host = f"[{pod.pod_ip}]" if ":" in pod.pod_ip else pod.pod_ip
    return f"http://{host}:{port}/metrics"


async def scrape(session: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> Progress | None:
    """Rank 0's progress from `url`; None if unreachable, unreadable or empty."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                return None
            text = await response.text(errors="replace")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    try:
        progress = parse_progress(text)
    except ValueError:
        return None
    return progress if progress != Progress() else None
