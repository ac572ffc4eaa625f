"""One way to wait for something: until a deadline, looking every so often, and
saying what was waited for when it does not come."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from flowrun.errors import FlowFailed

T = TypeVar("T")


def wait_for(look: Callable[[], T | None], timeout: float, what: str, every: float = 0.2,
             on_timeout: Callable[[], Exception] | None = None,
             stop: Callable[[], None] | None = None) -> T:
    """`look()` until it gives something truthy (returned); past `timeout` seconds,
    FlowFailed naming `what` (or `on_timeout()`'s error). `stop()` is called before
    each look and may raise to end the wait (an interrupted `up`)."""
    deadline = time.monotonic() + timeout
    while True:
        if stop is not None:
            stop()
        found = look()
        if found:
            return found
        if time.monotonic() >= deadline:
            if on_timeout is not None:
                raise on_timeout()
            raise FlowFailed(f"{what} within {timeout:g} s")
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
