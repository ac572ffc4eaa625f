"""`flowrun trace` on a real flow: every message recorded by the platform services,
threads as trees across every real step, errors where they happened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ORDERS_STEPS, ROOT, flowrun, unique, wait_for

ORDER = {"id": "o-7", "customer": {"first": "Ada", "last": "L", "email": "ada@x.org"},
         "items": [{"price": 2}]}


def chain(node: dict[str, Any]) -> list[str]:
    """The steps along the first branch of a tree."""
    steps = [node["step"]]
    while node["children"]:
        node = node["children"][0]
        steps.append(node["step"])
    return steps


def test_trace_follows_a_message_through_every_real_step(flow_factory: Any) -> None:
    name = unique("trace")
    flow_factory(name, ORDERS_STEPS)
    flowrun("send", name, json.dumps(ORDER), "--expect", "notify", "--timeout", "30")
    bad = {**ORDER, "id": "o-8", "customer": {"first": "No", "last": "Email"}}
    flowrun("send", name, json.dumps(bad))

    def traced() -> Any:
        data = json.loads(flowrun("trace", name, "-n", "10", "--json").stdout)
        return data["threads"] if len(data["threads"]) >= 2 else None

    threads = wait_for(traced, 30, "both threads recorded")
    good = next(t for t in threads if t["tree"][0]["body"].get("id") == "o-7")
    (root,) = good["tree"]
    assert chain(root) == ["fetch", "mapper.fetch.enrich", "enrich", "mapper.enrich.notify",
                           "notify"]
    node = root["children"][0]
    while node:
        # Each hop: time in the queue before the step, and time in the step.
        assert node["queued_ms"] is not None and node["in_step_ms"] is not None, node
        assert node["threadId"] == root["messageId"]
        node = node["children"][0] if node["children"] else None
    assert good["span_ms"] > 0

    failed = next(t for t in threads if t["tree"][0]["body"].get("id") == "o-8")
    error = failed["tree"][0]["children"][0]["children"][0]
    assert error["kind"] == "error" and error["step"] == "enrich"
    assert error["error"]["message"] and error["body"]["name"] == "No Email"

    # The text form: one tree per thread, a thread on its own by id.
    text = flowrun("trace", name, "--thread", good["threadId"][:8]).stdout
    assert text.count("thread ") == 1 and "└─ notify  message" in text.replace("│", " ")


def test_a_flow_can_turn_recording_off(engine: Any, tmp_path: Path) -> None:
    name = unique("notrace")
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\ntrace: false\nsteps:\n{ORDERS_STEPS}")
    try:
        flowrun("up", "-d", "--timeout", "120", str(path))
        flowrun("send", name, json.dumps(ORDER), "--expect", "notify", "--timeout", "30")
        out = subprocess.run([sys.executable, "-m", "flowrun", "trace", name], cwd=ROOT,
                             capture_output=True, text=True)
        assert out.returncode == 0 and "is not recorded" in out.stderr
        assert "no message recorded" in out.stdout
    finally:
        flowrun("down", "--purge", "--grace", "0", name, check=False)
