"""Threads as trees, and how `flowrun trace` prints them: pure, from scripted records."""

from __future__ import annotations

import io

from flowrun.core.trace import build, span_ms
from flowrun.render.trace import print_threads, threads_json


def rec(seq: int, step: str, mid: str, parent: str | None, start: int | None, end: int,
        kind: str = "message", **extra: object) -> dict[str, object]:
    return {"seq": seq, "step": step, "kind": kind, "messageId": mid,
            "parentMessageId": parent, "threadId": "t", "start": start, "end": end,
            "body": {"n": seq}, **extra}


# A trigger's message, a mapper, then a Node.js step that emits 3 (one shared id, as the
# platform's sailor does), each mapped once more.
THREAD = [
    rec(1, "clock", "a", None, 1000, 1001),
    rec(2, "mapper.clock.split", "b", "a", 1003, 1004),
    rec(3, "split", "c", "b", 1006, 1007),
    rec(4, "split", "c", "b", 1006, 1008),
    rec(5, "split", "c", "b", 1006, 1009),
    rec(6, "mapper.split.notify", "d1", "c", 1010, 1011),
    rec(7, "mapper.split.notify", "d2", "c", 1012, 1013),
    rec(8, "mapper.split.notify", "d3", "c", 1014, 1015),
    rec(9, "notify", "e", "d2", 1016, 1017, kind="error",
        error={"name": "Error", "message": "no", "stack": "at x"}),
    rec(10, "split", "b", "a", 1003, 1004, kind="rebound", reboundIteration=1),
]


def test_a_thread_is_a_tree_of_what_each_step_made() -> None:
    (root,) = build(THREAD)
    assert root.step == "clock" and root.queued_ms is None and root.in_step_ms == 1.0
    (mapper,) = root.children
    assert mapper.queued_ms == 2.0  # 1003 (mapper began) - 1001 (clock published)
    splits = [c for c in mapper.children if c.kind == "message"]
    assert len(splits) == 3
    # One mapped message under each of the three outputs that share an id.
    assert [len(s.children) for s in splits] == [1, 1, 1]
    error = splits[1].children[0].children[0]
    assert error.kind == "error" and error.step == "notify"
    # A rebound hangs under the message it sends back, without misleading times.
    rebound = next(c for c in mapper.children if c.kind == "rebound")
    assert rebound.queued_ms is None and rebound.in_step_ms is None
    assert span_ms(THREAD) == 17.0


def test_a_message_whose_parent_was_not_recorded_is_a_root() -> None:
    roots = build([rec(1, "a", "x", "gone", 1, 2), rec(2, "b", "y", "x", 3, 4)])
    assert [r.step for r in roots] == ["a"] and roots[0].children[0].step == "b"


def test_printed_trees_mask_secrets_and_cut_long_bodies() -> None:
    records = [rec(1, "fetch", "a", None, 1, 2),
               {**rec(2, "enrich", "b", "a", 3, 5), "body": {"apiKey": "s3cret",
                                                              "text": "x" * 500}}]
    out = io.StringIO()
    print_threads([{"threadId": "t", "records": records}], out)
    text = out.getvalue()
    assert "s3cret" not in text and '"apiKey": "***"' in text
    assert "x" * 200 not in text and "…" in text
    assert "enrich  message  [queued 1.0 ms, in step 2.0 ms]" in text
    full = io.StringIO()
    print_threads([{"threadId": "t", "records": records}], full, full=True)
    assert "x" * 500 in full.getvalue()
    tree = threads_json([{"threadId": "t", "records": records}])[0]["tree"]
    assert tree[0]["children"][0]["body"]["apiKey"] == "***"
