"""`flowrun send` and `flowrun tail`: push messages into a running flow as one of its
steps, and wait for what comes out of a step (a CI job's smoke test)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from flowrun.broker.messaging import Sender, check_size, make_message, tap
from flowrun.commands.resolve import check_step, resolve_flow, running_broker, trigger_of
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import BadInput, FlowFailed


def json_body(raw: str) -> Any:
    """Strict JSON: NaN and Infinity, which Python's json takes, are not JSON (a Node.js
    step could not read the message)."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not a JSON value")

    try:
        return json.loads(raw, parse_constant=refuse)
    except ValueError as e:
        raise BadInput(f"BODY is not JSON ({e}); e.g. '{{\"name\": \"Ada\"}}'") from None


def send(engine: ContainerEngine, flow_arg: str | None, body: Any, *, as_step: str | None,
         count: int, expect_step: str | None, expect_count: int | None, timeout: float,
         out: Callable[[str], None], said: Callable[[str], None]) -> None:
    """Publish `count` messages as `as_step` (default: the trigger); with `expect_step`,
    wait for what comes out of it and hand each to `out` (a tap bound before the
    publish, so nothing is missed)."""
    flow = resolve_flow(engine, flow_arg)
    if as_step:
        check_step(engine, flow, as_step, "--as")
    if expect_step:
        check_step(engine, flow, expect_step, "--expect")
    messages = [make_message(body, {"seq": i, "sentAt": time.time()}) for i in range(count)]
    for message in messages[:1]:
        check_size(message)  # too large for the broker: exit 2 before anything is sent
    broker = running_broker(engine, timeout or 30.0)
    source = as_step or trigger_of(engine, flow)

    def publish() -> None:
        sender = Sender(broker, flow, timeout=timeout or 30.0)
        try:
            for message in messages:
                sender.send(source, message)
        finally:
            sender.close()

    if not expect_step:
        publish()
        said(f"sent {count} message(s) into {flow} as {source}")
        return
    want = expect_count or count
    with tap(broker, flow, expect_step) as t:
        publish()
        got = t.take(want, timeout, lambda m: out(json.dumps(m)))
    if got < want:
        raise FlowFailed(f"{got} of {want} message(s) came out of {expect_step} "
                         f"within {timeout:g} s")


def tail(engine: ContainerEngine, flow_arg: str | None, step: str, *, count: int,
         timeout: float, body_only: bool, out: Callable[[str], None]) -> None:
    flow = resolve_flow(engine, flow_arg)
    check_step(engine, flow, step, "STEP")
    with tap(running_broker(engine, timeout or 30.0), flow, step) as t:
        got = t.take(count, timeout,
                     lambda m: out(json.dumps(m.get("body") if body_only else m)))
    if got < count:
        raise FlowFailed(f"{got} of {count} message(s) came out of {step} within {timeout:g} s")
