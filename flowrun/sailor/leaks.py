"""Catch a real-time trigger that creates a listener on every process() call.

After each call the sailor samples the process's threads and open file
descriptors. A correct trigger levels off after its first calls; a leaking one
grows with every call. We warn once growth has been steady for `window` calls.
"""

from __future__ import annotations

import os
import threading


def sample() -> tuple[int, int]:
    try:
        fds = len(os.listdir("/proc/self/fd"))
    except OSError:
        fds = 0
    return threading.active_count(), fds


class LeakWatch:
    def __init__(self, window: int = 5, warm_up: int = 2) -> None:
        self.window = window
        self.warm_up = warm_up  # the first calls may create the one listener a trigger needs
        self.history: list[tuple[int, int]] = []
        self.reported: str | None = None

    def observe(self, threads: int, fds: int) -> str | None:
        """Record one sample; return a description the first time a leak shows."""
        self.history.append((threads, fds))
        if self.reported is not None:
            return None
        recent = self.history[self.warm_up:][-(self.window + 1):]
        if len(recent) < self.window + 1:
            return None
        for index, what in ((0, "threads"), (1, "open file descriptors")):
            values = [s[index] for s in recent]
            if all(b > a for a, b in zip(values, values[1:], strict=False)):
                self.reported = (
                    f"{what} grew on each of the last {self.window} process() calls "
                    f"({values[0]} -> {values[-1]})"
                )
                return self.reported
        return None
