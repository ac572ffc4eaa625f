"""Leaking triggers are caught; `up --watch` redeploys only what changed; Ctrl-C stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from tests.conftest import (
    COMPONENTS,
    ORDERS_STEPS,
    flowrun,
    make_component,
    unique,
    wait_for,
    write_flow,
)
from tests.engine.attached import AttachedUp, live, notice


def test_a_leaking_trigger_is_reported_and_a_correct_one_is_not(flow_factory: Any) -> None:
    leaky = flow_factory(unique("leaky"), f"""  - id: t
    component: {COMPONENTS}/listeners
    function: leaky
    interval: 0.1
""")
    steady = flow_factory(unique("steady"), f"""  - id: t
    component: {COMPONENTS}/listeners
    function: steady
    interval: 0.1
""")
    leak = wait_for(lambda: leaky.steps()["t"]["leak"], 30, "the leak warning")
    assert "threads grew" in leak
    logs = flowrun("logs", leaky.name, "t").stdout
    assert "WARNING trigger 'leaky' leaks listeners" in logs
    assert "create the listener once" in logs
    assert "LEAK" in flowrun("status", leaky.name).stdout
    # The steady trigger has made at least as many calls by now, and no warning.
    wait_for(lambda: (steady.steps()["t"]["processed"] or 0) > 20, 30, "steady calls")
    assert steady.steps()["t"]["leak"] is None
    assert "leaks listeners" not in flowrun("logs", steady.name, "t").stdout


def test_watch_redeploys_only_the_changed_steps(engine: Any, tmp_path: Path) -> None:
    crm = tmp_path / "crm"
    shutil.copytree(COMPONENTS / "crm", crm)
    name = unique("watch")
    path = write_flow(tmp_path, name, ORDERS_STEPS.replace(f"{COMPONENTS}/crm", str(crm)))
    up = AttachedUp(path, name, "--watch")
    until, events = up.until, up.events
    try:
        until(lambda e: e.get("event") == "notice" and "watching" in e.get("text", ""), 120)
        before = {o.labels["io.flowrun.step"]: o.id
                  for o in engine.observe({"io.flowrun.flow": name})}
        source = crm / "upsert.py"
        source.write_text(source.read_text().replace('"known": len(contacts)',
                                                     '"known": len(contacts), "v": 2'))
        until(lambda e: e.get("event") == "notice" and "redeploy enrich" in e.get("text", ""),
              30)
        until(lambda e: e.get("event") == "phase" and e["step"] == "enrich"
              and e["phase"] == "live", 60)
        after = {o.labels["io.flowrun.step"]: o.id
                 for o in engine.observe({"io.flowrun.flow": name})}
        changed = sorted(step for step in before if before[step] != after.get(step))
        assert changed == ["enrich"]
        redeploys = [e for e in events if e.get("event") == "notice"
                     and e.get("text", "").startswith("redeploy ")]
        assert len(redeploys) == 1, redeploys  # one save, one redeploy
        out = flowrun("send", name, json.dumps({"id": "1", "customer": {
            "first": "A", "last": "B", "email": "a@b"}, "items": []}),
            "--expect", "enrich", "--timeout", "30").stdout
        assert '"v": 2' in out  # the new code is live

        # A burst of saves gives one redeploy.
        seen = len(events)
        for i in range(5):
            source.write_text(source.read_text() + f"\n# save {i}\n")
            time.sleep(0.01)
        until(lambda e: e.get("event") == "phase" and e["step"] == "enrich"
              and e["phase"] == "live", 60)
        # One more save, after the burst's redeploy is live: its redeploy comes after
        # anything the burst could still have caused (one loop, events in order), so
        # seeing it proves there was no second redeploy from the burst.
        source.write_text(source.read_text() + "\n# marker\n")
        until(lambda e: e.get("event") == "phase" and e["step"] == "enrich"
              and e["phase"] == "live", 60)
        redeploys = [e for e in events[seen:] if e.get("event") == "notice"
                     and e.get("text", "").startswith("redeploy ")]
        assert len(redeploys) == 2, redeploys  # the burst's one, then the marker's

        # A failed build leaves the running steps as they were, and says why.
        running = {o.labels["io.flowrun.step"]: o.id
                   for o in engine.observe({"io.flowrun.flow": name})}
        (crm / "requirements.txt").write_text("no-such-package-flowrun-test==9.9\n")
        failed = until(lambda e: e.get("event") == "notice"
                       and "redeploy failed" in e.get("text", ""), 120)
        assert "requirements.txt" in failed["text"]
        assert {o.labels["io.flowrun.step"]: o.id
                for o in engine.observe({"io.flowrun.flow": name})} == running
    finally:
        code = up.stop()
    assert code == 0
    assert engine.observe({"io.flowrun.flow": name}) == []


def test_a_trigger_snapshot_survives_a_restart(flow_factory: Any, engine: Any,
                                               tmp_path: Path) -> None:
    counter = make_component(
        tmp_path, "counter", "count",
        "def process(msg, cfg, snapshot, ctx):\n"
        "    n = (snapshot or {}).get('n', 0) + 1\n"
        "    ctx.emit('snapshot', {'n': n})\n"
        "    return {'n': n}\n", trigger=True)
    name = unique("snap")
    flow_factory(name, f"""  - id: count
    component: {counter}
    function: count
    interval: 0.2
  - {{id: sink, component: {COMPONENTS}/chat, function: post}}
""")
    first = [json.loads(line)["body"]["n"] for line in
             flowrun("tail", name, "count", "-n", "3").stdout.splitlines()]
    pid = engine.api.inspect_container(f"flowrun.{name}.count")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)  # Docker's restart policy brings it back
    wait_for(lambda: engine.api.inspect_container(f"flowrun.{name}.count")["RestartCount"],
             30, "the restart")
    after = [json.loads(line)["body"]["n"] for line in
             flowrun("tail", name, "count", "-n", "2").stdout.splitlines()]
    assert min(after) > max(first), (first, after)  # counting went on, not from 1


def test_an_attached_up_brings_back_what_goes_away(engine: Any, tmp_path: Path) -> None:
    name = unique("heal")
    path = write_flow(tmp_path, name, ORDERS_STEPS)
    up = AttachedUp(path, name)
    until = up.until
    order = json.dumps({"id": "h", "customer": {"first": "A", "last": "B", "email": "a@b"},
                        "items": []})
    try:
        until(notice("steps that go away are brought back"), 120)
        # `docker kill`: Docker's restart policy does not bring it back; flowrun does.
        first = engine.find(f"flowrun.{name}.enrich").id
        engine.api.kill(first)
        until(notice("heal enrich: killed"), 30)
        until(live("enrich"), 60)
        assert engine.find(f"flowrun.{name}.enrich").running
        # `docker rm -f`: gone from Docker altogether; flowrun makes it again.
        engine.api.remove_container(f"flowrun.{name}.notify", force=True)
        until(notice("heal notify: removed"), 30)
        until(live("notify"), 60)
        flowrun("send", name, order, "--expect", "notify", "--timeout", "60")
        # The broker stopped by hand: waited for, started again, and the flow resumes.
        engine.api.stop("flowrun-broker", timeout=10)
        until(notice("the broker went away"), 30)
        wait_for(lambda: (b := engine.find("flowrun-broker")) is not None and b.running, 60,
                 "the broker back")
        out = flowrun("send", name, order, "--expect", "notify", "--timeout", "90").stdout
        assert "Order h from A B" in out
        # `flowrun down` from another terminal is no fault to heal: the attached `up`
        # says so and ends, and nothing comes back.
        flowrun("down", name, "--grace", "0")
        until(notice("the flow was taken down"), 60)
        assert up.proc.wait(timeout=60) == 0
        assert engine.observe({"io.flowrun.flow": name}) == []
    finally:
        code = up.stop()
    assert code == 0
