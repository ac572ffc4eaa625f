"""A trace batch: what a publisher tells the platform services it published.

The trace records every message a step publishes. RabbitMQ's firehose can do that
for any publisher, but it makes a message of its own for each publish (routed,
queued and delivered: about as much of the broker's work as the publish itself,
which halved a flow's throughput with the trace on). flowrun's own publishers (the
Python sailor, the host's `send`) therefore say what they published themselves:
one message to the flow's trace exchange (names.trace_exchange) holds a record of
each publish of the last BATCH_SECONDS at most. The platform's Node.js sailor,
which flowrun does not change, is recorded by a binding of the trace queue on its
step's exchange instead (names.TAP_KEY).

A record is the publish's routing key, the few headers the trace reads
(TRACE_HEADERS), when it was published (ms since the epoch: the record arrives
later) and the body as published (encrypted, decrypted only when a trace is asked
for). A batch carries its publisher's broker user in `user_id`, which the
broker checks against the connection's login: a step can speak for its own
publishes only (the services drop a record whose key is not that step's).

Framing, for each record: two 4-byte big-endian lengths (meta, body), then the
meta as JSON `[routing key, {header: value}, published at]`, then the body.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from typing import Any

# What the services keep of a publish's headers (services/state.py, Flow._record).
TRACE_HEADERS = ("messageId", "parentMessageId", "threadId", "start", "end",
                 "reboundIteration", "stepId", "protocolVersion")
_LENGTHS = struct.Struct(">II")
# How long a publisher may hold records before it sends them (a step under load sends
# a batch per BATCH_SECONDS, not one per batch of inputs, which is one input at a
# time when the step keeps up); the services wait this long before they take a
# trace as complete. And how large a batch may grow before it goes at once.
BATCH_SECONDS = 0.05
BATCH_BYTES = 256 * 1024


class TraceBatchError(ValueError):
    """A trace batch that cannot be read (cut, or not one)."""


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def record(key: str, headers: dict[str, Any], body: bytes, at_ms: int) -> bytes:
    """One publish, as a trace batch holds it."""
    kept = {h: headers[h] for h in TRACE_HEADERS if headers.get(h) is not None}
    meta = json.dumps([key, kept, at_ms], separators=(",", ":"), default=_text).encode()
    return _LENGTHS.pack(len(meta), len(body)) + meta + body


def records(batch: bytes) -> Iterator[tuple[str, dict[str, Any], bytes, int]]:
    """The (routing key, headers, body, published at) of each record of a batch, in
    publish order.
    Raises TraceBatchError at the first that cannot be read."""
    view, at, size = memoryview(batch), 0, len(batch)
    while at < size:
        if size - at < _LENGTHS.size:
            raise TraceBatchError(f"a record cut at byte {at}")
        meta_len, body_len = _LENGTHS.unpack_from(view, at)
        at += _LENGTHS.size
        end = at + meta_len + body_len
        if end > size:
            raise TraceBatchError(f"a record of {meta_len + body_len} bytes cut at byte {at}")
        try:
            key, headers, published = json.loads(bytes(view[at:at + meta_len]))
        except (ValueError, TypeError) as e:  # not JSON, or not three things
            raise TraceBatchError(f"a record's meta is not read: {e}") from None
        if not isinstance(key, str) or not isinstance(headers, dict) \
                or not isinstance(published, int):
            raise TraceBatchError("a record's meta is not [routing key, headers, time]")
        yield key, headers, bytes(view[at + meta_len:end]), published
        at = end
