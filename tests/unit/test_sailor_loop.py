"""The sailor's main loop against a fake channel: a batch of deliveries is processed,
its outputs published with their lineage, and acked (once, for the whole batch)
only after every output is confirmed, without waiting for those confirms before
the next batch; an output that comes back is sent again first; a message of
another encoding is dead-lettered, not retried."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from flowrun.contract import traced, wire
from flowrun.sailor import runtime

KEYS = wire.Keys("password", "0123456789abcdef")


class FakeConfirms:
    """Confirms as the sailor uses it: `come_back_first` publishes come back (no queue
    for them); `confirmed_up_to` holds back the confirms of later publishes."""

    def __init__(self, come_back_first: int = 0) -> None:
        self.sent: list[tuple[str, str, bytes, Any]] = []
        self.traced: list[tuple[str, str, bytes, Any]] = []  # trace batches
        self.published = 0
        self.failed: list[tuple[str, str, bytes, Any]] = []
        self.come_back = come_back_first
        self.confirmed_up_to: int | None = None
        self.waits = 0

    def publish(self, exchange: str, key: str, body: bytes, properties: Any) -> None:
        self.sent.append((exchange, key, body, properties))
        self.published += 1
        if self.come_back:
            self.come_back -= 1
            self.failed.append(self.sent[-1])

    def publish_lossy(self, exchange: str, key: str, body: bytes, properties: Any) -> None:
        self.traced.append((exchange, key, body, properties))
        self.published += 1

    def settled(self) -> int:
        return self.published if self.confirmed_up_to is None else self.confirmed_up_to

    def wait(self, timeout: float | None = None) -> list[Any]:
        self.waits += 1
        self.confirmed_up_to = None
        failed, self.failed = self.failed, []
        return failed


class FakeChannel:
    def __init__(self) -> None:
        self.acks: list[tuple[int, bool]] = []
        self.nacks: list[tuple[int, bool, bool]] = []

    def basic_ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))

    def basic_nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.nacks.append((tag, multiple, requeue))


@pytest.fixture
def sailor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> runtime.Sailor:
    step_file = tmp_path / "step.json"
    step_file.write_text(json.dumps({"cfg": {"add": 1}, "message_password": KEYS.password,
                                     "message_iv": KEYS.iv}))
    for key, value in {"ELASTICIO_FLOW_ID": "f", "ELASTICIO_STEP_ID": "a",
                       "ELASTICIO_FUNCTION": "go", "ELASTICIO_PUBLISH_MESSAGES_TO": "f.a",
                       "ELASTICIO_LISTEN_MESSAGES_ON": "f:a:messages",
                       "ELASTICIO_DATA_ROUTING_KEY": "f.a.message",
                       "ELASTICIO_ERROR_ROUTING_KEY": "f.a.error",
                       "ELASTICIO_SNAPSHOT_ROUTING_KEY": "f.a.snapshot",
                       "ELASTICIO_REBOUND_ROUTING_KEY": "f.a.rebound",
                       "FLOWRUN_STEP_FILE": str(step_file)}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(runtime, "STATE_FILE", str(tmp_path / "state.json"))
    monkeypatch.setattr(runtime, "ACK_DELAY", 0.0)  # each ack at once, unless a test says
    s = runtime.Sailor()
    module = ModuleType("component")
    module.process = lambda msg, cfg: {"n": msg["body"]["n"] + cfg["add"]}  # type: ignore
    s.module = module
    s.channel = FakeChannel()
    s.connection = SimpleNamespace(sleep=lambda seconds: None, user="f.a")
    s.confirms = FakeConfirms()  # type: ignore[assignment]
    return s


def _delivery(tag: int, n: int, keys: wire.Keys = KEYS) -> tuple[Any, Any, bytes]:
    message_id = f"m{tag}"
    headers = {"messageId": message_id, "threadId": "t1", "protocolVersion": 1}
    body = keys.encrypt(wire.data_message({"n": n}, id=message_id))
    return SimpleNamespace(delivery_tag=tag), SimpleNamespace(headers=headers), body


def test_a_batch_is_acked_once_after_its_outputs_are_confirmed(
        sailor: runtime.Sailor) -> None:
    sailor._deliveries = [_delivery(1, 1), _delivery(2, 41)]
    assert sailor.process_batch()
    confirms: FakeConfirms = sailor.confirms  # type: ignore[assignment]
    outputs = [(key, wire.decode_data(KEYS, body, props.headers)["body"],
                props.headers["parentMessageId"], props.headers["threadId"])
               for _x, key, body, props in confirms.sent]
    assert outputs == [("f.a.message", {"n": 2}, "m1", "t1"),
                       ("f.a.message", {"n": 42}, "m2", "t1")]
    assert sailor.channel.acks == [(2, True)] and confirms.waits == 0
    assert sailor.counters["processed"] == 2


def test_publishes_are_told_to_the_trace_in_one_message_per_batch_time(
        sailor: runtime.Sailor) -> None:
    confirms: FakeConfirms = sailor.confirms  # type: ignore[assignment]
    sailor._deliveries = [_delivery(1, 1), _delivery(2, 41)]
    sailor.process_batch()
    sailor._deliveries = [_delivery(3, 1)]
    sailor.process_batch()
    assert confirms.traced == []  # held: a batch per BATCH_SECONDS, not per input
    assert sailor._wait_limit(0.2) <= traced.BATCH_SECONDS
    sailor._trace_due = 0.0  # its time has come
    sailor._send_trace(due_only=True)
    [(exchange, _key, batch, props)] = confirms.traced
    assert exchange == "f:trace" and props.user_id == "f.a" and confirms.published == 4
    recorded = [(key, headers["messageId"], headers["parentMessageId"], body)
                for key, headers, body, _at in traced.records(batch)]
    assert recorded == [("f.a.message", p.headers["messageId"], p.headers["parentMessageId"],
                         body) for _x, _k, body, p in confirms.sent]
    sailor._send_trace()
    assert len(confirms.traced) == 1 and sailor._wait_limit(0.2) == 0.2  # none twice


def test_an_output_that_came_back_is_sent_again_before_the_ack(
        sailor: runtime.Sailor) -> None:
    sailor.confirms = FakeConfirms(come_back_first=1)  # type: ignore[assignment]
    sailor._deliveries = [_delivery(7, 1)]
    sailor.process_batch()
    confirms: FakeConfirms = sailor.confirms  # type: ignore[assignment]
    assert len(confirms.sent) == 2 and confirms.waits == 2
    assert sailor.channel.acks == [(7, True)] and sailor.counters["unroutable"] == 1


def test_a_message_of_another_encoding_is_dead_lettered(sailor: runtime.Sailor) -> None:
    sailor._deliveries = [_delivery(3, 1, wire.Keys("other", "fedcba9876543210")),
                          _delivery(4, 1)]
    sailor.process_batch()
    assert sailor.channel.nacks == [(3, False, False)]
    assert sailor.channel.acks == [(4, True)] and sailor.counters["errors"] == 1


def test_a_raising_function_is_an_error_event_and_the_input_is_acked(
        sailor: runtime.Sailor) -> None:
    def boom(msg: Any) -> None:
        raise ValueError("thirteen")

    sailor.module.process = boom  # type: ignore[attr-defined]
    sailor._deliveries = [_delivery(5, 1)]
    sailor.process_batch()
    confirms: FakeConfirms = sailor.confirms  # type: ignore[assignment]
    [(_x, key, body, _props)] = confirms.sent
    error = wire.decode_error(KEYS, body)
    assert key == "f.a.error" and error["message"] == "thirteen"
    assert sailor.channel.acks == [(5, True)]


def test_batches_are_acked_in_order_as_their_confirms_come_in(
        sailor: runtime.Sailor) -> None:
    confirms: FakeConfirms = sailor.confirms  # type: ignore[assignment]
    confirms.confirmed_up_to = 0  # nothing confirmed yet: no ack, and no waiting either
    sailor._deliveries = [_delivery(1, 1), _delivery(2, 2)]
    sailor.process_batch()
    sailor._deliveries = [_delivery(3, 3)]
    sailor.process_batch()
    assert sailor.channel.acks == [] and confirms.waits == 0
    confirms.confirmed_up_to = 1  # the first batch's second output is still out
    sailor.ack_confirmed()
    assert sailor.channel.acks == []
    confirms.confirmed_up_to = 2
    sailor.ack_confirmed()
    assert sailor.channel.acks == [(2, True)]
    confirms.confirmed_up_to = None
    sailor.ack_confirmed()
    assert sailor.channel.acks == [(2, True), (3, True)]


def test_an_output_that_came_back_holds_back_the_acks_after_it(
        sailor: runtime.Sailor) -> None:
    confirms: FakeConfirms = sailor.confirms  # type: ignore[assignment]
    confirms.confirmed_up_to = 0  # the first batch's output not confirmed yet
    sailor._deliveries = [_delivery(1, 1)]
    sailor.process_batch()
    assert sailor.channel.acks == []
    confirms.come_back = 1  # the second batch's output finds no queue
    sailor._deliveries = [_delivery(2, 2)]
    sailor.process_batch()
    # No ack until the returned output is sent again and everything is confirmed;
    # then one ack covers both batches.
    assert len(confirms.sent) == 3 and confirms.sent[2][2] == confirms.sent[1][2]
    assert confirms.waits == 2 and sailor.channel.acks == [(2, True)]


def test_a_small_ack_waits_a_little_to_cover_more_inputs(
        sailor: runtime.Sailor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "ACK_DELAY", 60.0)
    sailor._deliveries = [_delivery(1, 1)]
    sailor.process_batch()
    sailor._deliveries = [_delivery(2, 2)]
    sailor.process_batch()
    assert sailor.channel.acks == []  # confirmed, held back: the loop wakes for it
    assert sailor._ack_due is not None
    sailor._ack_due = 0.0  # its time has come
    sailor.ack_confirmed()
    assert sailor.channel.acks == [(2, True)] and sailor._ack_due is None
    monkeypatch.setattr(runtime, "ACK_BATCH", 2)  # or it covers enough inputs
    sailor._deliveries = [_delivery(3, 3), _delivery(4, 4)]
    sailor.process_batch()
    assert sailor.channel.acks == [(2, True), (4, True)]
    sailor._deliveries = [_delivery(5, 5)]
    sailor.process_batch()
    sailor.ack_confirmed(wait=True)  # or it is waited for (stopping, a careful start)
    assert sailor.channel.acks[-1] == (5, True)
