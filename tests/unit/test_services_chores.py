"""The platform services' chores against a fake channel: snapshots folded and saved
before they are acked, errors counted per step, ticks once per interval and none
while the last is unread, and one failing chore stopping none of the others."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pika.exceptions
import pytest

from flowrun.contract import names, traced
from flowrun.contract.spec import AmqpAccess, FlowSpec, StepEntry, TraceSpec
from flowrun.services.state import Flow, Recorder

AMQP = AmqpAccess(host="broker", port=5672, user="u", password="p")


class FakeChannel:
    def __init__(self) -> None:
        self.queues: dict[str, list[tuple[Any, Any, bytes]]] = {}
        self.acked: list[tuple[int, bool]] = []
        self.published: list[tuple[str, str, bytes, Any]] = []
        self.tag = 0
        self.fail_on: dict[str, Exception] = {}
        self.is_open = True

    def put(self, queue: str, key: str, body: Any, headers: dict[str, Any] | None = None) -> None:
        self.tag += 1
        self.queues.setdefault(queue, []).append((
            SimpleNamespace(delivery_tag=self.tag, routing_key=key),
            SimpleNamespace(headers=headers or {}), json.dumps(body).encode()))

    def basic_get(self, queue: str, auto_ack: bool = False) -> tuple[Any, Any, Any]:
        if queue in self.fail_on:
            raise self.fail_on[queue]
        waiting = self.queues.get(queue) or []
        return waiting.pop(0) if waiting else (None, None, None)

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acked.append((tag, multiple))

    def queue_declare(self, queue: str, passive: bool = False) -> Any:
        return SimpleNamespace(method=SimpleNamespace(
            message_count=len(self.queues.get(queue) or [])))

    def basic_publish(self, exchange: str, key: str, body: bytes, properties: Any) -> None:
        self.published.append((exchange, key, body, properties))
        self.queues.setdefault(key, []).append((None, properties, body))


@pytest.fixture
def flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Flow, FakeChannel]:
    f = Flow(tmp_path, "f", "secret")
    f.spec = FlowSpec(vhost="flowrun.f", snapshot_queue="f:snapshots",
                      error_tally_queue="f:error-tally", dead_letter_queue="f:dead", steps={
                          "clock": StepEntry(kind="trigger", runtime="node", tick_interval=1.0,
                                             input_queue="f:clock:messages"),
                          "a": StepEntry(kind="action", runtime="python")})
    channel = FakeChannel()
    monkeypatch.setattr(f, "channel", lambda amqp: channel)
    return f, channel


def test_snapshots_are_folded_and_on_disk_before_they_are_acked(
        flow: tuple[Flow, FakeChannel]) -> None:
    f, ch = flow
    ch.put("f:snapshots", "f.clock.snapshot", {"n": 1, "keep": True}, {"snapshotEvent": "snapshot"})
    ch.put("f:snapshots", "f.clock.snapshot", {"n": 2}, {"snapshotEvent": "updateSnapshot"})
    ch.put("f:snapshots", "f.other-flow-key", {"x": 1})
    saved: list[Any] = []
    original = f.save

    def save(what: str) -> None:
        assert ch.acked == [], "acked before saved"
        saved.append(dict(f.snapshots))
        original(what)

    f.save = save  # type: ignore[method-assign]
    f.drain_snapshots(AMQP)
    assert f.snapshots == {"clock": {"n": 2, "keep": True}}
    assert saved and ch.acked == [(3, True)]
    assert json.loads((f.dir / "snapshots.json").read_text()) == f.snapshots


def test_errors_are_counted_per_step(flow: tuple[Flow, FakeChannel]) -> None:
    f, ch = flow
    for key in ("f.a.error", "f.a.error", "f.mapper.clock.a.error", "f.a.message"):
        ch.put("f:error-tally", key, {})
    f.count_errors(AMQP)
    assert f.errors == {"a": 2, "mapper.clock.a": 1}


def test_a_tick_each_interval_and_none_while_the_last_is_unread(
        flow: tuple[Flow, FakeChannel]) -> None:
    f, ch = flow
    f.tick(AMQP, now=100.0)
    assert [(e, k) for e, k, _b, _p in ch.published] == [("", "f:clock:messages")]
    headers = ch.published[0][3].headers
    assert headers["messageId"] == headers["threadId"] and headers["taskId"] == "f"
    f.tick(AMQP, now=100.5)  # within the interval
    f.tick(AMQP, now=101.0)  # due, but the last is unread
    assert len(ch.published) == 1
    ch.queues["f:clock:messages"].clear()
    f.tick(AMQP, now=102.1)
    assert len(ch.published) == 2


def test_a_failing_chore_stops_none_of_the_others(flow: tuple[Flow, FakeChannel]) -> None:
    f, ch = flow
    ch.fail_on["f:snapshots"] = pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND")
    ch.put("f:error-tally", "f.a.error", {})
    f.look_after(AMQP, now=5.0)
    assert f.errors == {"a": 1}
    assert len(ch.published) == 1  # ticked all the same


def test_a_flow_taken_down_while_its_chores_run_is_no_error(
        flow: tuple[Flow, FakeChannel], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    f, ch = flow

    def taken_down(amqp: AmqpAccess) -> Any:
        f.spec = None  # `down` handed it back between two chores
        return f._spec()

    monkeypatch.setattr(f, "channel", taken_down)
    f.look_after(AMQP, now=1.0)
    assert "Traceback" not in capsys.readouterr().out


BATCHES = SimpleNamespace(exchange=names.trace_exchange("f"), routing_key="")


def _tapped(exchange: str, key: str) -> Any:
    return SimpleNamespace(exchange=exchange, routing_key=key)


def test_the_recorder_records_a_tapped_step_s_publishes_and_sees_its_marks(
        flow: tuple[Flow, FakeChannel]) -> None:
    f, _ch = flow
    assert f.spec is not None
    f.spec = dataclasses.replace(f.spec, trace_queue="f:trace", trace=TraceSpec(
        arguments={}, exchange="f:trace", tapped=[names.step_exchange("f", "clock")]))
    recorder = Recorder(f, AMQP, "f:trace")
    recorder._on_copy(None, _tapped("f.clock", "f.clock.message"),
                      SimpleNamespace(headers={"messageId": "m1"}), b"x")
    recorder._on_copy(None, _tapped("f.clock", "f.clock.live"),  # not a message
                      SimpleNamespace(headers={}), b"{}")
    # On the tapped exchange a key of another step's: not the clock's to give.
    recorder._on_copy(None, _tapped("f.clock", "f.a.message"),
                      SimpleNamespace(headers={"messageId": "forged"}), b"y")
    # An exchange the trace does not tap (a Python step sends batches).
    recorder._on_copy(None, _tapped("f.a", "f.a.message"),
                      SimpleNamespace(headers={"messageId": "untapped"}), b"z")
    reached = recorder._reached["abc"] = threading.Event()
    recorder._on_copy(None, _tapped("", "f:trace"), SimpleNamespace(
        headers={Recorder.FLUSH_HEADER: b"abc"}), b"")
    assert reached.is_set() and "abc" not in recorder._reached
    assert [(r["step"], r["kind"], r["messageId"]) for r in f.trace] == [
        ("clock", "message", "m1")]


def _batch(*publishes: tuple[str, dict[str, Any], bytes]) -> bytes:
    return b"".join(traced.record(key, headers, body, 1_000 + i)
                    for i, (key, headers, body) in enumerate(publishes))


def test_the_recorder_takes_each_record_of_a_step_s_batch(
        flow: tuple[Flow, FakeChannel]) -> None:
    f, _ch = flow
    recorder = Recorder(f, AMQP, "f:trace")
    batch = _batch(("f.a.message", {"messageId": "m1", "threadId": "t", "x-other": 1}, b"one"),
                   ("f.a.snapshot", {}, b"{}"),  # not a message of a thread
                   ("f.a.error", {"messageId": "m2", "parentMessageId": "m1"}, b"two"))
    recorder._on_copy(None, BATCHES, SimpleNamespace(headers=None, user_id="f.a"), batch)
    assert [(r["step"], r["kind"], r["messageId"], r["raw"]) for r in f.trace] == [
        ("a", "message", "m1", b"one"), ("a", "error", "m2", b"two")]
    assert f.trace[1]["parentMessageId"] == "m1" and f.trace[0]["threadId"] == "t"
    assert [r["at"] for r in f.trace] == [1_000, 1_002]  # when published, not received


def test_a_step_speaks_for_its_own_publishes_only(flow: tuple[Flow, FakeChannel]) -> None:
    f, _ch = flow
    recorder = Recorder(f, AMQP, "f:trace")
    claims = _batch(("f.b.message", {"messageId": "forged"}, b"x"),
                    ("f.a.message", {"messageId": "mine"}, b"y"))
    recorder._on_copy(None, BATCHES, SimpleNamespace(headers=None, user_id="f.a"), claims)
    recorder._on_copy(None, BATCHES, SimpleNamespace(headers=None, user_id=None), claims)
    recorder._on_copy(None, BATCHES, SimpleNamespace(headers=None, user_id="g.b"), claims)
    assert [r["messageId"] for r in f.trace] == ["mine"]
    # flowrun's host sends as any step, as the broker's admin (the services' user)
    recorder._on_copy(None, BATCHES, SimpleNamespace(headers=None, user_id=AMQP.user), claims)
    assert [r["messageId"] for r in f.trace] == ["mine", "forged", "mine"]


def test_a_batch_cut_short_keeps_what_came_before_the_cut(
        flow: tuple[Flow, FakeChannel], capsys: pytest.CaptureFixture[str]) -> None:
    f, _ch = flow
    recorder = Recorder(f, AMQP, "f:trace")
    batch = _batch(("f.a.message", {"messageId": "m1"}, b"one"),
                   ("f.a.message", {"messageId": "m2"}, b"two"))
    recorder._on_copy(None, BATCHES, SimpleNamespace(headers=None, user_id="f.a"), batch[:-1])
    assert [r["messageId"] for r in f.trace] == ["m1"]
    assert "not read (a record of" in capsys.readouterr().out


def test_a_flow_taken_down_stops_its_recorder(flow: tuple[Flow, FakeChannel]) -> None:
    f, _ch = flow
    recorder = f._recorder = Recorder(f, AMQP, "f:trace")
    f.handed_over(None)
    assert recorder.stop.is_set() and f._recorder is None
