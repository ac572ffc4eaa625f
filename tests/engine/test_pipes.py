"""`up` into a pipe whose reader goes away keeps supervising its flow, and takes it
down on Ctrl-C (issue 18, item 6): `flowrun up FLOW | head -3`, and
`flowrun up FLOW | tee log` ended by the same Ctrl-C as `up`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import ORDERS_STEPS, ROOT, flowrun, unique, wait_for, write_flow


def _attached_up(path: Path, err: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "flowrun", "up", "--progress", "plain",
                             str(path)], cwd=ROOT, stdout=subprocess.PIPE, stderr=err,
                            text=True, env={**os.environ, "CI": "true"})


def _all_live(name: str) -> bool:
    result = flowrun("status", name, "--json", check=False)
    if result.returncode != 0:
        return False
    steps = json.loads(result.stdout)["flows"][0]["steps"]
    return len(steps) == 5 and all(s["live"] for s in steps)


def _stops_and_takes_down(proc: subprocess.Popen[str], engine: Any, name: str) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode in (0, 130), proc.returncode
    wait_for(lambda: engine.observe({"io.flowrun.flow": name}) == [], 30,
             "the flow's containers to be gone")


@contextmanager
def _attached(tmp_path: Path, prefix: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """An attached `up` of a new flow, its standard output a pipe the test reads (and
    closes); whatever happens, the flow is taken down after, and `up` said no
    traceback."""
    name = unique(prefix)
    path = write_flow(tmp_path, name, ORDERS_STEPS)
    with open(tmp_path / "stderr", "w") as err:
        proc = _attached_up(path, err)
        try:
            yield name, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()  # reaped, not left to warn in a later test
            flowrun("down", "--purge", "--grace", "0", name, check=False)
    assert "Traceback" not in (tmp_path / "stderr").read_text()


def test_up_into_a_pipe_closed_mid_warm_up_keeps_supervising(engine: Any,
                                                             tmp_path: Path) -> None:
    with _attached(tmp_path, "head") as (name, proc):
        assert proc.stdout is not None
        for _ in range(3):  # `| head -3`: three lines read, then the reader is gone
            proc.stdout.readline()
        proc.stdout.close()
        wait_for(lambda: _all_live(name), 180, "every step live")
        time.sleep(2)
        assert proc.poll() is None, "up ended: the flow would run unsupervised"
        _stops_and_takes_down(proc, engine, name)


def test_ctrl_c_that_also_ends_the_pipes_reader_takes_the_flow_down(
        engine: Any, tmp_path: Path) -> None:
    with _attached(tmp_path, "tee") as (name, proc):
        assert proc.stdout is not None
        for line in proc.stdout:
            if "real steps live" in line:
                break
        proc.stdout.close()  # `tee` got the same Ctrl-C, and is gone
        _stops_and_takes_down(proc, engine, name)
