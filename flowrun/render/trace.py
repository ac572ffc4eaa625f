"""`flowrun trace` as text: one tree per thread, one line per message a step made."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO

from flowrun.core.masking import mask
from flowrun.core.trace import Node, build, span_ms

BODY_CHARS = 120


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f} ms"


def _body(value: Any, full: bool, truncated: bool) -> str:
    text = value if truncated and isinstance(value, str) else json.dumps(
        mask(value), default=str, ensure_ascii=False)
    if not full and len(text) > BODY_CHARS:
        return text[:BODY_CHARS] + "…"
    return text + (" …(cut by the recorder)" if truncated else "")


def _line(node: Node, full: bool) -> str:
    r = node.record
    timing = []
    if node.queued_ms is not None:
        timing.append(f"queued {_ms(node.queued_ms)}")
    if node.in_step_ms is not None:
        timing.append(f"in step {_ms(node.in_step_ms)}")
    head = f"{node.step}  {node.kind}"
    if node.kind == "rebound":
        head += f" #{r.get('reboundIteration') or 1}"
    if node.kind == "dead":
        head += f" ({r.get('reason') or 'dead-lettered'}, in <flow>:dead)"
    if node.children and len(node.children) > 1:
        head += f"  -> {len(node.children)} messages from it"
    detail = ", ".join(timing)
    if node.kind == "error" and isinstance(r.get("error"), dict):
        err = r["error"]
        body = f"{err.get('name')}: {err.get('message')}  (input: " + _body(
            r.get("body"), full, bool(r.get("truncated"))) + ")"
        if full and err.get("stack"):
            body += "\n" + str(err["stack"])
    elif r.get("unreadable"):
        body = f"(unreadable: {r['unreadable']})"
    else:
        body = _body(r.get("body"), full, bool(r.get("truncated")))
    passthrough = r.get("passthrough")
    if isinstance(passthrough, dict) and passthrough:
        # Each step's output, kept in the message (the flow has passthrough on): its
        # steps in short, the whole of it with --full.
        body += ("\n    passthrough: " + _body(passthrough, True, False) if full
                 else f"  (passthrough: {', '.join(map(str, passthrough))})")
    return f"{head}  [{detail or 'times unknown'}]  {body}"


def print_threads(threads: Sequence[dict[str, Any]], out: TextIO, full: bool = False) -> None:
    for thread in threads:
        records = thread["records"]
        span = span_ms(records)
        steps = len({r.get("step") for r in records})
        errors = sum(1 for r in records if r.get("kind") == "error")
        out.write(f"thread {thread['threadId']}  {len(records)} message(s) through {steps} "
                  f"step(s)" + (f", {errors} error(s)" if errors else "")
                  + (f", {_ms(span)}" if span is not None else "") + "\n")
        for root in build(records):
            _tree(root, "", True, out, full)
        out.write("\n")
    out.flush()


def _tree(node: Node, indent: str, last: bool, out: TextIO, full: bool) -> None:
    branch = "└─ " if last else "├─ "
    lines = _line(node, full).split("\n")
    out.write(f"{indent}{branch}{lines[0]}\n")
    more = indent + ("   " if last else "│  ")
    for extra in lines[1:]:
        out.write(f"{more}{extra}\n")
    for i, child in enumerate(node.children):
        _tree(child, more, i == len(node.children) - 1, out, full)


def threads_json(threads: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"threadId": t["threadId"], "span_ms": span_ms(t["records"]),
             "tree": [mask(n.to_json()) for n in build(t["records"])]} for t in threads]
