"""No message lost while a step is SIGKILLed, redeployed, or the broker restarts.

Each run streams numbered messages through a five-real-step flow and counts
what arrives at the last step. Duplicates are allowed (at-least-once) and
reported; a gap fails the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import COMPONENTS, ORDERS_STEPS, flowrun, unique
from tests.engine.stream import Sink, Stream

COUNT = 2000
BODY = {"id": "o", "customer": {"first": "A", "last": "B", "email": "a@b.c"},
        "items": [{"price": 1}]}


def stream_through(engine: Any, name: str, disrupt: Any, rate: float = 1000) -> None:
    sink = Sink(engine, name, "notify")
    sink.declare()
    stream = Stream(engine, name, "fetch", BODY, COUNT, rate=rate)
    stream.start()
    time.sleep(0.7)  # mid-stream
    before = stream.sent
    disrupt()
    after = stream.sent
    stream.join(timeout=180)
    # The disruption really fell mid-stream: messages went before it and after it.
    assert 0 < before < COUNT, before
    assert after < COUNT and stream.sent == COUNT, (after, stream.sent)
    assert stream.error is None, stream.error
    sink.drain_until(COUNT, timeout=120)
    missing = sink.missing(COUNT)
    print(f"\n{name}: {len(sink.seen)}/{COUNT} delivered, {sink.duplicates()} duplicate(s), "
          f"{stream.resent} resend(s)")
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"


def test_sigkill_of_a_step_loses_nothing(flow_factory: Any, engine: Any) -> None:
    name = unique("kill")
    flow_factory(name, ORDERS_STEPS)

    def kill() -> None:
        # SIGKILL the step's process from the host, as the OOM killer would: Docker's
        # restart policy brings it back, and its unacked messages are redelivered.
        pid = engine.api.inspect_container(f"flowrun.{name}.enrich")["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)

    stream_through(engine, name, kill)
    assert flowrun("status", name, "--json").stdout.count('"restarts": 1') >= 1


def test_redeploy_mid_stream_loses_nothing(flow_factory: Any, engine: Any,
                                           tmp_path: Path) -> None:
    crm = tmp_path / "crm"
    shutil.copytree(COMPONENTS / "crm", crm)
    steps = ORDERS_STEPS.replace(f"{COMPONENTS}/crm", str(crm))
    name = unique("redeploy")
    flow = flow_factory(name, steps)

    def redeploy() -> None:
        (crm / "upsert.py").write_text((crm / "upsert.py").read_text() + "\nVERSION = 2\n")
        dry = flowrun("up", "--dry-run", str(flow.path)).stdout
        changed = [line.split()[1] for line in dry.splitlines() if line.startswith("recreate")]
        assert changed == ["enrich"], dry
        flowrun("up", "-d", str(flow.path))

    # A redeploy (a build, then the replacement) takes seconds: a slower stream
    # still runs when it ends, so messages go after it as well as before.
    stream_through(engine, name, redeploy, rate=300)


def test_broker_restart_loses_nothing(flow_factory: Any, engine: Any) -> None:
    name = unique("broker")
    flow_factory(name, ORDERS_STEPS)
    stream_through(engine, name, lambda: engine.restart("flowrun-broker", grace=10))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        steps = flowrun("status", name, "--json").stdout
        if steps.count('"live": true') == 5:
            break
        time.sleep(0.5)
    else:
        pytest.fail("steps did not come back live after the broker restart")
