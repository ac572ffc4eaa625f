"""One command at a time changes a flow: a lock per flow name on this host.

Docker cannot serialise for us: two concurrent creates of a network with one
name both succeed (two networks, one name), and every later `up` then fails.
An advisory `flock` on a file per flow is released by the kernel when its
holder exits, however it exits, so a killed `flowrun` never leaves a flow
locked. The directory is shared by every user of the host (mode 1777, like
/tmp), as the Docker engine is.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from flowrun.contract import names
from flowrun.errors import FlowFailed


def lock_dir() -> Path:
    path = Path(os.environ.get("FLOWRUN_LOCK_DIR") or
                Path(tempfile.gettempdir()) / names.LOCK_DIR_NAME)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        try:
            path.chmod(0o1777)
        except OSError:
            pass
    return path


class FlowLock:
    def __init__(self, flow: str, timeout: float = 300.0,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.flow, self.timeout, self.on_wait = flow, timeout, on_wait
        self.path = lock_dir() / f"{flow}.lock"
        self.fd: int | None = None

    def __enter__(self) -> FlowLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and self.on_wait is not None:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    self.on_wait(f"waiting for another flowrun command on flow {self.flow} "
                                 f"(pid {holder}) to finish")
                    told = True
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise FlowFailed(
                        f"flow {self.flow}: another flowrun command still holds it after "
                        f"{self.timeout:.0f} s ({self.path}); wait for it, or stop it"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
