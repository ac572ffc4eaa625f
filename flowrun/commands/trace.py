"""`flowrun trace`: what happened to the latest messages of a flow, step by step."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import yaml

from flowrun.broker.platform import Services, find_services
from flowrun.broker.server import find_broker
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import FlowFailed
from flowrun.render.trace import print_threads, threads_json


def _services(engine: ContainerEngine) -> Services:
    broker = find_broker(engine)
    services = find_services(engine, broker) if broker is not None else None
    if services is None:
        raise FlowFailed("the platform services are not running (they record the trace); "
                         "`flowrun up FLOW` starts them")
    return services


def show_trace(engine: ContainerEngine, flow: str, *, count: int, thread: str | None, follow: bool,
               full: bool, as_json: bool) -> None:
    services = _services(engine)
    answer = services.trace(flow, count, thread)
    if not answer.get("recording"):
        sys.stderr.write(f"flow {flow} is not recorded (`trace: false` in its flow file, "
                         "or it is not up)\n")
    threads = answer.get("threads") or []
    if not follow:
        if as_json:
            print(json.dumps({"flow": flow, "threads": threads_json(threads)}, indent=2))
        else:
            if not threads:
                print(f"no message recorded for {flow} yet")
            print_threads(threads, sys.stdout, full)
        return
    # Followed: a thread is shown once it has been quiet for a second (its tree is
    # then complete), and again if more of it comes later.
    shown: dict[str, int] = {t["threadId"]: len(t["records"]) for t in threads}
    try:
        while True:
            time.sleep(1.0)
            latest = services.trace(flow, 50, thread).get("threads") or []
            now_ms = time.time() * 1000
            for t in latest:
                records = t["records"]
                if shown.get(t["threadId"]) == len(records):
                    continue
                if now_ms - max(r.get("at", 0) for r in records) < 1000:
                    continue  # still moving
                shown[t["threadId"]] = len(records)
                _emit(t, full, as_json)
    except KeyboardInterrupt:
        return


def _emit(thread: dict[str, Any], full: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps(threads_json([thread])[0]), flush=True)
    else:
        print_threads([thread], sys.stdout, full)


# ---------------------------------------------------------------- --as-test

_VOLATILE_KEY = re.compile(
    r"(^|[_-])(id|uuid|guid|time|timestamp|date|at|created|updated|now)$|^(ts|seq)$",
    re.IGNORECASE)
_VOLATILE_CAMEL = re.compile(r"[a-z](Id|Uuid|At|Time|Date|Timestamp)$")  # orderId, sentAt
_VOLATILE_TEXT = re.compile(
    r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"
    r"|^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}", re.IGNORECASE)


def _steady(value: Any) -> tuple[Any, bool]:
    """`value` without what differs from run to run (ids, times), and whether any
    was left out."""
    if isinstance(value, dict):
        out, cut = {}, False
        for k, v in value.items():
            if _VOLATILE_KEY.search(str(k)) or _VOLATILE_CAMEL.search(str(k)) or _volatile(v):
                cut = True
                continue
            out[k], inner = _steady(v)
            cut = cut or inner
        return out, cut
    if isinstance(value, list):
        items = [_steady(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False


def _volatile(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_VOLATILE_TEXT.match(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        now = time.time()
        return abs(value - now) < 3.2e8 or abs(value / 1000 - now) < 3.2e8  # epoch s or ms
    return False


def thread_as_test(engine: ContainerEngine, flow: str, thread: str) -> str:
    """A recorded thread as a test case: its input sent as it was, and what came out of
    each step as the case's expectations (volatile fields left out)."""
    threads = _services(engine).trace(flow, 1, thread).get("threads") or []
    if not threads:
        raise FlowFailed(f"no thread {thread!r} recorded for flow {flow}; `flowrun trace "
                         f"{flow}` lists the latest")
    records = threads[0]["records"]
    ids = {r.get("messageId") for r in records if r.get("kind") == "message"}
    root = next((r for r in records if r.get("kind") == "message"
                 and r.get("parentMessageId") not in ids), None)
    if root is None:
        raise FlowFailed(f"thread {thread} has no message to start a case from")
    send: dict[str, Any] = {"body": root.get("body")}
    order = _step_order(engine, flow)
    if order and root.get("step") != order[0] and root.get("step") in order:
        at = order.index(str(root.get("step")))
        if at + 1 < len(order):
            send["to"] = order[at + 1]
    expect: list[dict[str, Any]] = []
    counted: dict[str, dict[str, Any]] = {}
    for r in records:
        if r is root or r.get("kind") not in ("message", "error"):
            continue
        if r.get("kind") == "error":
            error = r.get("error") or {}
            entry = {"error": r.get("step"),
                     "message_contains": str(error.get("message") or "")[:200]}
        elif r.get("truncated"):
            entry = {"step": r.get("step")}  # too large to have been recorded whole
        else:
            body, cut = _steady(r.get("body"))
            entry = {"step": r.get("step"), "body_contains" if cut else "body_equals": body}
        key = json.dumps(entry, sort_keys=True, default=str)
        if key in counted:
            counted[key]["count"] = counted[key].get("count", 1) + 1
        else:
            counted[key] = entry
            expect.append(entry)
    case = [{"name": f"recorded thread {thread[:8]}", "send": send, "expect": expect}]
    head = (f"# flowrun trace {flow} --thread {thread} --as-test\n"
            f"# Add it under `tests:` in a test file (flow: ...) and check it reads as meant.\n")
    return head + yaml.safe_dump(case, sort_keys=False, allow_unicode=True, width=100)


def _step_order(engine: ContainerEngine, flow: str) -> list[str]:
    from flowrun.commands.status import flow_record

    return [p.step for p in flow_record(engine, flow) or []]
