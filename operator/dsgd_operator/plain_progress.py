"""Training progress as plain lines, for output that is not a terminal.

A live bar redraws itself in place; in a CI log, behind `| tee` or in a
cluster's log collector nothing can be redrawn, and rich falls back to one
squeezed snapshot (`epoch 3.98/4 ━╸ 0… step 1864`). There, progress is a
line at a steady interval instead, each one complete on its own:

    progress: epoch 1.25/4  step 120  loss 0.4123  test acc 85.10%  1,234 samples/s/rank
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.text import Text

from dsgd_operator.api_status import Progress

#: Seconds between two plain progress lines: often enough to see a run move in a
#: log, rarely enough that the nodes' own log lines are not buried (the display
#: scrapes progress every half second).
PLAIN_PROGRESS_INTERVAL_SECONDS = 10.0


def describe(progress: Progress) -> str:
    """Step, loss, test accuracy and throughput, each only when known, two spaces apart."""
    parts = []
    if progress.step is not None:
        parts.append(f"step {progress.step}")
    if progress.train_loss is not None:
        parts.append(f"loss {progress.train_loss:.4f}")
    if progress.test_accuracy is not None:
        parts.append(f"test acc {progress.test_accuracy:.2%}")
    if progress.samples_per_second is not None:
        parts.append(f"{progress.samples_per_second:,.0f} samples/s/rank")
    return "  ".join(parts)


class PlainProgress:
    """Prints progress as `progress: epoch E/N  <describe>` lines on `console`.

    The first update is printed at once, later ones at most once per
    PLAIN_PROGRESS_INTERVAL_SECONDS (by time.monotonic), and when `shown()`
    ends the latest update is printed unless it already was, so a log always
    ends with where training stopped. Updates without an epoch are ignored.
    """

    def __init__(self, console: Console, total_epochs: int) -> None:
        self.console = console
        self._total_epochs = total_epochs
        self._last_printed_at: float | None = None
        self._pending: Progress | None = None

    def update(self, progress: Progress) -> None:
        if progress.epoch is None:
            return
        now = time.monotonic()
        due = self._last_printed_at is None or (
            now - self._last_printed_at >= PLAIN_PROGRESS_INTERVAL_SECONDS
        )
        if due:
            self._print(progress)
            self._last_printed_at = now
            self._pending = None
        else:
            self._pending = progress

    @contextmanager
    def shown(self) -> Iterator[None]:
        try:
            yield
        finally:
            if self._pending is not None:
                self._print(self._pending)
                self._pending = None

    def _print(self, progress: Progress) -> None:
        line = f"progress: epoch {progress.epoch:.2f}/{self._total_epochs:g}"
        details = describe(progress)
        # Text, not markup: nothing in the figures may be read as rich markup.
        self.console.print(Text(f"{line}  {details}" if details else line), soft_wrap=True)
