"""flowrun's own AMQP client (flowrun/contract/amqp.py, fields.py) against pika as the
reference: field tables and properties encode to the bytes pika writes and decode to
what pika reads; and the client, facing a scripted broker whose frames pika marshals,
logs in, consumes, confirms, and reports the broker's closes as pika's names."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pika.data
import pika.frame
import pika.spec
import pytest

from flowrun.contract import amqp, fields
from flowrun.contract.confirms import Confirms

HEADERS: list[dict[str, Any]] = [
    {},
    {"messageId": "6e1c0b8a-1d5f-4f0e-9d4a-6f2c3b1a0e9d", "stepId": "s1", "start": 1764700000123,
     "reboundIteration": 3, "taskId": "flow", "x-eio-meta-trace": "abc"},
    {"small": 5, "negative": -7, "int32": 2**31 - 1, "int64": 2**40, "flag": True, "off": False,
     "none": None, "raw": b"\xff\x00", "unicode": "Grüße ✓"},
    {"nested": {"list": [1, "two", None, {"three": 3}], "empty": {}}, "array": []},
]


@pytest.mark.parametrize("table", HEADERS)
def test_a_table_is_written_as_pika_writes_it_and_read_back(table: dict[str, Any]) -> None:
    ours = bytearray()
    fields.encode_table(ours, table)
    theirs: list[bytes] = []
    pika.data.encode_table(theirs, table)
    assert bytes(ours) == b"".join(theirs)
    assert fields.decode_table(bytes(ours), 0) == (table, len(ours))


def test_a_table_pika_wrote_reads_as_pika_reads_it() -> None:
    table = {"s": "text", "b": b"\x80 not utf-8", "n": [1, {"k": "v"}], "t": True}
    encoded: list[bytes] = []
    pika.data.encode_table(encoded, table)
    data = b"".join(encoded)
    assert fields.decode_table(data, 0)[0] == pika.data.decode_table(data, 0)[0]


def test_doubles_are_not_truncated_as_pika_truncates_them() -> None:
    # amqplib (the platform's Node.js sailor) writes a non-integer number as a double.
    data = struct.pack(">I", 16) + b"\x01fd" + struct.pack(">d", 1.5) + b"\x01ss\xff\xfe"
    assert fields.decode_table(data, 0)[0] == {"f": 1.5, "s": -2}


def test_a_table_with_an_unknown_type_is_refused() -> None:
    with pytest.raises(fields.FieldError):
        fields.decode_table(struct.pack(">I", 3) + b"\x01k?", 0)
    with pytest.raises(fields.FieldError):
        fields.encode_table(bytearray(), {"k": object()})


def test_properties_round_trip_through_pika() -> None:
    ours = fields.Properties(content_type="application/json", content_encoding="utf8",
                             delivery_mode=2, message_id="m-1", headers=HEADERS[1],
                             reply_to="flow:reply.x", timestamp=1764700000)
    out = bytearray()
    ours.encode(out)
    theirs = pika.spec.BasicProperties()
    theirs.decode(bytes(out))
    for name in fields.Properties.__slots__:
        assert getattr(theirs, name) == getattr(ours, name), name
    back = fields.Properties.decode(b"".join(theirs.encode()), 0)
    assert back.headers == HEADERS[1] and back.message_id == "m-1" and back.delivery_mode == 2


# ------------------------------------------------------------ a scripted broker

def _frame(channel: int, method: Any) -> bytes:
    return pika.frame.Method(channel, method).marshal()


def _content(channel: int, method: Any, body: bytes, headers: dict[str, Any] | None = None,
             frame_max: int = 4096) -> bytes:
    props = pika.spec.BasicProperties(headers=headers, message_id="m")
    out = _frame(channel, method) + pika.frame.Header(channel, len(body), props).marshal()
    for at in range(0, len(body), frame_max - 8):
        out += pika.frame.Body(channel, body[at:at + frame_max - 8]).marshal()
    return out


class Broker:
    """Listens on loopback; `script(sock, read_frame)` plays the broker's side."""

    def __init__(self, script: Callable[[socket.socket, Callable[[], Any]], None]) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.seen: list[Any] = []
        self.thread = threading.Thread(target=self._serve, args=(script,), daemon=True)
        self.thread.start()

    def uri(self) -> str:
        return f"amqp://user:p%40ss@127.0.0.1:{self.port}/flow%2Fvhost"

    def _serve(self, script: Callable[[socket.socket, Callable[[], Any]], None]) -> None:
        sock, _ = self.server.accept()
        buffer = bytearray()

        def read_frame() -> Any:
            while True:
                if buffer.startswith(b"AMQP"):
                    del buffer[:8]
                    return "protocol header"
                if len(buffer) >= 7:
                    used, frame = pika.frame.decode_frame(bytes(buffer))
                    if frame is not None:
                        del buffer[:used]
                        self.seen.append(frame)
                        return frame
                data = sock.recv(65536)
                if not data:
                    return None
                buffer.extend(data)

        try:
            script(sock, read_frame)
        finally:
            sock.close()
            self.server.close()


def _handshake(sock: socket.socket, read: Callable[[], Any], heartbeat: int = 60) -> None:
    assert read() == "protocol header"
    sock.sendall(_frame(0, pika.spec.Connection.Start(
        server_properties={"product": "scripted"}, mechanisms="PLAIN AMQPLAIN")))
    start_ok = read().method
    assert start_ok.mechanism == "PLAIN" and start_ok.response == b"\0user\0p@ss"
    sock.sendall(_frame(0, pika.spec.Connection.Tune(channel_max=0, frame_max=4096,
                                                     heartbeat=heartbeat)))
    assert isinstance(read().method, pika.spec.Connection.TuneOk)
    opened = read().method
    assert opened.virtual_host == "flow/vhost"
    sock.sendall(_frame(0, pika.spec.Connection.OpenOk()))


def _open_channel(sock: socket.socket, read: Callable[[], Any]) -> None:
    assert isinstance(read().method, pika.spec.Channel.Open)
    sock.sendall(_frame(1, pika.spec.Channel.OpenOk()))


def _frames(read: Callable[[], Any]) -> Iterator[Any]:
    while (frame := read()) is not None:
        yield frame


def test_consume_with_deliveries_right_behind_consume_ok_and_bodies_in_pieces() -> None:
    body = bytes(range(256)) * 40  # three body frames at frame_max 4096

    def script(sock: socket.socket, read: Callable[[], Any]) -> None:
        _handshake(sock, read)
        _open_channel(sock, read)
        assert read().method.prefetch_count == 7
        sock.sendall(_frame(1, pika.spec.Basic.QosOk()))
        assert read().method.queue == "in"
        # consume-ok and the first deliveries in one write, as a broker with a full
        # queue sends them
        sock.sendall(_frame(1, pika.spec.Basic.ConsumeOk(consumer_tag="c1"))
                     + _content(1, pika.spec.Basic.Deliver("c1", 1, False, "x", "k"), body,
                                {"stepId": "s0"})
                     + _content(1, pika.spec.Basic.Deliver("c1", 2, True, "x", "k"), b""))
        for frame in _frames(read):
            if isinstance(frame.method, pika.spec.Basic.Ack):
                break
        sock.sendall(_frame(0, pika.spec.Connection.Close(320, "CONNECTION_FORCED - bye", 0, 0)))
        read()

    broker = Broker(script)
    connection = amqp.Connection(broker.uri())
    channel = connection.channel()
    channel.basic_qos(prefetch_count=7)
    got: list[tuple[Any, Any, bytes]] = []
    assert channel.basic_consume("in", lambda ch, m, p, b: got.append((m, p, b))) == "c1"
    while len(got) < 2:
        connection.process_data_events(1)
    (first, props, first_body), (second, _p, second_body) = got
    assert (first.delivery_tag, first.redelivered, first_body) == (1, False, body)
    assert props.headers == {"stepId": "s0"} and props.message_id == "m"
    assert (second.delivery_tag, second.redelivered, second_body) == (2, True, b"")
    channel.basic_ack(2, multiple=True)
    with pytest.raises(amqp.ConnectionClosedByBroker) as closed:
        connection.sleep(5)
    assert closed.value.reply_code == 320
    assert not connection.is_open
    broker.thread.join(5)
    ack = next(f.method for f in broker.seen if isinstance(getattr(f, "method", None),
                                                             pika.spec.Basic.Ack))
    assert (ack.delivery_tag, ack.multiple) == (2, True)


def test_confirms_returns_and_a_channel_closed_by_the_broker() -> None:
    def script(sock: socket.socket, read: Callable[[], Any]) -> None:
        _handshake(sock, read)
        _open_channel(sock, read)
        assert isinstance(read().method, pika.spec.Confirm.Select)
        sock.sendall(_frame(1, pika.spec.Confirm.SelectOk()))
        published, bodies = [], 0
        for frame in _frames(read):
            if isinstance(frame, pika.frame.Method):
                assert isinstance(frame.method, pika.spec.Basic.Publish)
                assert frame.method.mandatory
                published.append(frame.method)
            bodies += isinstance(frame, pika.frame.Body)
            if bodies == 3:
                break
        # publish 2 found no queue: returned, then confirmed; 1 and 2 acked together,
        # 3 nacked
        sock.sendall(_content(1, pika.spec.Basic.Return(312, "NO_ROUTE", "x", "nowhere"),
                              b"two")
                     + _frame(1, pika.spec.Basic.Ack(delivery_tag=2, multiple=True))
                     + _frame(1, pika.spec.Basic.Nack(delivery_tag=3)))
        assert isinstance(read().method, pika.spec.Basic.Consume)
        sock.sendall(_frame(1, pika.spec.Channel.Close(404, "NOT_FOUND - no queue", 60, 20)))
        assert isinstance(read().method, pika.spec.Channel.CloseOk)
        assert isinstance(read().method, pika.spec.Connection.Close)
        sock.sendall(_frame(0, pika.spec.Connection.CloseOk()))

    broker = Broker(script)
    connection = amqp.Connection(broker.uri())
    channel = connection.channel()
    confirms = Confirms(connection, channel)
    for key, body in (("k", b"one"), ("nowhere", b"two"), ("k", b"three")):
        confirms.publish("x", key, body, amqp.Properties(message_id=body.decode()))
    failed = confirms.wait(timeout=5)
    assert sorted((key, body) for _x, key, body, _p in failed) == [("k", b"three"),
                                                                   ("nowhere", b"two")]
    with pytest.raises(amqp.ChannelClosedByBroker) as closed:
        channel.basic_consume("missing", lambda *a: None)
    assert closed.value.reply_code == 404
    with pytest.raises(amqp.AMQPChannelError):
        channel.basic_ack(1)
    connection.close()
    broker.thread.join(5)


def test_a_refused_login_and_a_broker_that_goes_away() -> None:
    def refuse(sock: socket.socket, read: Callable[[], Any]) -> None:
        assert read() == "protocol header"
        sock.sendall(_frame(0, pika.spec.Connection.Start(mechanisms="PLAIN")))
        read()
        sock.sendall(_frame(0, pika.spec.Connection.Close(403, "ACCESS_REFUSED", 0, 0)))

    with pytest.raises(amqp.ConnectionClosedByBroker, match="ACCESS_REFUSED"):
        amqp.Connection(Broker(refuse).uri())

    def vanish(sock: socket.socket, read: Callable[[], Any]) -> None:
        _handshake(sock, read)
        _open_channel(sock, read)

    connection = amqp.Connection(Broker(vanish).uri())
    connection.channel()
    with pytest.raises(amqp.StreamLostError):
        connection.sleep(5)
    with pytest.raises(amqp.StreamLostError):
        connection.process_data_events(0)


def test_heartbeats_are_sent_when_nothing_else_is() -> None:
    def script(sock: socket.socket, read: Callable[[], Any]) -> None:
        _handshake(sock, read, heartbeat=1)
        _open_channel(sock, read)
        for frame in _frames(read):
            if isinstance(frame, pika.frame.Heartbeat):
                sock.sendall(pika.frame.Heartbeat().marshal())
                break

    broker = Broker(script)
    connection = amqp.Connection(broker.uri(), heartbeat=60)
    connection.channel()
    with pytest.raises(amqp.StreamLostError):  # the script ends once it has one
        connection.sleep(3)  # the broker asked for 1 s: one is due after 0.5 s
    broker.thread.join(5)
    assert any(isinstance(f, pika.frame.Heartbeat) for f in broker.seen)
