"""A thread of a flow as a tree: which step made which message out of which.

Pure: built from the records the platform services keep (one per message,
error or rebound a step published, with its lineage headers and times).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    record: dict[str, Any]
    children: list[Node] = field(default_factory=list)
    queued_ms: float | None = None  # in the queue before its step began on the input

    @property
    def step(self) -> str:
        return str(self.record.get("step", "?"))

    @property
    def kind(self) -> str:
        return str(self.record.get("kind", "message"))

    @property
    def in_step_ms(self) -> float | None:
        if self.kind in ("rebound", "dead"):  # they carry the times of another message
            return None
        start, end = self.record.get("start"), self.record.get("end")
        if isinstance(start, int | float) and isinstance(end, int | float) and end >= start:
            return float(end - start)
        return None

    def to_json(self) -> dict[str, Any]:
        return {**self.record, "queued_ms": self.queued_ms, "in_step_ms": self.in_step_ms,
                "children": [c.to_json() for c in self.children]}


def build(records: Sequence[dict[str, Any]]) -> list[Node]:
    """Roots first (what the trigger made, or a message whose parent is not
    recorded), each with the messages made from it as children, in order."""
    nodes = [Node(r) for r in records]
    by_id: dict[str, list[Node]] = {}
    for node in nodes:
        message_id = node.record.get("messageId")
        # An error or a rebound shares its id space with messages but is never a
        # parent; a rebound that comes back is the same message again.
        if message_id and node.kind == "message":
            by_id.setdefault(str(message_id), []).append(node)
    roots: list[Node] = []
    for node in nodes:
        # The platform's sailor gives every message one input produced the same id:
        # its children are shared out in order (the next step took them in order,
        # one output each for a mapper), to the one with the fewest so far.
        # A rebound or a dead letter is of the message it is (same id), not of that
        # one's parent.
        key = "messageId" if node.kind in ("rebound", "dead") else "parentMessageId"
        candidates = by_id.get(str(node.record.get(key) or ""), [])
        parent = min(candidates, key=lambda c: len(c.children)) if candidates else None
        if parent is None or parent is node:
            roots.append(node)
            continue
        parent.children.append(node)
        start, end = node.record.get("start"), parent.record.get("end")
        if node.kind not in ("rebound", "dead") and isinstance(start, int | float) and isinstance(
                end, int | float):
            node.queued_ms = float(max(0, start - end))
    return roots


def span_ms(records: Sequence[dict[str, Any]]) -> float | None:
    """From the thread's first start to its last end."""
    starts = [r["start"] for r in records if isinstance(r.get("start"), int | float)]
    ends = [r["end"] for r in records if isinstance(r.get("end"), int | float)]
    return float(max(ends) - min(starts)) if starts and ends else None
