"""A message that crashes its step again and again ends in the dead-letter queue."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import COMPONENTS, flowrun, make_component, unique


def test_poison_message_is_dead_lettered_and_counted(flow_factory: Any, tmp_path: Path) -> None:
    fragile = make_component(
        tmp_path, "fragile", "handle",
        "import os\n"
        "def process(msg):\n"
        "    if msg['body'].get('poison'):\n"
        "        os._exit(3)  # a hard crash, not an exception: the process dies\n"
        "    return msg['body']\n")
    name = unique("poison")
    flow = flow_factory(name, f"""  - id: src
    component: {COMPONENTS}/shop
    function: newOrders
    config: {{limit: 0}}
  - {{id: handle, component: {fragile}, function: handle}}
""")
    flowrun("send", name, json.dumps({"poison": True}))
    out = flowrun("send", name, json.dumps({"ok": 1}), "--expect", "handle",
                  "--timeout", "90").stdout
    assert '"ok": 1' in out
    deadline = time.monotonic() + 30
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = flow.status()
        if status["dead_letters"] == 1:
            break
        time.sleep(0.5)
    assert status["dead_letters"] == 1
    handle = {s["step"]: s for s in status["steps"]}["handle"]
    assert handle["restarts"] >= 4
    assert "dead-lettered" in flowrun("status", name).stdout
