"""Waiting for a condition by polling it: the one helper every test tier uses."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class _Deadline:
    def __init__(self, timeout: float, what: str) -> None:
        self.end = time.monotonic() + timeout
        self.timeout, self.what = timeout, what

    def check(self) -> None:
        if time.monotonic() > self.end:
            raise AssertionError(f"timed out after {self.timeout:.0f} s waiting for {self.what}")


def wait_until(predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.2) -> T:
    """Poll `predicate` until it returns something truthy, and return that; fail naming `what`."""
    deadline = _Deadline(timeout, what)
    while not (value := predicate()):
        deadline.check()
        time.sleep(poll)
    return value


async def wait_until_async(
    predicate: Callable[[], T], timeout: float, what: str, poll: float = 0.05
) -> T:
    """`wait_until` for a test running in an event loop (the loop keeps running meanwhile)."""
    deadline = _Deadline(timeout, what)
    while not (value := predicate()):
        deadline.check()
        await asyncio.sleep(poll)
    return value
