"""Standard output that a closed pipe cannot break.

`flowrun up FLOW | tee log` then Ctrl-C ends `tee` too; `flowrun up FLOW | head -5`
ends `head` after five lines. Python ignores SIGPIPE, so the next write raises
BrokenPipeError, which used to end `up` where it stood: mid-warm-up, or before it
took the flow down, leaving steps running with no supervisor. Once the reader is
gone, what `up` says goes nowhere, and `up` goes on doing its job: supervising,
and taking the flow down on Ctrl-C.
"""

from __future__ import annotations

import errno
import io
import os
from typing import TextIO


class Unbreakable(io.TextIOBase):
    """A text stream whose writes, once its reader has gone, are dropped."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.inner.write(text)
            except OSError as e:
                self._lost(e)
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.inner.flush()
            except OSError as e:
                self._lost(e)

    def _lost(self, e: OSError) -> None:
        if e.errno not in (errno.EPIPE, errno.EIO, errno.ECONNRESET):
            raise e
        self.broken = True
        # What is still buffered would fail again at exit: point the descriptor at
        # /dev/null, so nothing below Python writes into the dead pipe either.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.inner.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return not self.broken and self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.inner.encoding

    def writable(self) -> bool:
        return True
