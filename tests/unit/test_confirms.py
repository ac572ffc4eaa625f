"""Publishing with confirms (flowrun/contract/confirms.py): its logic against a fake
channel, and the private corner of pika it stands on, checked against the pika
installed here so that a pika that changes it fails here, not in a running flow."""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pika.adapters.base_connection as base_connection
import pika.adapters.blocking_connection as blocking
import pika.adapters.utils.io_services_utils as io_services
import pika.channel
import pika.spec
import pytest

from flowrun.contract.confirms import COALESCE_BYTES, Confirms, coalesce_writes


def test_pikas_blocking_channel_still_wraps_an_async_channel() -> None:
    assert "self._impl = channel_impl" in inspect.getsource(blocking.BlockingChannel.__init__)
    confirm = inspect.signature(pika.channel.Channel.confirm_delivery)
    assert list(confirm.parameters)[:3] == ["self", "ack_nack_callback", "callback"]
    publish = inspect.signature(pika.channel.Channel.basic_publish)
    assert "mandatory" in publish.parameters
    assert callable(pika.channel.Channel.add_on_return_callback)
    assert pika.spec.Basic.Nack.NAME == "Basic.Nack"


class _Frame:
    def __init__(self, method: Any) -> None:
        self.method = method


class _Impl:
    """pika's async channel, as much of it as Confirms uses."""

    def __init__(self) -> None:
        self.on_confirm: Callable[[Any], None] | None = None
        self.on_return: Callable[..., None] | None = None
        self.published: list[tuple[str, str, bytes, bool]] = []

    def add_on_return_callback(self, callback: Callable[..., None]) -> None:
        self.on_return = callback

    def confirm_delivery(self, ack_nack: Callable[[Any], None], callback: Any) -> None:
        self.on_confirm = ack_nack
        callback(None)

    def basic_publish(self, exchange: str, key: str, body: bytes, properties: Any,
                      mandatory: bool = False) -> None:
        self.published.append((exchange, key, body, mandatory))


class _Connection:
    def __init__(self, broker: Callable[[], None] = lambda: None) -> None:
        self.broker = broker  # what the broker answers while events are processed
        self.woken = 0

    def add_callback_threadsafe(self, callback: Callable[[], None]) -> None:
        self.woken += 1

    def process_data_events(self, time_limit: float = 0) -> None:
        self.broker()


class _Channel:
    def __init__(self) -> None:
        self._impl = _Impl()


def test_a_batch_is_confirmed_at_once_and_what_came_back_is_handed_back() -> None:
    channel = _Channel()
    impl = channel._impl

    def broker() -> None:
        assert impl.on_return is not None and impl.on_confirm is not None
        returned = pika.spec.Basic.Return(exchange="x", routing_key="nowhere")
        impl.on_return(None, returned, None, b"b")  # returned before its ack
        impl.on_confirm(_Frame(pika.spec.Basic.Nack(delivery_tag=3)))
        impl.on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=2, multiple=True)))

    confirms = Confirms(_Connection(broker), channel)
    for n in range(3):
        confirms.publish("x", f"k{n}", b"m", None)
    assert all(mandatory for *_rest, mandatory in impl.published)
    failed = confirms.wait(timeout=1)
    assert [key for _x, key, _b, _p in failed] == ["nowhere", "k2"]
    assert confirms.unconfirmed == {}


def test_a_confirm_that_never_comes_times_out() -> None:
    confirms = Confirms(_Connection(), _Channel())
    confirms.publish("x", "k", b"m", None)
    with pytest.raises(TimeoutError):
        confirms.wait(timeout=0.05)
    assert len(confirms.unsent()) == 1


def test_a_publish_with_a_callback_is_told_whether_it_reached_a_queue() -> None:
    channel = _Channel()
    impl = channel._impl
    confirms = Confirms(_Connection(), channel)
    told: dict[str, bool] = {}
    for message_id in ("a", "b", "c"):
        confirms.publish("", "q", b"x", pika.BasicProperties(message_id=message_id),
                         done=lambda ok, m=message_id: told.__setitem__(m, ok))
    assert impl.on_return is not None and impl.on_confirm is not None
    # "b" comes back (no queue), "c" is nacked; then all three are confirmed.
    impl.on_return(None, pika.spec.Basic.Return(exchange="", routing_key="q"),
                   pika.BasicProperties(message_id="b"), b"x")
    impl.on_confirm(_Frame(pika.spec.Basic.Nack(delivery_tag=3)))
    impl.on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=2, multiple=True)))
    assert told == {"a": True, "b": False, "c": False}
    assert confirms.wait() == []  # told to their publisher, not handed back as well


def test_settled_is_the_last_publish_up_to_which_all_are_confirmed() -> None:
    channel = _Channel()
    impl = channel._impl
    confirms = Confirms(_Connection(), channel)
    for n in range(4):
        confirms.publish("x", f"k{n}", b"m", None)
    assert impl.on_confirm is not None and confirms.settled() == 0
    impl.on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=2)))  # out of order
    assert confirms.settled() == 0
    impl.on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=1)))
    assert confirms.settled() == 2
    impl.on_confirm(_Frame(pika.spec.Basic.Ack(delivery_tag=4, multiple=True)))
    assert confirms.settled() == 4 and confirms.unconfirmed == {}


def test_pikas_transport_still_buffers_chunks_and_sends_them_in_produce() -> None:
    transport = io_services._AsyncPlaintextTransport
    assert "self._tx_buffers" in inspect.getsource(io_services._AsyncTransportBase.__init__)
    assert "self._produce()" in inspect.getsource(transport._on_socket_writable)
    assert "self._transport" in inspect.getsource(base_connection.BaseConnection.__init__)


def test_small_chunks_waiting_together_leave_in_one_send() -> None:
    sent: list[bytes] = []
    buffers: deque[bytes] = deque()

    def produce() -> None:  # pika's: one send() per chunk
        while buffers:
            sent.append(buffers.popleft())

    transport = SimpleNamespace(_tx_buffers=buffers, _produce=produce)
    coalesce_writes(SimpleNamespace(_impl=SimpleNamespace(_transport=transport)))
    big = b"x" * COALESCE_BYTES
    buffers.extend([b"publish 1", b"publish 2", b"ack", big, b"publish 3"])
    transport._produce()
    assert sent == [b"publish 1publish 2ack", big, b"publish 3"]
    buffers.append(b"alone")
    transport._produce()
    assert sent[-1] == b"alone"
