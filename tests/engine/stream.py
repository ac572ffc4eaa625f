"""Streaming numbered messages through a running flow and counting what arrives.

Used by the no-loss tests and the benchmarks. Both ends survive a broker
restart: they look the broker up again (its host port may change) and resend
the one message whose confirm was not seen, so loss shows up as a gap and
at-least-once shows up as duplicates, both counted.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from flowrun.broker.messaging import data_key, decode, make_message, properties_for
from flowrun.broker.platform import message_keys
from flowrun.broker.server import find_broker
from flowrun.contract import names
from flowrun.contract.names import input_queue

ERRORS = (pika.exceptions.AMQPError, OSError)


def _connect(engine: Any, flow: str, deadline: float) -> pika.BlockingConnection:
    while True:
        broker = find_broker(engine)
        try:
            if broker is not None:
                return broker.connect(flow)
        except ERRORS:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("broker unreachable")
        time.sleep(0.3)


@dataclass
class Sink:
    """A durable queue on a step's output, declared before the stream starts."""

    engine: Any
    flow: str
    step: str
    seen: Counter[int] = field(default_factory=Counter)
    # With `keep`, the value of that body field per seq (which replica handled it, say).
    keep: str | None = None
    kept: dict[int, Any] = field(default_factory=dict)

    @property
    def queue(self) -> str:
        return f"{self.flow}:test-sink-{self.step}"

    def declare(self) -> None:
        conn = _connect(self.engine, self.flow, time.monotonic() + 30)
        ch = conn.channel()
        ch.queue_declare(self.queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(self.queue, names.step_exchange(self.flow, self.step),
                      routing_key=data_key(self.flow, self.step))
        conn.close()

    def drain_until(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            try:
                conn = _connect(self.engine, self.flow, deadline)
                keys = _keys(self.engine, self.flow)
                ch = conn.channel()
                for method, props, body in ch.consume(self.queue, inactivity_timeout=0.5):
                    if method is not None:
                        message = decode(keys, body, props)
                        seq = message["headers"].get("seq")
                        if seq is not None:  # not ours: the flow's own trigger made it
                            self.seen[int(seq)] += 1
                            if self.keep is not None:
                                self.kept[int(seq)] = (message.get("body") or {}).get(self.keep)
                        ch.basic_ack(method.delivery_tag)
                    if len(self.seen) >= count or time.monotonic() > deadline:
                        break
                conn.close()
            except ERRORS:
                time.sleep(0.3)

    def missing(self, count: int) -> list[int]:
        return [i for i in range(count) if i not in self.seen]

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.seen.values())


def _keys(engine: Any, flow: str) -> Any:
    broker = find_broker(engine)
    if broker is None:
        raise TimeoutError("broker unreachable")
    return message_keys(broker, flow)


class Stream(threading.Thread):
    """Publishes seq 0..count-1 as the trigger, confirmed, resending across failures."""

    def __init__(self, engine: Any, flow: str, as_step: str, body: Any, count: int,
                 rate: float | None = None) -> None:
        super().__init__(daemon=True)
        self.engine, self.flow, self.as_step = engine, flow, as_step
        self.body, self.count, self.rate = body, count, rate
        self.resent = 0
        self.sent = 0  # confirmed or not, how far the stream has got
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test, not lost in a thread
            self.error = e

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        seq = 0
        started = time.monotonic()
        while seq < self.count:
            conn = _connect(self.engine, self.flow, deadline)
            keys = _keys(self.engine, self.flow)
            ch = conn.channel()
            ch.confirm_delivery()
            try:
                while seq < self.count:
                    message = make_message(self.body, {"seq": seq, "sentAt": time.time()})
                    ch.basic_publish(names.step_exchange(self.flow, self.as_step),
                                     data_key(self.flow, self.as_step),
                                     keys.encrypt(message),
                                     properties_for(self.flow, self.as_step, message))
                    seq += 1
                    self.sent = seq
                    if self.rate:
                        ahead = seq / self.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
                conn.close()
            except ERRORS:
                self.resent += 1  # the unconfirmed one goes again: maybe a duplicate
                time.sleep(0.2)


class ConsumerWatch(threading.Thread):
    """Samples the consumer count of a queue (AMQP's passive declare: no stats lag)."""

    def __init__(self, engine: Any, flow: str, queue: str) -> None:
        super().__init__(daemon=True)
        self.engine, self.flow, self.queue = engine, flow, queue
        self.counts: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        broker = find_broker(self.engine)
        assert broker is not None
        connection = broker.connect(self.flow)
        channel = connection.channel()
        while not self.stop.is_set():
            declared = channel.queue_declare(self.queue, passive=True)
            self.counts.append(declared.method.consumer_count)
            time.sleep(0.02)
        connection.close()


def replica_work(seconds: float) -> str:
    """An action that takes `seconds` per message and says which replica ran it."""
    return ("import os, time\n\n\ndef process(msg, cfg):\n"
            f"    time.sleep({seconds})\n"
            '    return {**msg["body"], "replica": os.environ["FLOWRUN_REPLICA"]}\n')


def replicated_steps(work: Any, replicas: int) -> str:
    """A trigger that emits nothing by itself, then `work` (replica_work) replicated."""
    return f"""  - id: src
    component: {Path(__file__).parents[2] / "sample_flows" / "components"}/shop
    function: newOrders
    config: {{limit: 0}}
  - id: work
    component: {work}
    function: go
    replicas: {replicas}
"""


def roll_mid_stream(engine: Any, flow: str, count: int, redeploy: Any) -> Sink:
    """Stream `count` numbered messages through `work` (3 replicas) at 100 msg/s and
    call `redeploy()` in its middle. Checks that the redeploy fell mid-stream, that the
    queue never lacked a consumer, that nothing was lost and that every replica took a
    share; returns the sink (which replica handled each message)."""
    sink = Sink(engine, flow, "work", keep="replica")
    sink.declare()
    consumers = ConsumerWatch(engine, flow, input_queue(flow, "work"))
    stream = Stream(engine, flow, "src", {"n": 1}, count, rate=100)
    stream.start()
    time.sleep(1.0)
    before = stream.sent
    consumers.start()
    redeploy()
    consumers.stop.set()
    consumers.join(10)
    after = stream.sent
    stream.join(timeout=120)
    assert stream.error is None, stream.error
    assert 0 < before < after < count, (before, after)
    # Rolling: the queue always had a consumer, replaced one replica at a time.
    assert consumers.counts and min(consumers.counts) >= 1, consumers.counts
    sink.drain_until(count, timeout=120)
    assert not sink.missing(count), f"lost {len(sink.missing(count))}"
    shares = {r: sum(1 for v in sink.kept.values() if v == r) for r in ("1", "2", "3")}
    assert all(shares.values()), shares  # every replica took part of the stream
    return sink
