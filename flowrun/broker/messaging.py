"""Pushing messages into a running flow and waiting for what comes out of a step.

For CI smoke tests: `flowrun send` publishes as if a step had emitted (by
default the trigger), `flowrun tail` waits for N messages from a step's output.
Both speak AMQP to the host's broker as its admin, inside the flow's vhost, and
the platform's wire protocol (`flowrun.contract.wire`): encrypted bodies with the
flow's keys, lineage in the headers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika

from flowrun.broker.platform import message_keys
from flowrun.broker.server import ADMIN_USER, MAX_MESSAGE_BYTES, Broker
from flowrun.contract import names, traced, wire
from flowrun.contract.confirms import Confirms
from flowrun.errors import BadInput, FlowFailed

data_key = names.data_key


def encode(keys: wire.Keys, message: dict[str, Any]) -> bytes:
    """A message as it travels, refused here (exit 2) when the broker would refuse it."""
    raw = keys.encrypt(message)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise BadInput(f"the message is {len(raw) / 1024 / 1024:.1f} MiB; the broker takes "
                       f"at most {MAX_MESSAGE_BYTES // 1024 // 1024} MiB per message: send a "
                       "reference to the data instead")
    return raw


def check_size(message: dict[str, Any]) -> None:
    """Before anything is sent: the encrypted size does not depend on the key."""
    encode(wire.Keys("size", "0" * 16), message)


def make_message(body: Any, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "body": body, "attachments": {},
            "headers": headers or {}, "metadata": {}, "passthrough": {}}


def properties_for(flow: str, as_step: str, message: dict[str, Any]) -> pika.BasicProperties:
    """A new thread begins here: the message's own headers travel in the AMQP headers
    too (as `x-eio-meta-*`, which every sailor, flowrun's and the platform's, carries
    on)."""
    headers = wire.outgoing_headers(wire.meta_headers(message.get("headers")), as_step, flow,
                                    message_id=message["id"])
    return pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                message_id=message["id"], headers=headers)


def decode(keys: wire.Keys, body: bytes, properties: Any) -> dict[str, Any]:
    """A message as `tail` shows it: decrypted, its lineage (AMQP headers) beside its
    own headers."""
    raw = getattr(properties, "headers", None) or {}
    amqp = {k: v for k, v in raw.items() if not k.startswith("x-")}
    try:
        msg = wire.decode_data(keys, body, amqp)
    except wire.WireError as e:
        msg = {"body": None, "headers": {}, "error": str(e)}
    msg["headers"] = {**amqp, **wire.unmeta(raw), **(msg.get("headers") or {})}
    return msg


class Tap:
    """A temporary queue bound to one step's output; bind before you send."""

    def __init__(self, broker: Broker, flow: str, step: str) -> None:
        self.keys = message_keys(broker, flow)
        self.connection = broker.connect(flow)
        self.channel = self.connection.channel()
        declared = self.channel.queue_declare("", exclusive=True, auto_delete=True)
        self.queue = declared.method.queue
        self.channel.queue_bind(self.queue, names.step_exchange(flow, step),
                                routing_key=data_key(flow, step))

    def take(self, count: int, timeout: float,
             on_message: Callable[[dict[str, Any]], None]) -> int:
        """Deliver up to `count` messages to `on_message`; return how many came."""
        got = 0
        deadline = time.monotonic() + timeout
        for method, props, body in self.channel.consume(self.queue, auto_ack=True,
                                                         inactivity_timeout=0.1):
            if method is not None:
                on_message(decode(self.keys, body, props))
                got += 1
                if got >= count:
                    break
            if time.monotonic() > deadline:
                break
        self.channel.cancel()
        return got

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


@contextmanager
def tap(broker: Broker, flow: str, step: str) -> Iterator[Tap]:
    t = Tap(broker, flow, step)
    try:
        yield t
    finally:
        t.close()


class Sender:
    """Publishes persistent messages with publisher confirms, waited for in batches."""

    BATCH = 200

    def __init__(self, broker: Broker, flow: str, timeout: float = 30.0) -> None:
        self.flow = flow
        self.keys = message_keys(broker, flow)
        self.timeout = timeout
        self.connection = broker.connect(flow)
        self.channel = self.connection.channel()
        self.confirms = Confirms(self.connection, self.channel)
        # What is sent is told to the flow's trace as the sailors tell theirs
        # (contract/traced.py); the exchange made here too for a flow brought up by a
        # flowrun from before it had one.
        self.trace_exchange = names.trace_exchange(flow)
        self.channel.exchange_declare(self.trace_exchange, exchange_type="fanout", durable=True)
        self.traced: list[bytes] = []

    def send(self, as_step: str, message: dict[str, Any]) -> None:
        key, body = data_key(self.flow, as_step), encode(self.keys, message)
        properties = properties_for(self.flow, as_step, message)
        self.confirms.publish(names.step_exchange(self.flow, as_step), key, body, properties)
        self.traced.append(traced.record(key, properties.headers, body, wire.now_ms()))
        if len(self.confirms.unconfirmed) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self.traced:
            batch, self.traced = b"".join(self.traced), []
            self.confirms.publish_lossy(self.trace_exchange, "", batch, pika.BasicProperties(
                delivery_mode=1, user_id=ADMIN_USER))
        try:
            failed = self.confirms.wait(self.timeout)
        except TimeoutError:
            raise FlowFailed(f"the broker did not confirm the message(s) within "
                             f"{self.timeout:g} s") from None
        if failed:
            raise FlowFailed(f"{len(failed)} message(s) reached no queue in flow {self.flow}: "
                             "its queues are missing; run `flowrun up` again")

    def close(self) -> None:
        if self.connection.is_open:
            try:
                self.flush()
            finally:
                self.connection.close()
