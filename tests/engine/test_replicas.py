"""`replicas:` on one host: competing consumers share a step's queue, a redeploy
replaces them one at a time without leaving the queue unconsumed, and scaling
down removes the extra replicas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowrun.contract import names
from tests.conftest import flowrun, make_component, unique, wait_for, write_flow
from tests.engine.stream import replica_work, replicated_steps, roll_mid_stream

COUNT = 1500
WORK = replica_work(0.004)


def test_replicas_share_a_queue_roll_without_a_gap_and_scale_down(
        engine: Any, tmp_path: Path) -> None:
    work = make_component(tmp_path, "work", "go", WORK)
    name = unique("replicas")
    path = write_flow(tmp_path, name, replicated_steps(work, 3))
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
        def redeploy() -> None:
            (work / "go.py").write_text(WORK + "\nVERSION = 2\n")
            dry = flowrun("up", "--dry-run", str(path)).stdout
            assert [line.split()[1] for line in dry.splitlines()
                    if line.startswith("recreate")] == ["work#1", "work#2", "work#3"], dry
            flowrun("up", "-d", "--timeout", "120", str(path))

        roll_mid_stream(engine, name, COUNT, redeploy)

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
