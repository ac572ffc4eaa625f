"""Publishing with confirms, as the sailor and the host both publish.

The one place flowrun reaches into pika's private API: `BlockingChannel._impl`,
the async channel behind the blocking facade, which takes a confirm callback
(`tests/unit/test_confirms.py` fails when pika changes it). Written against the
objects it is handed, not against pika itself: the contract imports no library.
The sailor hands it a channel of flowrun's own client (contract/amqp.py), whose
`_impl` is the channel itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Outgoing = tuple[str, str, bytes, Any]  # exchange, routing key, body, properties


class Confirms:
    """Publisher confirms without a round trip per message, and nothing into nowhere.

    pika's BlockingChannel waits for each confirm in turn (about 1,800 msg/s at
    best). Publishing on the channel's underlying async channel and waiting for
    the whole batch at once keeps the guarantee (nothing is acked upstream
    before its outputs are confirmed) and pays one round trip per batch.

    Every publish is `mandatory`: a message that no queue is bound for is not
    silently dropped (the broker would confirm it all the same) but returned;
    returned and nacked messages are handed back by wait(), to be sent again.
    A publish may also name a callback (`done`), told once its confirm arrives
    whether it reached a queue: for a publisher that cannot wait for a batch (the
    gateway, which answers each request on its own).
    """

    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self.impl = channel._impl  # pika's async Channel behind the blocking facade
        self.published = 0
        self.unconfirmed: dict[int, Outgoing | None] = {}  # None: publish_lossy
        self.failed: list[Outgoing] = []
        # Per publish with a `done` callback; its properties must carry a message_id
        # (what a returned message is known by: the broker sends it back decoded anew).
        self.callbacks: dict[int, Callable[[bool], None]] = {}
        ready: list[bool] = []

        def on_ready(_frame: Any) -> None:
            ready.append(True)
            # As for a confirm (below): without a ready callback, process_data_events
            # would sleep out its whole time limit; every step paid 0.1 s at start.
            connection.add_callback_threadsafe(_noop)

        coalesce_writes(connection)
        self.impl.add_on_return_callback(self._on_return)
        self.impl.confirm_delivery(self._on_confirm, callback=on_ready)
        while not ready:
            connection.process_data_events(time_limit=0.1)

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # The broker sends basic.return before the basic.ack of the same publish.
        self.failed.append((method.exchange, method.routing_key, body, properties))

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.multiple:  # the unconfirmed are kept in the order they were published
            tags = []
            for tag in self.unconfirmed:
                if tag > method.delivery_tag:
                    break
                tags.append(tag)
        else:
            tags = [method.delivery_tag]
        nacked = getattr(method, "NAME", "") == "Basic.Nack"  # pika.spec.Basic.Nack
        for tag in tags:
            message = self.unconfirmed.pop(tag, None)
            if nacked and message is not None:
                self.failed.append(message)
            done = self.callbacks.pop(tag, None)
            if done is not None and message is not None:
                mine = message[3].message_id
                returned = any(f[3].message_id == mine for f in self.failed)
                # Told to its publisher, not handed back by wait() as well.
                self.failed = [f for f in self.failed if f[3].message_id != mine]
                done(not nacked and not returned)
        if not self.unconfirmed:
            # A confirm alone does not end BlockingConnection.process_data_events early
            # (it returns on consumer deliveries and ready callbacks, not on frames for the
            # async channel); a no-op ready callback makes wait() return at once.
            self.connection.add_callback_threadsafe(_noop)

    def publish(self, exchange: str, key: str, body: bytes, properties: Any,
                done: Callable[[bool], None] | None = None) -> None:
        self.impl.basic_publish(exchange, key, body, properties, mandatory=True)
        self.published += 1  # the broker numbers a channel's publishes 1, 2, 3...
        self.unconfirmed[self.published] = (exchange, key, body, properties)
        if done is not None:
            self.callbacks[self.published] = done

    def publish_lossy(self, exchange: str, key: str, body: bytes, properties: Any) -> None:
        """A publish that may reach no queue and is never sent again (a trace batch,
        which with the trace off is bound to nothing): not mandatory, and what the
        broker nacks or a lost connection takes is gone. Counted and confirmed in turn
        with the others, so `settled()` still says what may be acked."""
        self.impl.basic_publish(exchange, key, body, properties, mandatory=False)
        self.published += 1
        self.unconfirmed[self.published] = None

    def settled(self) -> int:
        """The number of the last publish up to which every publish is confirmed (one
        that came back or was nacked is in `failed` by then): what a publisher that
        does not wait for each batch may ack its inputs up to."""
        return next(iter(self.unconfirmed)) - 1 if self.unconfirmed else self.published

    def wait(self, timeout: float | None = None) -> list[Outgoing]:
        """Until every publish is confirmed; returns what came back (to send again).
        Raises TimeoutError past `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.unconfirmed:
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"{len(self.unconfirmed)} publish(es) not confirmed")
            self.connection.process_data_events(time_limit=left)
        failed, self.failed = self.failed, []
        return failed

    def unsent(self) -> list[Outgoing]:
        """After a lost connection: what may not have reached a queue."""
        return [*self.failed, *(m for m in self.unconfirmed.values() if m is not None)]


def _noop() -> None:
    pass


COALESCE_BYTES = 256 * 1024


def coalesce_writes(connection: Any) -> None:
    """One socket write for what a batch publishes and acks, not one per frame set.

    pika buffers each publish (and each ack) as a chunk of its own and, once the
    socket is writable, sends the chunks one `send()` at a time: a batch of 50
    outputs was 50 system calls and 50 TCP segments (TCP_NODELAY is on), the
    largest part of a step's CPU under load (py-spy). Small chunks waiting
    together are joined first (up to COALESCE_BYTES), so they leave in one.
    Reaches into pika's plaintext transport (`_tx_buffers`, `_produce`); a pika
    without them is left as it is (tests/unit/test_confirms.py notices)."""
    transport: Any = getattr(getattr(connection, "_impl", None), "_transport", None)
    buffers = getattr(transport, "_tx_buffers", None)
    produce = getattr(transport, "_produce", None)
    if buffers is None or produce is None:
        return

    def coalesced() -> None:
        if len(buffers) > 1 and len(buffers[0]) < COALESCE_BYTES:
            joined, size = [], 0
            while buffers and size + len(buffers[0]) <= COALESCE_BYTES:
                chunk = buffers.popleft()
                joined.append(chunk)
                size += len(chunk)
            buffers.appendleft(b"".join(joined))
        produce()

    transport._produce = coalesced
