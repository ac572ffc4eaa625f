"""flowrun's pytest plugin (registered with pytest when flowrun is installed): flow
tests written in Python with plain asserts.

    def test_a_paid_order_is_posted(flowrun_flow):
        flow = flowrun_flow("flows/orders.yaml")      # up once per module, down after
        thread = flow.send({"id": "o-1", "total": 30})
        [posted] = flow.expect(thread, "notify")
        assert posted["text"].startswith("order o-1")

        answer = flow.http("POST", body={"name": "Ada"})   # a flow called over HTTP
        assert answer.status == 200 and answer.body["greeting"] == "Hello, Ada!"

        [event] = flow.exec("enrich", {"email": "a@b.c"})  # one step alone
        assert event["event"] == "data"

Each case follows its own thread, as `flowrun test` does: tests see only what their
own messages caused, whatever else the flow does meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


class Flow:
    """A running flow, for tests."""

    def __init__(self, path: Path, engine: Any) -> None:
        from flowrun.broker.platform import find_services
        from flowrun.broker.server import find_broker
        from flowrun.broker.threads import ThreadWatch
        from flowrun.core.load import load_plan

        self.path, self.engine = path, engine
        self.plan = load_plan(path, os.environ)
        self.name = self.plan.flow
        self.broker = find_broker(engine)
        if self.broker is None:
            raise RuntimeError("the broker is not running")
        self.watch = ThreadWatch(self.broker, self.name, [s.id for s in self.plan.steps])
        services = find_services(engine, self.broker)
        self.url = services.webhook_url(self.name) if services and self.plan.webhook else None

    def send(self, body: Any, *, to: str | None = None,
             headers: dict[str, Any] | None = None) -> str:
        """One message as the trigger emitted it (or into step `to`'s input); its thread."""
        from flowrun.commands.test import send_message

        if to is not None and self.plan.step(to) is None:
            raise ValueError(f"flow {self.name} has no step {to!r}")
        return send_message(self.broker, self.plan, to, body, headers or {})

    def expect(self, thread: str, step: str, count: int = 1, timeout: float = 10.0,
               errors: bool = False) -> list[Any]:
        """The bodies of the first `count` messages out of `step` in `thread` (with
        `errors`: its errors, as {name, message, body}); fewer when `timeout` ends."""
        kind = "error" if errors else "message"

        def mine(seen: list[Any]) -> list[Any]:
            return [e for e in seen if e.step == step and e.kind == kind]

        seen = mine(self.watch.wait(thread, lambda s: len(mine(s)) >= count, timeout))
        if errors:
            return [{"name": e.name, "message": e.message, "body": e.body} for e in seen]
        return [e.body for e in seen][:count]

    def http(self, method: str = "POST", path: str = "", body: Any = None,
             headers: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
        """An HTTP request to the flow (called over HTTP); the answer, with `status`,
        `headers`, `body` and `thread` (the request's id)."""
        from flowrun.commands.test import http_call

        if self.url is None:
            raise ValueError(f"flow {self.name} is not called over HTTP")
        response, _thread = http_call(self.url, method, path, headers or {}, body, timeout)
        return response

    def exec(self, step: str, body: Any = None, snapshot: Any = None,
             timeout: float = 60.0) -> list[dict[str, Any]]:
        """Step `step`'s function once, alone, in its image: the events it emitted."""
        from flowrun.commands.exec import exec_step, step_of

        ran = exec_step(self.engine, self.plan, step_of(self.plan, step, "step"),
                        body if body is not None else {}, snapshot)
        return ran.events

    def close(self) -> None:
        self.watch.close()


def _flowrun(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowrun", *args], capture_output=True,
                          text=True, timeout=900, env=dict(os.environ))


@pytest.fixture(scope="module")
def flowrun_flow() -> Iterator[Callable[..., Flow]]:
    """`flowrun_flow(path, keep=False)`: the flow of that file, up (brought up once per
    test module, or used as it runs), taken down at the module's end when this brought
    it up (unless `keep`)."""
    from flowrun.commands.resolve import connect_engine
    from flowrun.commands.status import running_flows

    engine = connect_engine()
    flows: dict[Path, Flow] = {}
    brought: list[tuple[str, bool]] = []

    def up(path: str | Path, keep: bool = False) -> Flow:
        key = Path(path).resolve()
        if key in flows:
            return flows[key]
        from flowrun.core.load import load_plan

        name = load_plan(key, os.environ).flow
        running = name in running_flows(engine)
        done = _flowrun("up", "-d", "--progress", "plain", str(key))
        if done.returncode != 0:
            pytest.fail(f"flowrun up {path} failed (exit {done.returncode}):\n"
                        f"{done.stderr[-3000:] or done.stdout[-3000:]}")
        brought.append((name, not running and not keep))
        flows[key] = Flow(key, engine)
        return flows[key]

    yield up
    for flow in flows.values():
        flow.close()
    for name, down in brought:
        if down:
            _flowrun("down", "--purge", "--grace", "2", name)
