"""`replicas:` on one host: competing consumers share a step's queue, a redeploy
replaces them one at a time without leaving the queue unconsumed, and scaling
down removes the extra replicas."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flowrun.core import names
from tests.conftest import COMPONENTS, flowrun, make_component, unique, wait_for, write_flow
from tests.engine.stream import ConsumerWatch, Sink, Stream

COUNT = 1500
WORK = """import os, time

def process(msg, cfg):
    time.sleep(0.004)
    return {**msg["body"], "replica": os.environ["FLOWRUN_REPLICA"]}
"""


def steps_yaml(work: Path, replicas: int) -> str:
    return f"""  - id: src
    component: {COMPONENTS}/shop
    function: newOrders
    config: {{limit: 0}}
  - id: work
    component: {work}
    function: go
    replicas: {replicas}
"""


def test_replicas_share_a_queue_roll_without_a_gap_and_scale_down(
        engine: Any, tmp_path: Path) -> None:
    work = make_component(tmp_path, "work", "go", WORK)
    name = unique("replicas")
    path = write_flow(tmp_path, name, steps_yaml(work, 3))
    try:
        flowrun("up", "-d", "--timeout", "120", str(path))
        containers = {o.name for o in engine.observe({"io.flowrun.flow": name})}
        for n in (1, 2, 3):
            assert names.container(name, "work", n) in containers
            assert names.container(name, "mapper.src.work", n) in containers
        data = json.loads(flowrun("status", name, "--json").stdout)
        status = {s["step"]: s for s in data["flows"][0]["steps"]}
        assert status["work"]["replicas"] == 3 and status["work"]["replicas_live"] == 3
        assert [e["replica"] for e in status["work"]["each"]] == [1, 2, 3]
        assert "3/3 live" in flowrun("status", name).stdout

        # A numbered stream, and a rolling redeploy of the replicated step in its middle.
        sink = Sink(engine, name, "work", keep="replica")
        sink.declare()
        consumers = ConsumerWatch(engine, name, names.input_queue(name, "work"))
        stream = Stream(engine, name, "src", {"n": 1}, COUNT, rate=100)
        stream.start()
        time.sleep(1.0)
        before = stream.sent
        consumers.start()
        (work / "go.py").write_text(WORK + "\nVERSION = 2\n")
        dry = flowrun("up", "--dry-run", str(path)).stdout
        assert [line.split()[1] for line in dry.splitlines()
                if line.startswith("recreate")] == ["work#1", "work#2", "work#3"], dry
        flowrun("up", "-d", "--timeout", "120", str(path))
        consumers.stop.set()
        consumers.join(10)
        after = stream.sent
        stream.join(timeout=120)
        assert stream.error is None, stream.error
        assert 0 < before < after < COUNT, (before, after)
        # Rolling: the queue always had a consumer, replaced one replica at a time.
        assert consumers.counts and min(consumers.counts) >= 1, consumers.counts
        sink.drain_until(COUNT, timeout=120)
        assert not sink.missing(COUNT), f"lost {len(sink.missing(COUNT))}"
        shares = {str(r): sum(1 for v in sink.kept.values() if v == str(r)) for r in (1, 2, 3)}
        assert all(shares.values()), shares  # every replica took part of the stream

        # Scaled down to one: the extra replicas go, the first stays.
        path.write_text(path.read_text().replace("replicas: 3", "replicas: 1"))
        dry = flowrun("up", "--dry-run", str(path)).stdout
        assert "remove    work#3                       scaled down" in dry, dry
        kept_id = engine.find(names.container(name, "work", 1)).id
        flowrun("up", "-d", "--timeout", "120", str(path))
        wait_for(lambda: engine.find(names.container(name, "work", 2)) is None, 30,
                 "replica 2 removed")
        assert engine.find(names.container(name, "work", 1)).id == kept_id
        assert "nothing to do" in flowrun("up", "--dry-run", str(path)).stdout
    finally:
        flowrun("down", "--purge", "--grace", "2", name, check=False)
