"""Watching component directories: one ComponentsChanged event per batch of saves."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import watchfiles

from flowrun.core.revision import is_ignored
from flowrun.supervise.events import ComponentsChanged, Event

# How long the watcher waits in its native loop before it checks the stop event and
# tells us it is running. Its first return is the sign that it is watching.
POLL_MS = 200


class ComponentFilter(watchfiles.DefaultFilter):
    """watchfiles' defaults (VCS, caches, editor swap files) plus flowrun's own ignores."""

    def __init__(self, roots: Sequence[Path]) -> None:
        super().__init__()
        self.roots = [r.resolve() for r in roots]

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if not super().__call__(change, path):
            return False
        p = Path(path)
        for root in self.roots:
            if p.is_relative_to(root):
                return not is_ignored(p.relative_to(root))
        return True


def watch_components(paths: Sequence[Path], put: Callable[[Event], None],
                     stop: threading.Event, ready: threading.Event) -> None:
    # watchfiles already batches a burst of saves (50 ms after the last, 1.6 s at most),
    # so one save, or one editor's save dance, gives one event.
    for batch in watchfiles.watch(*paths, watch_filter=ComponentFilter(paths), stop_event=stop,
                                  yield_on_timeout=True, rust_timeout=POLL_MS,
                                  raise_interrupt=False):
        ready.set()  # the native watcher is set up: no save from now on is missed
        if batch:
            put(ComponentsChanged(tuple(sorted({changed for _, changed in batch}))))
