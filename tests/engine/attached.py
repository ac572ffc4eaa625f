"""An attached `flowrun up --progress json`, read the way a person watches it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, flowrun


class AttachedUp:
    def __init__(self, path: Path, name: str, *extra: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowrun", "up", *extra, "--progress", "json", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "CI": "true"})
        self.events: list[dict[str, Any]] = []
        self._lines: queue.Queue[str] = queue.Queue()
        # Read in a thread: a blocking readline would make every timeout meaningless.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def until(self, check: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = json.loads(self._lines.get(timeout=0.5))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"up exited: {self.proc.returncode}") from None
                continue
            self.events.append(event)
            if check(event):
                return event
        raise AssertionError(f"timed out; events: {self.events[-20:]}")

    def stop(self) -> int:
        """Ctrl-C, as a person would; then make sure nothing of the flow is left."""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            flowrun("down", "--purge", "--grace", "0", self.name, check=False)
            self._reader.join(5)
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
        return self.proc.wait()


def notice(text: str) -> Any:
    return lambda e: e.get("event") == "notice" and text in e.get("text", "")


def live(step: str) -> Any:
    return lambda e: e.get("event") == "phase" and e["step"] == step and e["phase"] == "live"
