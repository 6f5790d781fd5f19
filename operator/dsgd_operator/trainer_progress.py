"""Training progress read from a trainer pod's Prometheus exposition.

Trainer pods get no write access to the Kubernetes API; instead the operator
(and `dsgd run`, for its progress display) scrape node 0's `/metrics` and turn
rank 0's series into the job's `status.progress`. The metric names are the
contract's (dsgd_contract.metrics), which the trainer exports.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request

from dsgd_contract import metrics as names
from dsgd_contract.metrics import GLOBAL, RANK_LABEL, SCOPE_LABEL
from prometheus_client.parser import text_string_to_metric_families

from dsgd_operator.api_status import Progress

#: The rank whose view is reported: after every global sync all ranks agree,
#: and rank 0 is the one that writes metrics.jsonl and summary.json too.
REPORTING_RANK = "0"


def parse_progress(exposition: str) -> Progress:
    """Rank 0's progress from Prometheus text exposition; missing series stay None.

    Sync rounds and bytes are summed over scopes for `communicatedBytes` and
    kept per scope for `syncRounds`. Raises ValueError on text that is not
    a Prometheus exposition.
    """
    values: dict[str, float] = {}
    rounds: dict[str, int] = {}
    communicated = 0.0
    seen_bytes = False
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.labels.get(RANK_LABEL) != REPORTING_RANK or not math.isfinite(sample.value):
                continue
            if sample.name == names.SYNC_ROUNDS:
                rounds[sample.labels.get(SCOPE_LABEL, GLOBAL)] = int(sample.value)
            elif sample.name == names.COMMUNICATED_BYTES:
                communicated += sample.value
                seen_bytes = True
            else:
                values[sample.name] = sample.value
    step = values.get(names.STEPS)
    skipped = values.get(names.CHECKPOINTS_SKIPPED)
    return Progress(
        epoch=values.get(names.EPOCH),
        step=int(step) if step is not None else None,
        train_loss=values.get(names.TRAIN_LOSS),
        test_accuracy=values.get(names.TEST_ACCURACY),
        samples_per_second=values.get(names.SAMPLES_PER_SECOND),
        sync_rounds=rounds,
        communicated_bytes=int(communicated) if seen_bytes else None,
        checkpoints_skipped=int(skipped) if skipped is not None else None,
    )


def scrape_progress(url: str, timeout: float = 2.0) -> Progress | None:
    """Progress from a metrics URL, or None when the endpoint is not up (yet) or unreadable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, TimeoutError):
        return None
    try:
        return parse_progress(text)
    except ValueError:
        return None
