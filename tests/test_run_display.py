"""`dsgd run`'s display: plain progress lines off a terminal, the live bar on one.

The gang and the metrics endpoint are stand-ins (no training): a fake `run_gang`
ticks the display through a scripted series of progress readings, and a fake
clock makes the interval between plain lines exact.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from dsgd_operator import plain_progress, run_display
from dsgd_operator.api_status import Progress
from dsgd_operator.local_gang import GangResult, LocalProcess
from dsgd_operator.manifest import load_jobs
from dsgd_operator.plain_progress import PLAIN_PROGRESS_INTERVAL_SECONDS
from rich.console import Console

from tests.conftest import EXAMPLES

JOB = load_jobs(EXAMPLES / "fashion-mnist-local-sgd.yaml")[0]
EPOCHS = JOB.spec.training.epochs
PLAIN_LINE = re.compile(
    r"^progress: epoch (\d+\.\d\d)/(\d+)  step (\d+)  loss (\d\.\d{4})  "
    r"test acc (\d+\.\d\d)%  ([\d,]+) samples/s/rank$"
)
# Readings this far apart: plain lines at ticks 0 and 3 (1.2 intervals), then the
# last reading (tick 5, 2.0 intervals: not due) when the run ends.
TICK_FRACTION = 0.4
TICKS = 6


def reading(tick: int) -> Progress:
    return Progress(
        epoch=0.5 * tick,
        step=100 * tick,
        train_loss=1.0 / (tick + 1),
        test_accuracy=0.5 + 0.05 * tick,
        samples_per_second=1000.0 + tick,
    )


@pytest.fixture(autouse=True)
def scripted_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`run_gang` ticks TICKS times, one reading each, with the clock at tick × fraction."""
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(plain_progress, "time", SimpleNamespace(monotonic=lambda: clock.now))
    readings = iter(reading(tick) for tick in range(TICKS))
    monkeypatch.setattr(run_display, "scrape_progress", lambda url: next(readings))
    # Whatever the caller's environment says about terminals, only the stream decides.
    for variable in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")

    def fake_run_gang(job, out_dir, log, on_tick, metrics_port):  # type: ignore[no-untyped-def]
        processes = [LocalProcess(node, [], {}, 9000 + node) for node in range(2)]
        log(0, "node zero says hello")
        for tick in range(TICKS):
            clock.now = tick * TICK_FRACTION * PLAIN_PROGRESS_INTERVAL_SECONDS
            on_tick(None, processes)
        (out_dir / "summary.json").write_text(json.dumps({"final_test_accuracy": 0.75}))
        return GangResult(exit_codes={0: 0, 1: 0})

    monkeypatch.setattr(run_display, "run_gang", fake_run_gang)


def test_off_a_terminal_progress_is_plain_lines_at_the_interval(tmp_path: Path) -> None:
    stream = io.StringIO()  # not a tty, like a pipe or a CI log
    code = run_display.run_with_display(JOB, tmp_path / "run", console=Console(file=stream))
    output = stream.getvalue()
    assert code == 0
    lines = output.splitlines()
    progress_lines = [line for line in lines if line.startswith("progress:")]
    assert [PLAIN_LINE.match(line).group(1, 2, 3) for line in progress_lines] == [
        ("0.00", str(EPOCHS), "0"),
        ("1.50", str(EPOCHS), "300"),
        ("2.50", str(EPOCHS), "500"),
    ]
    assert progress_lines[1] == (
        f"progress: epoch 1.50/{EPOCHS}  step 300  loss 0.2500  test acc 65.00%  "
        "1,003 samples/s/rank"
    )
    # Nothing a terminal would redraw: no escape sequences, no bar.
    assert "\x1b" not in output and "━" not in output
    assert "[node-0] node zero says hello" in lines
    assert "final_test_accuracy" in output


def test_a_plain_line_waits_for_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(plain_progress, "time", SimpleNamespace(monotonic=lambda: clock.now))
    stream = io.StringIO()
    view = plain_progress.PlainProgress(Console(file=stream), total_epochs=4)
    with view.shown():
        view.update(reading(1))
        clock.now += PLAIN_PROGRESS_INTERVAL_SECONDS - 0.01
        view.update(reading(2))
        assert len(stream.getvalue().splitlines()) == 1  # not yet due
        clock.now += 0.01
        view.update(reading(3))
        view.update(Progress(step=7))  # no epoch yet: nothing to say
    epochs = [PLAIN_LINE.match(line).group(1) for line in stream.getvalue().splitlines()]
    assert epochs == ["0.50", "1.50"]  # reading 2 was superseded before it was due


class PseudoTerminal:
    """A console on a real pseudo-terminal; `received()` is everything the terminal got."""

    def __init__(self) -> None:
        self._leader, follower = os.openpty()
        self._received = io.BytesIO()
        # Read while the bar draws: a full pty buffer would block the writer.
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.console = Console(file=open(follower, "w", encoding="utf-8"), width=120)  # noqa: SIM115

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._leader, 65536)
            except OSError:  # EIO: the follower side is closed and everything was read
                return
            if not chunk:
                return
            self._received.write(chunk)

    def received(self) -> str:
        self.console.file.close()
        self._reader.join(timeout=10)
        os.close(self._leader)
        return self._received.getvalue().decode("utf-8", errors="replace")


def test_on_a_terminal_progress_is_the_live_bar(tmp_path: Path) -> None:
    terminal = PseudoTerminal()
    assert isinstance(run_display.progress_view(terminal.console, EPOCHS), run_display.LiveBar)
    code = run_display.run_with_display(JOB, tmp_path / "run", console=terminal.console)
    output = terminal.received()
    assert code == 0
    assert "━" in output  # the bar, drawn with escape sequences
    assert "\x1b[" in output
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)  # what the terminal shows
    assert f"epoch 2.50/{EPOCHS}" in text and "step 500" in text
    assert "progress:" not in text
    assert "[node-0] node zero says hello" in text
