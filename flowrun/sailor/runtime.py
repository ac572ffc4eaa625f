"""The sailor's main loop: connect, load, start up, then consume or call the trigger.

Delivery is at-least-once: an input message is acked only after every output
it caused has been confirmed by the broker. On SIGTERM the message in hand is
finished and acked, the rest of the prefetch goes back to the queue when the
channel closes, and the process exits 0.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from . import LIVE_MARKER, STATE_FILE
from .function import LoadError, Runner, as_message, load_function
from .leaks import LeakWatch, sample

COMPONENT_DIR = Path(os.environ.get("FLOWRUN_COMPONENT_DIR", "/app"))
PREFETCH = int(os.environ.get("FLOWRUN_PREFETCH", "200"))
RECONNECT_DELAY = 0.1
EMIT_TYPES = ("data", "error", "snapshot", "rebound", "end", "httpReply", "updateKeys")


def log(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Confirms:
    """Publisher confirms without a round trip per message.

    pika's BlockingChannel waits for each confirm in turn (about 1,800 msg/s at
    best). Publishing on the channel's underlying async channel and waiting for
    the whole batch at once keeps the guarantee (nothing is acked upstream
    before its outputs are confirmed) and pays one round trip per batch.
    """

    def __init__(self, connection: Any, channel: Any) -> None:
        self.connection = connection
        self.impl = channel._impl  # pika's async Channel behind the blocking facade
        self.published = 0
        self.outstanding: set[int] = set()
        self.nacked = False
        ready: list[bool] = []
        self.impl.confirm_delivery(self._on_confirm, callback=lambda _frame: ready.append(True))
        while not ready:
            connection.process_data_events(time_limit=0.1)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self.nacked = True
        if method.multiple:
            self.outstanding = {t for t in self.outstanding if t > method.delivery_tag}
        else:
            self.outstanding.discard(method.delivery_tag)
        if not self.outstanding:
            # A confirm alone does not end BlockingConnection.process_data_events early
            # (it returns on consumer deliveries and ready callbacks, not on frames for the
            # async channel); a no-op ready callback makes wait() return at once.
            self.connection.add_callback_threadsafe(_noop)

    def publish(self, exchange: str, key: str, body: bytes, properties: Any) -> None:
        self.impl.basic_publish(exchange, key, body, properties)
        self.published += 1  # the broker numbers a channel's publishes 1, 2, 3...
        self.outstanding.add(self.published)

    def wait(self) -> None:
        while self.outstanding:
            self.connection.process_data_events(time_limit=1)
        if self.nacked:
            raise pika.exceptions.NackError([])


class Context:
    """`ctx` as a function sees it. emit() works from any thread."""

    def __init__(self, sailor: Sailor) -> None:
        self._sailor = sailor
        self.step_id = sailor.step_id
        self.flow_id = sailor.flow_id
        self.logger = self

    # A logger-ish surface, so `ctx.logger.info(...)` works too.
    def info(self, text: str, *args: Any) -> None:
        log(str(text) % args if args else str(text))

    warn = warning = debug = error = info

    def emit(self, event: str, payload: Any = None) -> None:
        if event not in EMIT_TYPES:
            raise ValueError(f"unknown event {event!r}; use one of {', '.join(EMIT_TYPES)}")
        self._sailor.emit(event, payload)


class Sailor:
    def __init__(self) -> None:
        env = os.environ
        self.flow_id = env["ELASTICIO_FLOW_ID"]
        self.step_id = env["ELASTICIO_STEP_ID"]
        self.function = env["ELASTICIO_FUNCTION"]
        self.kind = env.get("FLOWRUN_KIND", "action")
        self.amqp_uri = env["ELASTICIO_AMQP_URI"]
        self.exchange = env["ELASTICIO_PUBLISH_MESSAGES_TO"]
        self.input_queue = env.get("ELASTICIO_LISTEN_MESSAGES_ON")
        self.keys = {
            "data": env["ELASTICIO_DATA_ROUTING_KEY"],
            "error": env["ELASTICIO_ERROR_ROUTING_KEY"],
            "snapshot": env["ELASTICIO_SNAPSHOT_ROUTING_KEY"],
            "rebound": env["ELASTICIO_REBOUND_ROUTING_KEY"],
        }
        self.interval = float(env.get("FLOWRUN_TRIGGER_INTERVAL", "1"))
        self.snapshot_queue = env.get("FLOWRUN_SNAPSHOT_QUEUE")
        self._snapshot_restored = False
        self.cfg = json.loads(env.get("FLOWRUN_CFG", "{}"))
        self.stopping = threading.Event()
        self.ctx = Context(self)
        self.runner = Runner()
        self.snapshot: Any = {}
        self.counters = {"processed": 0, "emitted": 0, "errors": 0, "calls": 0}
        self.leak: str | None = None
        self.live = False
        self._main_thread = threading.get_ident()
        self._collecting: list[tuple[str, Any]] | None = None
        self._foreign: queue.SimpleQueue[tuple[str, Any, dict[str, Any] | None]] = (
            queue.SimpleQueue()
        )
        self._state_written = 0.0
        self.connection: Any = None
        self.channel: Any = None
        self.confirms: Confirms | None = None
        self._deliveries: list[tuple[Any, bytes]] = []

    # ------------------------------------------------------------ emitting

    def emit(self, event: str, payload: Any) -> None:
        if threading.get_ident() == self._main_thread and self._collecting is not None:
            self._collecting.append((event, payload))
        else:  # a listener's callback: the main loop publishes it
            self._foreign.put((event, payload, None))

    def publish_event(self, event: str, payload: Any, parent: dict[str, Any] | None) -> None:
        if event == "data":
            self._publish(self.keys["data"], as_message(payload, parent))
            self.counters["emitted"] += 1
        elif event == "error":
            self.counters["errors"] += 1
            self._publish(self.keys["error"], self._error_message(payload, parent))
        elif event == "snapshot":
            self.snapshot = payload
            self._publish(self.keys["snapshot"], as_message(payload, parent))
        elif event == "rebound":
            self._rebound(payload, parent)
        else:  # end, httpReply, updateKeys: nothing to route in a real-time flow
            pass

    def _error_message(self, error: Any, parent: dict[str, Any] | None) -> dict[str, Any]:
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
            stack = "".join(traceback.format_exception(error))
        else:
            text, stack = str(error), ""
        log(f"ERROR {text}")
        return {
            "id": str(uuid.uuid4()),
            "body": {"error": text, "stack": stack, "step": self.step_id},
            "headers": dict((parent or {}).get("headers") or {}),
            "errorInput": parent,
        }

    def _rebound(self, reason: Any, parent: dict[str, Any] | None) -> None:
        if parent is None or not self.input_queue:
            log(f"WARNING rebound outside of an input message ignored: {reason}")
            return
        count = int((parent.get("headers") or {}).get("reboundIteration", 0)) + 1
        if count > 10:
            self.publish_event("error", RuntimeError(f"rebound limit reached: {reason}"), parent)
            return
        message = dict(parent, headers={**(parent.get("headers") or {}),
                                         "reboundIteration": count})
        # The rebound queue holds it for a while, then dead-letters it back to our input.
        self._publish(f"{self.input_queue}:rebound", message, exchange="")

    def _publish(self, key: str, message: dict[str, Any], exchange: str | None = None) -> None:
        assert self.confirms is not None
        self.confirms.publish(
            self.exchange if exchange is None else exchange, key,
            json.dumps(message, default=str).encode(),
            pika.BasicProperties(
                delivery_mode=2, content_type="application/json",
                message_id=message.get("id"), headers={"stepId": self.step_id},
            ),
        )

    def _flush_foreign(self) -> None:
        published = False
        while True:
            try:
                event, payload, parent = self._foreign.get_nowait()
            except queue.Empty:
                break
            self.publish_event(event, payload, parent)
            published = True
        if published and self.confirms is not None:
            self.confirms.wait()

    # ------------------------------------------------------------ calling

    def call(self, msg: dict[str, Any]) -> None:
        """Call process() once and publish (confirmed) everything it produced."""
        self._collecting = []
        try:
            results = self.runner.run(self.module.process, msg, self.cfg, self.snapshot, self.ctx)
            events = self._collecting + [("data", r) for r in results]
        except Exception as e:  # the function's own failure: an error event, flow goes on
            traceback.print_exc(file=sys.stdout)
            events = self._collecting + [("error", e)]
        finally:
            self._collecting = None
        for event, payload in events:
            self.publish_event(event, payload, msg)

    # ------------------------------------------------------------ state

    def write_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._state_written < 0.5:
            return
        self._state_written = now
        state = {"live": self.live, "leak": self.leak, "pid": os.getpid(), **self.counters}
        tmp = STATE_FILE + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, STATE_FILE)

    # ------------------------------------------------------------ lifecycle

    def load(self) -> None:
        self.module, _spec = load_function(COMPONENT_DIR, self.function)
        init = getattr(self.module, "init", None)
        if callable(init):
            self.runner.call_hook(init, self.cfg)
        startup = getattr(self.module, "startup", None)
        self.startup_data = self.runner.call_hook(startup, self.cfg) if callable(startup) else None

    def connect(self) -> None:
        params = pika.URLParameters(self.amqp_uri)
        params.heartbeat = 60
        params.blocked_connection_timeout = 300
        delay = RECONNECT_DELAY
        while not self.stopping.is_set():
            try:
                self.connection = pika.BlockingConnection(params)
                self.channel = self.connection.channel()
                self.confirms = Confirms(self.connection, self.channel)
                self._deliveries = []
                return
            except pika.exceptions.AMQPError as e:
                log(f"waiting for the broker ({type(e).__name__})")
                self.stopping.wait(delay)
                delay = min(delay * 2, 2.0)

    def restore_snapshot(self) -> None:
        """The latest snapshot this step emitted before a restart, if any. Read without
        taking it: the message goes back to its one-message queue."""
        if self._snapshot_restored or not self.snapshot_queue:
            return
        method, _props, body = self.channel.basic_get(self.snapshot_queue, auto_ack=False)
        if method is not None:
            self.snapshot = json.loads(body).get("body")
            self.channel.basic_nack(method.delivery_tag, requeue=True)
            log(f"restored the snapshot this step emitted last: {body[:200]!r}")
        self._snapshot_restored = True

    def run(self) -> int:
        self.load()
        while not self.stopping.is_set():
            self.connect()
            if self.stopping.is_set():
                break
            try:
                self.restore_snapshot()
                if self.kind == "trigger":
                    self.run_trigger()
                else:
                    self.run_consumer()
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError,
                    pika.exceptions.StreamLostError, pika.exceptions.ConnectionClosedByBroker) as e:
                # The broker restarted or dropped us: unacked input goes back to its
                # queue on the broker's side, so reconnecting loses nothing.
                self.live = False
                self.write_state(force=True)
                log(f"broker connection lost ({type(e).__name__}); reconnecting")
                self.stopping.wait(RECONNECT_DELAY)
        self.close()
        return 0

    def announce_live(self) -> None:
        self.live = True
        self.write_state(force=True)
        # To the supervisor over the broker (the quickest path, and proof that this
        # step's connection works), and to the log for anyone reading it later.
        assert self.confirms is not None
        live_key = self.keys["data"].rsplit(".", 1)[0] + ".live"
        self.confirms.publish(self.exchange, live_key, json.dumps(
            {"step": self.step_id, "pid": os.getpid(), "at": time.time()}).encode(),
            pika.BasicProperties(delivery_mode=1, content_type="application/json"))
        self.confirms.wait()
        log(f"{LIVE_MARKER} step={self.step_id} function={self.function} kind={self.kind}")

    def run_consumer(self) -> None:
        assert self.input_queue
        # One message at a time until one has gone through: if the message at the head
        # of the queue is what crashed us, only its delivery count grows, not that of a
        # whole prefetch of innocent messages, so only it reaches the dead-letter queue.
        self.channel.basic_qos(prefetch_count=1)
        tag = self.channel.basic_consume(self.input_queue, self.on_delivery)
        careful = True
        self.announce_live()
        while not self.stopping.is_set():
            if not self._deliveries:
                self.connection.process_data_events(time_limit=0.2)
            if self.process_batch() and careful:
                # RabbitMQ applies a new prefetch to new consumers only: consume anew.
                self.channel.basic_cancel(tag)
                self.channel.basic_qos(prefetch_count=PREFETCH)
                tag = self.channel.basic_consume(self.input_queue, self.on_delivery)
                careful = False
            self._flush_foreign()
            self.write_state()
        # Stopping: deliveries already handed to us but not started go back to the queue
        # when the channel closes; nothing in hand is left half done.

    def on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._deliveries.append((method, body))

    def process_batch(self) -> bool:
        """Call process() for each delivery in hand, wait for every output's confirm
        once, then ack the whole batch. False when there was nothing to do."""
        batch, self._deliveries = self._deliveries, []
        if not batch:
            return False
        for _method, body in batch:
            self.call(_decode(body))
            self.counters["processed"] += 1
        assert self.confirms is not None
        self.confirms.wait()
        self.channel.basic_ack(batch[-1][0].delivery_tag, multiple=True)
        return True

    def run_trigger(self) -> None:
        watch = LeakWatch()
        self.announce_live()
        while not self.stopping.is_set():
            started = time.monotonic()
            self.call({"id": str(uuid.uuid4()), "body": {}, "headers": {}})
            self.counters["calls"] += 1
            self.counters["processed"] += 1
            assert self.confirms is not None
            self.confirms.wait()
            found = watch.observe(*sample())
            if found:
                self.leak = found
                log(f"WARNING trigger '{self.function}' leaks listeners: {found}. A real-time "
                    "trigger's process() is called again and again in the same process: create "
                    "the listener once (at module level, or guarded by `if listener is None`).")
            self.write_state()
            # Keep the connection serviced (heartbeats, emits from listeners) while waiting.
            while not self.stopping.is_set():
                self._flush_foreign()
                left = self.interval - (time.monotonic() - started)
                if left <= 0:
                    break
                self.connection.process_data_events(time_limit=min(left, 0.2))
            self._flush_foreign()

    def close(self) -> None:
        self.live = False
        shutdown = getattr(getattr(self, "module", None), "shutdown", None)
        if callable(shutdown):
            try:
                self.runner.call_hook(shutdown, self.cfg, self.startup_data)
            except Exception:
                traceback.print_exc(file=sys.stdout)
        try:
            if self.connection and self.connection.is_open:
                self.connection.close()
        except pika.exceptions.AMQPError:
            pass
        self.runner.close()
        self.write_state(force=True)
        log("flowrun-sailor: stopped")


def _noop() -> None:
    pass


def _decode(body: bytes) -> dict[str, Any]:
    try:
        msg = json.loads(body)
        if not isinstance(msg, dict):
            msg = {"body": msg}
    except ValueError:
        msg = {"body": body.decode("utf-8", "replace")}
    msg.setdefault("body", {})
    msg.setdefault("headers", {})
    return msg


def main() -> int:
    sailor = Sailor()

    def on_term(signum: int, frame: Any) -> None:
        # Record only: the loop finishes the message in hand, acks it and exits.
        sailor.stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        return sailor.run()
    except LoadError as e:
        log(f"flowrun-sailor: cannot load the function: {e}")
        return 2
    except Exception:
        log("flowrun-sailor: crashed")
        traceback.print_exc(file=sys.stdout)
        return 1
