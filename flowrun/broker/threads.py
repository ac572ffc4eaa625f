"""What a flow's steps emit, sorted by thread: how `flowrun test` follows each case.

Every message carries its thread (`threadId`, the id of the message that began it,
carried on by every sailor, flowrun's and the platform's). One temporary queue
bound to every step's exchange with its data and error keys sees everything the
flow's steps emit; each copy is filed under its thread. A case knows its thread
(the id of the message it sent, or of its HTTP request) and reads only that: cases
run at once, beside a trigger that keeps firing, and never see each other's
messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pika.exceptions

from flowrun.broker.messaging import decode
from flowrun.broker.platform import message_keys
from flowrun.broker.server import Broker
from flowrun.contract import names, wire


@dataclass(frozen=True)
class Emitted:
    """One message or error a step emitted."""

    step: str
    kind: str  # "message" or "error"
    body: Any  # a message's body; an error's failed input's body
    message: str = ""  # an error's message
    name: str = ""  # an error's name
    headers: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.step, "kind": self.kind, "body": self.body}
        if self.kind == "error":
            out.update(error=self.name, message=self.message)
        return out


class ThreadWatch:
    """Everything `steps` emit from now on, by thread; start before sending."""

    def __init__(self, broker: Broker, flow: str, steps: Iterable[str]) -> None:
        self.flow = flow
        self.keys = message_keys(broker, flow)
        self.by_thread: dict[str, list[Emitted]] = {}
        self.changed = threading.Condition()
        self.stopping = threading.Event()
        self.connection = broker.connect(flow)
        channel = self.connection.channel()
        queue = channel.queue_declare("", exclusive=True, auto_delete=True,
                                      arguments={"x-max-length": 100_000}).method.queue
        for step in steps:
            exchange = names.step_exchange(flow, step)
            channel.queue_bind(queue, exchange, routing_key=names.data_key(flow, step))
            channel.queue_bind(queue, exchange, routing_key=names.error_key(flow, step))
        channel.basic_consume(queue, self._on_message, auto_ack=True)
        self.thread = threading.Thread(target=self._run, daemon=True, name="thread-watch")
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.connection.process_data_events(time_limit=0.2)
        except (pika.exceptions.AMQPError, OSError):
            pass  # the broker went away: what was seen stays; cases time out
        finally:
            try:
                if self.connection.is_open:
                    self.connection.close()
            except Exception:  # already broken
                pass

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        found = names.of_key(self.flow, method.routing_key)
        if found is None:
            return
        step, kind = found
        headers = dict(properties.headers or {})
        thread = str(headers.get("threadId") or "")
        if kind == "error":
            error = wire.decode_error(self.keys, body)
            failed = error.get("input")
            emitted = Emitted(step, "error", failed.get("body") if isinstance(failed, dict)
                              else failed, str(error.get("message") or ""),
                              str(error.get("name") or "Error"), headers)
        else:
            emitted = Emitted(step, "message", decode(self.keys, body, properties).get("body"),
                              headers=headers)
        with self.changed:
            self.by_thread.setdefault(thread, []).append(emitted)
            self.changed.notify_all()

    def of(self, thread: str) -> list[Emitted]:
        with self.changed:
            return list(self.by_thread.get(thread, ()))

    def wait(self, thread: str, done: Callable[[list[Emitted]], bool], timeout: float,
             ) -> list[Emitted]:
        """What the thread emitted once `done` says so, or when `timeout` is up."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                seen = list(self.by_thread.get(thread, ()))
                left = deadline - time.monotonic()
                if done(seen) or left <= 0:
                    return seen
                self.changed.wait(min(left, 0.2))

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
