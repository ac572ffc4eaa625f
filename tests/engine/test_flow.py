"""A three-step flow for real: five containers, RabbitMQ between them, mapped messages."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.conftest import (
    COMPONENTS,
    ORDERS_STEPS,
    RunningFlow,
    flowrun,
    make_component,
    unique,
    write_flow,
)

ORDER = {"id": "o-1", "customer": {"first": "Ada", "last": "Lovelace", "email": "ada@x.org"},
         "items": [{"price": 10}, {"price": 2.5}]}


def test_three_steps_run_as_five_live_containers(flow_factory: Any, engine: Any) -> None:
    name = unique("orders")
    flow = flow_factory(name, ORDERS_STEPS)
    steps = flow.steps()
    assert list(steps) == ["fetch", "mapper.fetch.enrich", "enrich", "mapper.enrich.notify",
                           "notify"]
    assert all(s["live"] and s["state"] == "running" for s in steps.values())
    assert [s["kind"] for s in steps.values()] == ["trigger", "mapper", "action", "mapper",
                                                   "action"]

    # In through the trigger's output, out of the last step, mapped on the way.
    out = flowrun("send", name, json.dumps(ORDER), "--expect", "notify", "--timeout", "30")
    message = json.loads(out.stdout.strip().splitlines()[-1])
    assert message["body"]["posted"] == "Order o-1 from Ada Lovelace <ada@x.org>: 12.5"
    assert message["body"]["contact"].startswith("c-")

    # Logs, per step and interleaved.
    for _ in range(50):
        if "posted: Order o-1" in flowrun("logs", name, "notify").stdout:
            break
        time.sleep(0.2)
    assert "posted: Order o-1" in flowrun("logs", name, "notify").stdout
    everything = flowrun("logs", name, "--tail", "50").stdout
    assert "notify                   | " in everything and "enrich" in everything

    # Status counts what went through; secrets never reach the output.
    status_text = flowrun("status", name).stdout
    assert "test-secret-key" not in status_text + flowrun("plan", "--json", str(flow.path)).stdout
    assert flow.steps()["notify"]["processed"] >= 1


def test_an_action_that_raises_reports_errors_and_goes_on(flow_factory: Any) -> None:
    name = unique("errors")
    flow_factory(name, ORDERS_STEPS)
    bad = {**ORDER, "customer": {"first": "No", "last": "Email"}}
    flowrun("send", name, json.dumps(bad))
    out = flowrun("send", name, json.dumps(ORDER), "--expect", "notify", "--timeout", "30")
    assert "Ada Lovelace" in out.stdout
    deadline = time.monotonic() + 20
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = RunningFlow(name, COMPONENTS).status()
        enrich = {s["step"]: s for s in status["steps"]}["enrich"]
        if enrich["errors"] == 1 and status["errors_queued"] == 1:
            break
        time.sleep(0.3)
    enrich = {s["step"]: s for s in status["steps"]}["enrich"]
    assert enrich["errors"] == 1
    assert status["errors_queued"] == 1
    assert enrich["restarts"] == 0
    assert "has no email" in flowrun("logs", name, "enrich").stdout


def test_down_leaves_nothing_behind(engine: Any, tmp_path: Any) -> None:
    name = unique("down")
    path = write_flow(tmp_path, name, ORDERS_STEPS)
    flowrun("up", "-d", str(path))
    assert len(engine.observe({"io.flowrun.flow": name})) == 5
    flowrun("down", name, "--purge", "--grace", "2")
    assert engine.observe({"io.flowrun.flow": name}) == []
    assert engine.networks(name) == []
    assert engine.get_record(f"flowrun.{name}.record") is None
    # Gone: its name is unknown now, and each command says so (exit 2), not an empty 0.
    for command in (["status", name], ["logs", name, "fetch"], ["down", name]):
        result = flowrun(*command, check=False)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert f"no flow named {name}" in result.stderr
        assert "Traceback" not in result.stderr, command


def test_a_step_that_cannot_start_fails_within_the_timeout(tmp_path: Any, engine: Any) -> None:
    broken = make_component(tmp_path, "broken", "go",
                            "raise ImportError('this component cannot start')\n")
    name = unique("broken")
    path = write_flow(tmp_path, name, f"""  - id: src
    component: {COMPONENTS}/shop
    function: newOrders
    config: {{limit: 0}}
  - {{id: bad, component: {broken}, function: go}}
""")
    try:
        result = flowrun("up", "-d", "--timeout", "25", str(path), check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        last = result.stderr
        assert "not live after 25 s: bad" in last
        assert "this component cannot start" in last
    finally:
        flowrun("down", "--purge", "--grace", "0", name, check=False)
