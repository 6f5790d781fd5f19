"""Training progress for status.progress, scraped from node 0's metrics endpoint.

Trainer pods get no API access at all: the operator reads rank 0's Prometheus
series from `http://<node-0 pod IP>:<metrics port>/metrics` (the container
port named `metrics`) and copies them into the job's status.
"""

from __future__ import annotations

import aiohttp
from dsgd_contract.pod import METRICS_PORT

from dsgd_operator.api_status import Progress
from dsgd_operator.reconcile.plan import Event
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


def checkpoint_fallback_event(progress: Progress, attempt: int) -> Event | None:
    """A Warning Event (once per gang attempt) when node 0 resumed from an older checkpoint.

    The trainer cannot post events itself (its pods have no API access); it
    counts the unusable checkpoints it skipped, and the operator reads the count.
    """
    skipped = progress.checkpoints_skipped or 0
    if skipped <= 0:
        return None
    return Event(
        "Warning",
        "CheckpointFallback",
        f"gang attempt {attempt} resumed from an older checkpoint: the newest {skipped} "
        "were unusable (corrupt or incomplete files; node 0's log names them), so the "
        "epochs after the one it resumed from are trained again",
        key=f"checkpoint-fallback/{attempt}",
    )
