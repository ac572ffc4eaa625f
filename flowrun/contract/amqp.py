"""flowrun's own AMQP 0-9-1 client: one connection, one channel, blocking, in one thread.

What a step needs and nothing more: log in (PLAIN), one channel in confirm mode,
prefetch, consume, publish (mandatory), ack and nack, heartbeats, and the broker's
word when it closes the channel or the connection, cancels the consumer, returns a
message or confirms one. It replaced pika in the sailor (issue 22): pika was about
half of a step's CPU per message (marshalling each publish, decoding each delivery's
header table, its I/O loop with a `send()` per frame set) and a third of a sailor's
start (its imports). The platform services' trace recorder reads the trace queue
with it too; the host and the rest of the services keep pika. The wire they all speak is
the same (headers decode as pika decodes them: fields.py).

Writes wait in a buffer until the connection next waits for the broker (a batch's
publishes and acks leave in one `send()`); while they go out, what comes in is read
too, so neither side's buffers can fill up against the other's.

Exceptions (pika's names, so that the sailor's handling reads the same):

    AMQPError
    +-- AMQPConnectionError       the connection cannot be made or is gone
    |   +-- ConnectionClosedByBroker   (reply_code, reply_text)
    |   +-- StreamLostError            the socket ended or went silent
    +-- AMQPChannelError
        +-- ChannelClosedByBroker      (reply_code, reply_text)
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from struct import Struct
from typing import Any
from urllib.parse import unquote, urlsplit

from .fields import FieldError, Properties, decode_table, encode_table

__all__ = ["AMQPChannelError", "AMQPConnectionError", "AMQPError", "Channel",
           "ChannelClosedByBroker", "Connection", "ConnectionClosedByBroker", "Properties",
           "StreamLostError"]

_H, _I, _Q = Struct(">H"), Struct(">I"), Struct(">Q")
_FRAME = Struct(">BHI")
_METHOD_ID = Struct(">HH")
_CONTENT = Struct(">HHQ")
METHOD, HEADER, BODY, HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_MAX = 131072
READ_SIZE = 1 << 20


class AMQPError(Exception):
    pass


class AMQPConnectionError(AMQPError):
    pass


class StreamLostError(AMQPConnectionError):
    pass


class _ClosedByBroker(AMQPError):
    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(f"({reply_code}) {reply_text}")
        self.reply_code, self.reply_text = reply_code, reply_text


class ConnectionClosedByBroker(_ClosedByBroker, AMQPConnectionError):
    pass


class AMQPChannelError(AMQPError):
    pass


class ChannelClosedByBroker(_ClosedByBroker, AMQPChannelError):
    pass


# ------------------------------------------------------------ the broker's methods

class Method:
    """A method the broker sent, its arguments as attributes (pika's names)."""

    NAME = "?"

    def __init__(self, name: str, **args: Any) -> None:
        self.NAME = name
        self.__dict__.update(args)

    def __getattr__(self, name: str) -> Any:  # an argument this method does not have
        raise AttributeError(f"{self.NAME} has no {name}")

    def __repr__(self) -> str:
        return f"<{self.NAME} {self.__dict__}>"


class Frame:
    """What a confirm or a cancel callback is handed: `frame.method`, as in pika."""

    def __init__(self, method: Method) -> None:
        self.method = method


class _Reader:
    def __init__(self, data: bytes, offset: int = 4) -> None:
        self.data, self.at = data, offset

    def octet(self) -> int:
        self.at += 1
        return self.data[self.at - 1]

    def short(self) -> int:
        self.at += 2
        return int(_H.unpack_from(self.data, self.at - 2)[0])

    def long(self) -> int:
        self.at += 4
        return int(_I.unpack_from(self.data, self.at - 4)[0])

    def longlong(self) -> int:
        self.at += 8
        return int(_Q.unpack_from(self.data, self.at - 8)[0])

    def shortstr(self) -> str:
        length = self.octet()
        self.at += length
        return self.data[self.at - length:self.at].decode("utf-8", "replace")

    def longstr(self) -> bytes:
        length = self.long()
        self.at += length
        return bytes(self.data[self.at - length:self.at])

    def table(self) -> dict[str, Any]:
        table, self.at = decode_table(self.data, self.at)
        return table


def _shortstr(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > 255:
        raise ValueError(f"longer than 255 bytes: {text[:40]!r}...")
    return bytes([len(raw)]) + raw


def _longstr(raw: bytes) -> bytes:
    return _I.pack(len(raw)) + raw


def _table(table: dict[str, Any]) -> bytes:
    out = bytearray()
    encode_table(out, table)
    return bytes(out)


def _decode_method(payload: bytes) -> Method:  # noqa: C901 (one branch per method)
    class_id, method_id = _METHOD_ID.unpack_from(payload, 0)
    r = _Reader(payload)
    key = (class_id, method_id)
    if key == (60, 80):
        tag = r.longlong()
        return Method("Basic.Ack", delivery_tag=tag, multiple=bool(r.octet() & 1))
    if key == (60, 60):
        return Method("Basic.Deliver", consumer_tag=r.shortstr(), delivery_tag=r.longlong(),
                      redelivered=bool(r.octet() & 1), exchange=r.shortstr(),
                      routing_key=r.shortstr())
    if key == (60, 120):
        tag = r.longlong()
        bits = r.octet()
        return Method("Basic.Nack", delivery_tag=tag, multiple=bool(bits & 1),
                      requeue=bool(bits & 2))
    if key == (60, 50):
        return Method("Basic.Return", reply_code=r.short(), reply_text=r.shortstr(),
                      exchange=r.shortstr(), routing_key=r.shortstr())
    if key == (60, 30):
        return Method("Basic.Cancel", consumer_tag=r.shortstr())
    if key == (60, 21):
        return Method("Basic.ConsumeOk", consumer_tag=r.shortstr())
    if key == (60, 31):
        return Method("Basic.CancelOk", consumer_tag=r.shortstr())
    if key == (60, 11):
        return Method("Basic.QosOk")
    if key == (85, 11):
        return Method("Confirm.SelectOk")
    if key in ((10, 50), (20, 40)):
        return Method("Connection.Close" if class_id == 10 else "Channel.Close",
                      reply_code=r.short(), reply_text=r.shortstr(), class_id=r.short(),
                      method_id=r.short())
    if key == (10, 51):
        return Method("Connection.CloseOk")
    if key == (20, 41):
        return Method("Channel.CloseOk")
    if key == (20, 11):
        return Method("Channel.OpenOk")
    if key == (20, 20):
        return Method("Channel.Flow", active=bool(r.octet() & 1))
    if key == (10, 10):
        return Method("Connection.Start", version_major=r.octet(), version_minor=r.octet(),
                      server_properties=r.table(), mechanisms=r.longstr(),
                      locales=r.longstr())
    if key == (10, 30):
        return Method("Connection.Tune", channel_max=r.short(), frame_max=r.long(),
                      heartbeat=r.short())
    if key == (10, 41):
        return Method("Connection.OpenOk")
    if key == (10, 60):
        return Method("Connection.Blocked")
    if key == (10, 61):
        return Method("Connection.Unblocked")
    return Method(f"{class_id}.{method_id}")


def method_frame(out: bytearray, channel: int, class_id: int, method_id: int,
                 args: bytes) -> None:
    payload = _METHOD_ID.pack(class_id, method_id) + args
    out += _FRAME.pack(METHOD, channel, len(payload))
    out += payload
    out.append(FRAME_END)


def encode_publish(out: bytearray, channel: int, exchange: str, routing_key: str,
                   body: bytes, properties: Properties, mandatory: bool,
                   frame_max: int = FRAME_MAX) -> None:
    """A publish's frames (method, content header, body in pieces) at the end of `out`."""
    method_frame(out, channel, 60, 40, _H.pack(0) + _shortstr(exchange)
                 + _shortstr(routing_key) + (b"\1" if mandatory else b"\0"))
    at = len(out)
    out += b"\0\0\0\0\0\0\0"  # the header frame's header, filled in below
    out += _CONTENT.pack(60, 0, len(body))
    properties.encode(out)
    out[at:at + 7] = _FRAME.pack(HEADER, channel, len(out) - at - 7)
    out.append(FRAME_END)
    step = frame_max - 8
    for start in range(0, len(body), step):
        chunk = body[start:start + step]
        out += _FRAME.pack(BODY, channel, len(chunk))
        out += chunk
        out.append(FRAME_END)


# ------------------------------------------------------------ the connection

class Connection:
    """A connection to `uri` (amqp://user:password@host:port/vhost) with one channel."""

    def __init__(self, uri: str, heartbeat: int = 60, timeout: float = 10.0) -> None:
        parts = urlsplit(uri)
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.user = unquote(parts.username or "guest")  # what the broker checks user_id against
        self._heartbeat = heartbeat
        self._frame_max = FRAME_MAX
        self._in = bytearray()
        self._out = bytearray()
        self._incoming: tuple[Method, Properties | None, int, list[bytes]] | None = None
        self._callbacks: deque[Callable[[], None]] = deque()
        self._replies: deque[Method] = deque()
        self._activity = False
        self.channel_: Channel | None = None
        self.is_open = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        try:
            self._sock = socket.create_connection((parts.hostname or "localhost",
                                                   parts.port or 5672), timeout=timeout)
        except OSError:
            self._close_pipe()
            raise
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.setblocking(False)
            self._last_sent = self._last_received = time.monotonic()
            self._open(self.user, unquote(parts.password or "guest"),
                       time.monotonic() + timeout)
        except BaseException:
            self._drop()
            raise

    # -------------------------------------------------------- opening, closing

    def _open(self, user: str, password: str, deadline: float) -> None:
        self._out += PROTOCOL_HEADER
        start = self._await_connection("Connection.Start", deadline)
        if b"PLAIN" not in start.mechanisms.split():
            raise AMQPConnectionError(f"the broker offers no PLAIN login: {start.mechanisms!r}")
        properties = {"product": "flowrun", "platform": "Python", "capabilities": {
            "publisher_confirms": True, "basic.nack": True, "consumer_cancel_notify": True,
            "authentication_failure_close": True}}
        self._method(0, 10, 11, _table(properties) + _shortstr("PLAIN")
                     + _longstr(f"\0{user}\0{password}".encode()) + _shortstr("en_US"))
        tune = self._await_connection("Connection.Tune", deadline)
        self._frame_max = min(tune.frame_max or FRAME_MAX, FRAME_MAX)
        ours = self._heartbeat
        self._heartbeat = min(ours, tune.heartbeat) if ours and tune.heartbeat else 0
        self._method(0, 10, 31, _H.pack(1) + _I.pack(self._frame_max)
                     + _H.pack(self._heartbeat))
        self._method(0, 10, 40, _shortstr(self.vhost) + _shortstr("") + b"\0")
        self._await_connection("Connection.OpenOk", deadline)
        self.is_open = True

    def _await_connection(self, name: str, deadline: float) -> Method:
        return self._await(self._replies, name, deadline,
                           lambda: AMQPConnectionError(f"no {name} from the broker in time"))

    def _await(self, replies: deque[Method], name: str, deadline: float,
               late: Callable[[], AMQPError], check: Callable[[], None] | None = None,
               ) -> Method:
        """The reply `name` from `replies` (the connection's or a channel's), reading
        the socket until it comes; `late()` is raised past `deadline`, `check` run
        after each read (a channel closed meanwhile)."""
        while True:
            while replies:
                reply = replies.popleft()
                if reply.NAME == name:
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                raise late()
            self._pump(left)
            if check is not None:
                check()

    def channel(self) -> Channel:
        if self.channel_ is not None:
            raise AMQPError("this client has one channel")
        self.channel_ = Channel(self, 1)
        self.channel_.rpc(20, 10, _shortstr(""), "Channel.OpenOk")
        return self.channel_

    def close(self) -> None:
        if not self.is_open:
            self._drop()
            return
        try:
            self._method(0, 10, 50, _H.pack(200) + _shortstr("Normal shutdown")
                         + _H.pack(0) + _H.pack(0))
            deadline = time.monotonic() + 2.0
            while self.is_open and time.monotonic() < deadline:
                self._pump(deadline - time.monotonic())
                if any(r.NAME == "Connection.CloseOk" for r in self._replies):
                    break
        except (AMQPError, OSError):
            pass
        finally:
            self._drop()

    def _drop(self) -> None:
        self.is_open = False
        try:
            self._sock.close()
        except (AttributeError, OSError):
            pass
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    # -------------------------------------------------------- waiting

    def process_data_events(self, time_limit: float = 0) -> None:
        """Send what waits, then take in what the broker sent, handing it to its
        callbacks, until something was handed on or `time_limit` seconds passed."""
        self._check_open()
        deadline = time.monotonic() + time_limit
        self._activity = False
        while True:
            self._pump(max(0.0, deadline - time.monotonic()))
            if self._activity or time.monotonic() >= deadline:
                return

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.process_data_events(left)

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run `callback` in the connection's thread, at its next wait (which it ends)."""
        self._callbacks.append(callback)
        if threading.get_ident() != getattr(self, "_thread", None) and self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass

    def _check_open(self) -> None:
        if not self.is_open:
            raise StreamLostError("the connection is closed")

    def _pump(self, timeout: float) -> None:
        """One round: write what waits (reading meanwhile), wait at most `timeout` for
        something to read, read it, handle every whole frame, run the callbacks."""
        self._thread = threading.get_ident()
        now = time.monotonic()
        if self._heartbeat:
            if now - self._last_sent > self._heartbeat / 2:
                self._out += b"\x08\x00\x00\x00\x00\x00\x00\xce"
            timeout = min(timeout, self._heartbeat / 2)
        self._flush()
        if self._callbacks:
            timeout = 0
        sock = self._sock.fileno()
        readable, _, _ = select.select([sock, self._wake_r], [], [], timeout)
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        if sock in readable:
            self._receive()
        elif self._heartbeat:
            # Judged after reading, not before: after a long call of the function, what
            # the broker sent meanwhile (its heartbeats) waits in the socket.
            silent = time.monotonic() - self._last_received
            if silent > self._heartbeat * 2 + 5:
                self._lost(f"no word from the broker in {silent:.0f} s")
        self._handle_frames()
        while self._callbacks:
            self._callbacks.popleft()()
            self._activity = True

    def _receive(self) -> None:
        try:
            data = self._sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._lost(f"the socket failed: {e}")
        if not data:
            self._lost("the broker closed the socket")
        self._in += data
        self._last_received = time.monotonic()

    def _lost(self, why: str) -> None:
        self._drop()
        raise StreamLostError(why)

    def _flush(self) -> None:
        while self._out:
            readable, writable, _ = select.select([self._sock], [self._sock], [], 30.0)
            if not readable and not writable:
                self._lost("the broker took nothing in 30 s")
            if readable:  # the broker may wait for us to read before it reads more
                self._receive()
            if writable:
                try:
                    sent = self._sock.send(self._out[:READ_SIZE])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:
                    self._lost(f"the socket failed: {e}")
                del self._out[:sent]
                self._last_sent = time.monotonic()

    # -------------------------------------------------------- frames

    def _method(self, channel: int, class_id: int, method_id: int, args: bytes) -> None:
        method_frame(self._out, channel, class_id, method_id, args)

    def _publish(self, channel: int, exchange: str, routing_key: str, body: bytes,
                 properties: Properties, mandatory: bool) -> None:
        encode_publish(self._out, channel, exchange, routing_key, body, properties,
                       mandatory, self._frame_max)

    def _handle_frames(self) -> None:
        data = self._in
        at = 0
        frames = []
        while len(data) - at >= 7:
            kind, channel, size = _FRAME.unpack_from(data, at)
            end = at + 7 + size
            if len(data) <= end:
                break
            if data[end] != FRAME_END:
                self._lost("a frame from the broker did not end as frames do")
            frames.append((kind, channel, bytes(data[at + 7:end])))
            at = end + 1
        del data[:at]
        for kind, channel, payload in frames:
            self._frame(kind, channel, payload)

    def _frame(self, kind: int, channel: int, payload: bytes) -> None:
        if kind == METHOD:
            method = _decode_method(payload)
            if method.NAME in ("Basic.Deliver", "Basic.Return"):
                self._incoming = (method, None, 0, [])
            elif channel == 0:
                self._connection_method(method)
            elif self.channel_ is not None:
                self.channel_.on_method(method)
        elif kind == HEADER and self._incoming is not None:
            method = self._incoming[0]
            size = _Q.unpack_from(payload, 4)[0]
            try:
                props = Properties.decode(payload, 12)
            except (FieldError, IndexError, UnicodeDecodeError) as e:
                raise AMQPChannelError(f"a message's properties cannot be read: {e}") from None
            self._incoming = (method, props, size, [])
            if size == 0:
                self._deliver(b"")
        elif kind == BODY and self._incoming is not None:
            _method, _props, size, parts = self._incoming
            parts.append(payload)
            if sum(len(p) for p in parts) >= size:
                self._deliver(b"".join(parts) if len(parts) > 1 else parts[0])
        # heartbeats: their arrival is all they say

    def _deliver(self, body: bytes) -> None:
        assert self._incoming is not None
        method, props, _size, _parts = self._incoming
        self._incoming = None
        self._activity = True
        if self.channel_ is not None:
            self.channel_.on_content(method, props or Properties(), body)

    def _connection_method(self, method: Method) -> None:
        if method.NAME == "Connection.Close":
            try:
                self._method(0, 10, 51, b"")
                self._flush()
            except (AMQPError, OSError):
                pass
            self._drop()
            raise ConnectionClosedByBroker(method.reply_code, method.reply_text)
        self._replies.append(method)  # Start, Tune, OpenOk, CloseOk; (Un)Blocked


class Channel:
    """Channel 1 of its connection. Synchronous calls wait for the broker's answer
    (handling deliveries, confirms and returns meanwhile); the rest is buffered."""

    def __init__(self, connection: Connection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.is_open = True
        self._consumers: dict[str, Callable[..., None]] = {}
        self._on_cancel: list[Callable[[Frame], None]] = []
        self._on_return: list[Callable[..., None]] = []
        self._on_confirm: Callable[[Frame], None] | None = None
        self._replies: deque[Method] = deque()
        self._consuming: Callable[..., None] | None = None

    @property
    def _impl(self) -> Channel:
        """Where Confirms (written for pika's blocking channel) finds the asynchronous
        calls: here, the channel itself."""
        return self

    # -------------------------------------------------------- calls

    def rpc(self, class_id: int, method_id: int, args: bytes, answer: str,
            timeout: float = 30.0) -> Method:
        self._check()
        self.connection._method(self.number, class_id, method_id, args)
        return self.connection._await(
            self._replies, answer, time.monotonic() + timeout,
            lambda: AMQPChannelError(f"no {answer} from the broker in {timeout:.0f} s"),
            self._check)

    def basic_qos(self, prefetch_count: int = 0) -> None:
        self.rpc(60, 10, _I.pack(0) + _H.pack(prefetch_count) + b"\0", "Basic.QosOk")

    def basic_consume(self, queue: str, on_message_callback: Callable[..., None],
                      auto_ack: bool = False) -> str:
        flags = 0b10 if auto_ack else 0
        # Deliveries may follow consume-ok in the same read: the consumer is known from
        # its consume-ok on (on_method), not only once this call returns.
        self._consuming = on_message_callback
        reply = self.rpc(60, 20, _H.pack(0) + _shortstr(queue) + _shortstr("")
                         + bytes([flags]) + _table({}), "Basic.ConsumeOk")
        return str(reply.consumer_tag)

    def basic_cancel(self, consumer_tag: str) -> None:
        self.rpc(60, 30, _shortstr(consumer_tag) + b"\0", "Basic.CancelOk")
        self._consumers.pop(consumer_tag, None)

    def basic_publish(self, exchange: str, routing_key: str, body: bytes,
                      properties: Properties | None = None, mandatory: bool = False) -> None:
        self._check()
        self.connection._publish(self.number, exchange, routing_key, body,
                                 properties or Properties(), mandatory)

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._check()
        self.connection._method(self.number, 60, 80, _Q.pack(delivery_tag)
                                + (b"\1" if multiple else b"\0"))

    def basic_nack(self, delivery_tag: int, multiple: bool = False,
                   requeue: bool = True) -> None:
        self._check()
        self.connection._method(self.number, 60, 120, _Q.pack(delivery_tag)
                                + bytes([(1 if multiple else 0) | (2 if requeue else 0)]))

    def add_on_cancel_callback(self, callback: Callable[[Frame], None]) -> None:
        self._on_cancel.append(callback)

    def add_on_return_callback(self, callback: Callable[..., None]) -> None:
        self._on_return.append(callback)

    def confirm_delivery(self, ack_nack_callback: Callable[[Frame], None],
                         callback: Callable[[Frame], None] | None = None) -> None:
        """Confirm mode; `callback` once the broker agreed (before this returns)."""
        self._on_confirm = ack_nack_callback
        reply = self.rpc(85, 10, b"\0", "Confirm.SelectOk")
        if callback is not None:
            callback(Frame(reply))

    def _check(self) -> None:
        if not self.is_open:
            raise AMQPChannelError("the channel is closed")
        if not self.connection.is_open:
            raise StreamLostError("the connection is closed")

    # -------------------------------------------------------- what the broker sends

    def on_method(self, method: Method) -> None:
        name = method.NAME
        if name in ("Basic.Ack", "Basic.Nack"):
            self.connection._activity = True
            if self._on_confirm is not None:
                self._on_confirm(Frame(method))
        elif name == "Basic.Cancel":  # the broker's: the queue was deleted
            self.connection._activity = True
            self._consumers.pop(method.consumer_tag, None)
            for cancelled in self._on_cancel:
                cancelled(Frame(method))
        elif name == "Channel.Close":
            self.is_open = False
            self.connection._method(self.number, 20, 41, b"")
            raise ChannelClosedByBroker(method.reply_code, method.reply_text)
        elif name == "Basic.ConsumeOk" and self._consuming is not None:
            self._consumers[method.consumer_tag], self._consuming = self._consuming, None
            self._replies.append(method)
        elif name == "Channel.Flow":
            self.connection._method(self.number, 20, 21, b"\1" if method.active else b"\0")
        else:
            self._replies.append(method)

    def on_content(self, method: Method, properties: Properties, body: bytes) -> None:
        if method.NAME == "Basic.Return":
            for returned in self._on_return:
                returned(self, method, properties, body)
            return
        consumer = self._consumers.get(method.consumer_tag)
        if consumer is not None:
            consumer(self, method, properties, body)
