"""A flow's state in the platform services: what `up` handed over, what its steps
left behind (snapshots, hook data, updated keys, error counts), its trace ring, and
the chores that keep it (draining, recording, ticking)."""

from __future__ import annotations

import base64
import hmac
import json
import os
import sys
import threading
import time
import traceback
import urllib.parse
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika
import pika.exceptions

from ..contract import SERVICES_CONFIG_FILE, SERVICES_DATA_DIR, amqp, names, traced, wire
from ..contract.spec import AmqpAccess, FlowSpec, ServicesConfig, SpecError
from ..contract.wire import admin_token, api_key
from .objects import Store

DATA_DIR = Path(os.environ.get("FLOWRUN_SERVICES_DATA", SERVICES_DATA_DIR))
CONFIG_FILE = Path(os.environ.get("FLOWRUN_SERVICES_CONFIG", SERVICES_CONFIG_FILE))
DRAIN_EVERY = 1.0
TRACE_RECORDS = 5000  # per flow, the latest
TRACE_BODY_CHARS = 16_384  # a body longer than this (as JSON) is shown cut
TRACE_RAW_BYTES = 64 * 1024  # a message larger than this is recorded without its body
TRACE_BUDGET_BYTES = 48 * 1024 * 1024  # per flow, for the bodies kept


def log(text: str) -> None:
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    sys.stdout.flush()


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, default=str))
    os.replace(tmp, path)


def _read_spec(path: Path) -> FlowSpec | None:
    """A flow handed over before this start (None: none, or one of another shape,
    which the next `up` of that flow hands over again)."""
    data = _read_json(path, None)
    try:
        return FlowSpec.from_json(data) if data is not None else None
    except SpecError as e:
        log(f"{path}: not read ({e}); the flow's next `up` hands it over again")
        return None


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


class Flow:
    """One flow's state: what `up` handed over, and what its steps left behind."""

    def __init__(self, root: Path, name: str, secret: str) -> None:
        self.name = name
        self.dir = root / name
        self.keys = wire.Keys.for_flow(secret, name)
        self.spec: FlowSpec | None = _read_spec(self.dir / "flow.json")
        self.snapshots: dict[str, Any] = _read_json(self.dir / "snapshots.json", {})
        self.hooks: dict[str, Any] = _read_json(self.dir / "hooks.json", {})
        self.accounts: dict[str, Any] = _read_json(self.dir / "accounts.json", {})
        self.errors: dict[str, int] = _read_json(self.dir / "errors.json", {})
        self.lock = threading.RLock()
        self.connection: Any = None
        self._channel: Any = None
        self._recorder: Recorder | None = None  # the trace queue's consumer
        # The trace ring has a lock of its own: the recorder must not wait behind a
        # chore that holds the flow's lock across round trips to the broker.
        self.trace_lock = threading.Lock()
        self.trace: deque[dict[str, Any]] = deque()
        self.trace_bytes = 0
        self.trace_seq = 0
        self.next_tick: dict[str, float] = {}
        self.broker_away = False  # said once, not at every retry while it is

    @property
    def active(self) -> bool:
        return self.spec is not None and bool(self.spec.steps)

    @property
    def recording(self) -> bool:
        return self.spec is not None and self.spec.trace_queue is not None

    def handed_over(self, spec: FlowSpec | None) -> None:
        """`up` handed the flow over anew (None: `down`): kept on the volume."""
        self.spec = spec
        if spec is None or spec.trace_queue is None:
            self.stop_recording()
        if spec is None:
            (self.dir / "flow.json").unlink(missing_ok=True)
        else:
            write_json(self.dir / "flow.json", spec.to_json())
        self.next_tick.clear()

    def save(self, what: str) -> None:
        write_json(self.dir / f"{what}.json", getattr(self, what))

    # ------------------------------------------------------------ broker side

    def record_connection(self, access: AmqpAccess) -> amqp.Connection:
        """The trace recorder's: flowrun's own client. Reading the trace (then the
        firehose's copies) with it took the services' CPU per message with the trace
        on from 337-427 to 212-225 µs (bench/profile.py): pika's I/O loop and its
        decoding of each copy's nested header tables were most of what recording
        cost the services."""
        quote = urllib.parse.quote
        return amqp.Connection(f"amqp://{quote(access.user, safe='')}:"
                               f"{quote(access.password, safe='')}@{access.host}:{access.port}/"
                               f"{quote(self._spec().vhost, safe='')}", heartbeat=60,
                               timeout=5)

    def connect(self, amqp: AmqpAccess) -> Any:
        return pika.BlockingConnection(pika.ConnectionParameters(
            host=amqp.host, port=amqp.port, virtual_host=self._spec().vhost,
            credentials=pika.PlainCredentials(amqp.user, amqp.password),
            heartbeat=60, blocked_connection_timeout=30, socket_timeout=5,
            stack_timeout=15, connection_attempts=1))

    def channel(self, amqp: AmqpAccess) -> Any:
        """One connection and one channel per flow, kept: a step-info call during
        warm-up costs a round trip, not a login."""
        if self.connection is None or not self.connection.is_open:
            self.connection = self.connect(amqp)
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self.connection.channel()
        return self._channel

    def drop_connection(self) -> None:
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except Exception:  # already broken
            pass
        self.connection = self._channel = None

    def look_after(self, amqp: AmqpAccess, now: float) -> None:
        """The flow's chores, each on its own: one that fails (a queue the flow does
        not have yet, or that a broker restart took) stops none of the others, so the
        trigger keeps ticking whatever happened to its trace."""
        chores: list[tuple[str, Callable[[], None]]] = [
            ("snapshots", lambda: self.drain_snapshots(amqp)),
            ("errors", lambda: self.count_errors(amqp)),
            ("trace", lambda: self.record_trace(amqp)),
            ("ticks", lambda: self.tick(amqp, now))]
        for what, chore in chores:
            try:
                chore()
            except pika.exceptions.ChannelClosedByBroker as e:
                # Only the channel closes; the connection stays. 404: a queue not
                # declared yet (the flow is warming up).
                if e.reply_code != 404:
                    log(f"flow {self.name}: {what}: {e.reply_text}")
            except (pika.exceptions.AMQPError, OSError) as e:
                self.drop_connection()
                if self.active and not self.broker_away:  # not one `down` took away
                    log(f"flow {self.name}: broker unavailable ({type(e).__name__}); "
                        "retrying")
                self.broker_away = True
                return
            except LookupError:  # `down` took the flow away while its chores ran
                self.drop_connection()
                return
            except Exception:
                self.drop_connection()
                traceback.print_exc(file=sys.stdout)
                return
        if self.broker_away:
            self.broker_away = False
            log(f"flow {self.name}: broker back")

    def restore_trace(self, amqp: AmqpAccess) -> None:
        """What a broker restart loses of a flow's trace, made again: RabbitMQ keeps
        no non-durable queue across a restart (the trace queue is not durable: its
        records need no disk write), nor its bindings."""
        queue, spec = self._spec().trace_queue, self._spec().trace
        if queue is None or spec is None:
            return
        ch = self.channel(amqp)
        ch.queue_declare(queue, durable=False, arguments=spec.arguments)
        ch.exchange_declare(spec.exchange, exchange_type="fanout", durable=True)
        ch.queue_bind(queue, spec.exchange)
        for exchange in spec.tapped:
            ch.queue_bind(queue, exchange, routing_key=names.TAP_KEY)
        log(f"flow {self.name}: trace recording restored")

    def drain_snapshots(self, amqp: AmqpAccess) -> None:
        """Every snapshot message waiting, folded into the per-step snapshots, saved,
        then acked: a snapshot is never acked before it is on disk."""
        if self.spec is None:
            return
        queue = self.spec.snapshot_queue

        def fold(method: Any, props: Any, body: bytes) -> None:
            found = names.of_key(self.name, method.routing_key)
            step = found[0] if found is not None and found[1] == "snapshot" else None
            try:
                value = json.loads(body)
            except ValueError:
                return
            if step is not None:
                event = (props.headers or {}).get("snapshotEvent")
                self.snapshots[step] = wire.merge_snapshot(self.snapshots.get(step), event,
                                                           value)

        self._drain(amqp, queue, fold, "snapshots")

    def _drain(self, amqp: AmqpAccess, queue: str,
               fold: Callable[[Any, Any, bytes], None], saved: str) -> None:
        """Every message waiting on `queue`, folded into this flow's state, which is
        saved before the messages are acked (nothing acked is ever lost)."""
        with self.lock:
            ch = self.channel(amqp)
            last = None
            while True:
                method, props, body = ch.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                last = method.delivery_tag
                fold(method, props, body)
            if last is not None:
                self.save(saved)
                ch.basic_ack(last, multiple=True)

    def record_trace(self, amqp: AmqpAccess) -> None:
        """See that the flow's trace queue has its consumer (a Recorder, on a thread and
        a connection of its own); one that ended (the broker went away, or restarted
        without the queue) is started anew, the queue made again first if need be."""
        queue = self.spec.trace_queue if self.spec is not None else None
        if queue is None:  # (handed_over stopped its recorder)
            return
        recorder = self._recorder
        if recorder is not None and recorder.is_alive():
            return
        if recorder is not None and recorder.missing:
            with self.lock:  # on the flow's connection, which HTTP calls share
                self.restore_trace(amqp)  # the broker restarted without it
        self._recorder = Recorder(self, amqp, queue)
        self._recorder.start()

    def stop_recording(self) -> None:
        if self._recorder is not None:
            self._recorder.stop.set()
            self._recorder = None

    def catch_up(self, timeout: float = 2.0) -> None:
        """Until what the trace queue holds now is recorded (what is waiting counts
        when a trace is asked for), or `timeout` seconds. What was published up to
        now is in the queue once its publishers' batches are (they hold records for
        traced.BATCH_SECONDS at most): that long is waited first."""
        recorder = self._recorder
        if recorder is not None and recorder.is_alive():
            time.sleep(traced.BATCH_SECONDS)
            recorder.catch_up(timeout)

    def on_trace(self, exchange: str, key: str, props: Any, body: bytes, admin: str) -> None:
        """What came in on the trace queue (the Recorder's thread): a trace batch from
        one of flowrun's publishers, or a Node.js step's publish itself, by the tap
        on its exchange (which only that step may write to)."""
        spec = self.spec.trace if self.spec is not None else None
        if spec is not None and exchange in spec.tapped:
            found = names.of_exchange(self.name, exchange)
            if found is not None:
                self._on_publish(found, key, props.headers or {}, body)
            return
        if exchange != names.trace_exchange(self.name):
            return  # nothing else is bound to the trace queue
        # A batch: the broker checked its user_id against its sender's login. A step
        # speaks for its own publishes only; flowrun's host (the broker's admin, as
        # the services are) for any.
        user = props.user_id.decode() if isinstance(props.user_id, bytes) else props.user_id
        if not user:
            return
        prefix = f"{self.name}."
        sender = user[len(prefix):] if user.startswith(prefix) else None
        if not sender and user != admin:
            return
        try:
            for key, headers, published, at in traced.records(body):
                self._on_publish(sender, key, headers, published, at)
        except traced.TraceBatchError as e:
            log(f"flow {self.name}: trace: a batch from {user} not read ({e})")

    def _on_publish(self, sender: str | None, key: str, headers: dict[str, Any],
                    body: bytes, at: int | None = None) -> None:
        """One publish, recorded if it is a message of a thread (`sender`: the step
        whose user sent the record or whose exchange it was published to, None for
        flowrun's host; `at`:
        when it was published, if its publisher said)."""
        step, kind = names.of_key(self.name, key) or ("?", "")
        if ":reply." in key and names.is_reply_key(self.name, key):  # an HTTP answer
            step, kind = str(headers.get("stepId") or "?"), "reply"
        if kind not in ("message", "error", "rebound", "reply"):
            return  # live announcements and snapshots are not messages of a thread
        if sender is not None and step != sender:
            return  # a step's record of another step's publish: not its to give
        with self.trace_lock:
            self._record(step, kind, headers, body, at)

    def _record(self, step: str, kind: str, headers: dict[str, Any], body: bytes,
                at: int | None = None) -> None:
        self.trace_seq += 1
        # Kept as it came: decrypted only when a trace is asked for, so recording
        # costs the services a dict per message, not a decryption. Bounded by count
        # and by bytes, the oldest going first.
        while self.trace and (len(self.trace) >= TRACE_RECORDS
                              or self.trace_bytes > TRACE_BUDGET_BYTES):
            self.trace_bytes -= len(self.trace.popleft()["raw"])
        self.trace_bytes += min(len(body), TRACE_RAW_BYTES)
        self.trace.append({
            "seq": self.trace_seq, "at": at or wire.now_ms(), "step": step, "kind": kind,
            "size": len(body), "raw": body[:TRACE_RAW_BYTES], "cut": len(body) > TRACE_RAW_BYTES,
            "protocol": wire.protocol_of(headers), **{k: headers.get(k) for k in (
                "messageId", "parentMessageId", "threadId", "start", "end",
                "reboundIteration")}})

    def _readable(self, stored: dict[str, Any]) -> dict[str, Any]:
        """A recorded message as `flowrun trace` shows it: its body decrypted, cut."""
        record = {k: v for k, v in stored.items() if k not in ("raw", "cut", "protocol")}
        kind, body = stored["kind"], stored["raw"]
        if stored["cut"]:
            record["body"], record["truncated"] = "(a message too large to keep)", True
            return record
        try:
            if kind == "error":
                error = wire.decode_error(self.keys, body)
                record["error"] = {k: error.get(k) for k in ("name", "message", "stack")}
                value: Any = (error.get("input") or {}).get("body") if isinstance(
                    error.get("input"), dict) else error.get("input")
            else:
                msg = wire.decode_data(self.keys, body, {"protocolVersion": stored["protocol"]})
                value = msg.get("body")
                if msg.get("passthrough"):
                    record["passthrough"] = msg["passthrough"]
        except wire.WireError as e:
            value, record["unreadable"] = None, str(e)
        text = json.dumps(value, default=str)
        if len(text) > TRACE_BODY_CHARS:
            record["body"], record["truncated"] = text[:TRACE_BODY_CHARS], True
        else:
            record["body"] = value
        return record

    def dead_letters(self, amqp: AmqpAccess, limit: int = 500) -> list[dict[str, Any]]:
        """The flow's dead letters as trace records, read without taking them: each
        is got, then all are handed back to the dead-letter queue (nack, requeue)."""
        if self.spec is None:
            return []
        queue = self.spec.dead_letter_queue
        found: list[dict[str, Any]] = []
        with self.lock:
            ch = self.channel(amqp)
            last = None
            try:
                for _ in range(limit):
                    method, props, body = ch.basic_get(queue, auto_ack=False)
                    if method is None:
                        break
                    last = method.delivery_tag
                    headers = props.headers or {}
                    source = str(headers.get("x-first-death-queue") or "")
                    step = names.step_of_queue(self.name, source) or "?"
                    record: dict[str, Any] = {
                        "seq": 0, "at": wire.now_ms(), "step": step, "kind": "dead",
                        "reason": headers.get("x-first-death-reason"), "size": len(body),
                        **{k: headers.get(k) for k in ("messageId", "parentMessageId",
                                                       "threadId", "start", "end")}}
                    try:
                        record["body"] = wire.decode_data(self.keys, body, headers).get("body")
                    except wire.WireError as e:
                        record["unreadable"] = str(e)
                    found.append(record)
            finally:
                if last is not None:
                    ch.basic_nack(last, multiple=True, requeue=True)
        return found

    def threads(self, limit: int, thread: str | None,
                extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The latest `limit` threads (or those whose id starts with `thread`), each
        with its records in the order they were published (`extra`: dead letters,
        shown in the threads they belong to)."""
        by_thread: dict[str, list[dict[str, Any]]] = {}
        with self.trace_lock:
            recorded = list(self.trace)
        known = {str(r.get("threadId")) for r in recorded}
        for record in [*recorded, *(r for r in extra or []
                                       if str(r.get("threadId")) in known)]:
            tid = str(record.get("threadId") or record.get("messageId") or "?")
            if thread and not tid.startswith(thread):
                continue
            by_thread.setdefault(tid, []).append(record)
        latest = sorted(by_thread.items(), key=lambda kv: max(r["seq"] for r in kv[1]))[-limit:]
        return [{"threadId": tid, "records": [self._readable(r) if "raw" in r else r
                                              for r in records]} for tid, records in latest]

    def count_errors(self, amqp: AmqpAccess) -> None:
        """Errors per step (from a copy of the error queue): `flowrun status` shows
        them for steps whose sailor keeps no counters of its own (Node.js)."""
        if self.spec is None:
            return
        queue = self.spec.error_tally_queue

        def count(method: Any, _props: Any, _body: bytes) -> None:
            found = names.of_key(self.name, method.routing_key)
            if found is not None and found[1] == "error":
                self.errors[found[0]] = self.errors.get(found[0], 0) + 1

        self._drain(amqp, queue, count, "errors")

    def tick(self, amqp: AmqpAccess, now: float) -> None:
        """One message per interval on each ticked trigger's input queue, as the
        platform's scheduler does; none while the previous one is still unread (a
        stopped trigger does not come back to a pile of ticks)."""
        for step, entry in (self.spec.steps if self.spec is not None else {}).items():
            interval, queue = entry.tick_interval, entry.input_queue
            if not interval or not queue or now < self.next_tick.get(step, 0):
                continue
            self.next_tick[step] = now + float(interval)
            with self.lock:
                ch = self.channel(amqp)
                waiting = ch.queue_declare(queue, passive=True).method.message_count
                if waiting:
                    continue
                message_id = wire.new_id()
                ch.basic_publish("", queue, self.keys.encrypt(wire.data_message(
                    {}, id=message_id)), pika.BasicProperties(
                    delivery_mode=2, content_type="application/json",
                    message_id=message_id,
                    headers={"messageId": message_id, "threadId": message_id,
                             "protocolVersion": wire.PROTOCOL_VERSION,
                             "taskId": self.name, "execId": self.name,
                             "start": wire.now_ms()}))

    # ------------------------------------------------------------ answers

    def account_of(self, step: str) -> str | None:
        return self.spec.account_of(step) if self.spec is not None else None

    def base_credentials(self, account: str) -> dict[str, Any]:
        for entry in (self.spec.steps if self.spec is not None else {}).values():
            if entry.account == account:
                return dict(entry.credentials or {})
        return {}

    def credentials(self, account: str) -> dict[str, Any]:
        """The credential as the flow file gives it, with the keys a component updated
        since (updateKeys), for as long as the flow file's credential is unchanged."""
        base = self.base_credentials(account)
        updated = self.accounts.get(account) or {}
        if updated.get("base") == base:
            return {**base, **(updated.get("keys") or {})}
        return base

    def step_info(self, step: str) -> dict[str, Any] | None:
        entry = self.spec.steps.get(step) if self.spec is not None else None
        if entry is None or self.spec is None:
            return None
        config = dict(entry.config)
        if entry.account:
            config.update(self.credentials(entry.account))
            config["_account"] = entry.account
        return {"id": step, "config": config, "snapshot": self.snapshots.get(step, {}),
                "variables": self.spec.variables, "is_passthrough": entry.passthrough}

    def _spec(self) -> FlowSpec:
        """The spec of a flow being served (the chores run for active flows only)."""
        if self.spec is None:
            raise LookupError(f"flow {self.name} is not handed over")
        return self.spec


class Recorder(threading.Thread):
    """A flow's trace queue, consumed on a connection and a thread of its own. The
    broker hands each copy on as it comes in (a copy that waits in a queue costs it
    a store and a fetch: bench/profile.py, the broker's CPU per message, recording
    on and off); the recorder takes what its socket holds every PAUSE seconds.
    Ends when told to, or when its connection or the queue is lost (`missing`): the
    flow's chores start another."""

    FLUSH_HEADER = "x-flowrun-recorded-up-to"
    PAUSE = 0.05  # seconds between takes of what came in

    def __init__(self, flow: Flow, amqp: AmqpAccess, queue: str) -> None:
        super().__init__(daemon=True, name=f"trace {flow.name}")
        self.flow, self.amqp, self.queue = flow, amqp, queue
        self.stop = threading.Event()
        self.missing = False
        self._connection: Any = None
        self._channel: Any = None
        self._reached: dict[str, threading.Event] = {}
        self._copies = 0  # taken in so far (marks included)

    def run(self) -> None:
        connection = None
        try:
            connection = self.flow.record_connection(self.amqp)
            self._channel = connection.channel()
            self._channel.basic_consume(self.queue, self._on_copy, auto_ack=True)
            self._connection = connection
            while not self.stop.wait(self.PAUSE):
                # What came in meanwhile waits in the socket's buffer and is taken in
                # one go: a wake-up per pause, not one per copy (at 100 msg/s through 5
                # steps, 500 wake-ups a second cost the services more than the copies).
                while True:
                    seen = self._copies
                    connection.process_data_events(time_limit=0)
                    if self._copies == seen:
                        break
        except amqp.ChannelClosedByBroker as e:
            self.missing = e.reply_code == 404
            if not self.missing:
                log(f"flow {self.flow.name}: trace: {e.reply_text}")
        except (amqp.AMQPError, OSError):
            pass  # the broker away: the chores start another when it is back
        finally:
            for reached in list(self._reached.values()):
                reached.set()  # nobody waits for a recorder that ended
            try:
                if connection is not None and connection.is_open:
                    connection.close()
            except Exception:  # already broken
                pass

    def _on_copy(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        self._copies += 1
        mark = (props.headers or {}).get(self.FLUSH_HEADER)
        if mark is not None:
            reached = self._reached.pop(mark.decode() if isinstance(mark, bytes) else mark,
                                        None)
            if reached is not None:
                reached.set()
            return
        self.flow.on_trace(method.exchange, method.routing_key, props, body, self.amqp.user)

    def catch_up(self, timeout: float) -> None:
        """Until every copy the queue holds now is recorded: a mark goes in at the
        queue's tail, and is waited for (at most `timeout` seconds)."""
        connection = self._connection
        if connection is None or not self.is_alive():
            return
        mark = os.urandom(8).hex()
        reached = self._reached[mark] = threading.Event()

        def publish() -> None:  # on the recorder's thread: the connection is its own
            self._channel.basic_publish("", self.queue, b"", amqp.Properties(
                headers={self.FLUSH_HEADER: mark}))

        try:
            connection.add_callback_threadsafe(publish)
        except Exception:  # its connection just closed: nothing more will be recorded
            return
        reached.wait(timeout)
        self._reached.pop(mark, None)


class Services:
    def __init__(self, config: ServicesConfig, root: Path) -> None:
        self.secret = config.secret
        self.amqp = config.amqp
        self.root = root
        self.flows: dict[str, Flow] = {}
        self.lock = threading.Lock()
        self.objects = Store(root)
        root.mkdir(parents=True, exist_ok=True)
        for path in sorted(root.iterdir()):
            if path.is_dir():
                self.flows[path.name] = Flow(root, path.name, self.secret)

    def flow(self, name: str) -> Flow:
        with self.lock:
            if name not in self.flows:
                self.flows[name] = Flow(self.root, name, self.secret)
            return self.flows[name]

    def who(self, header: str | None) -> tuple[str, str] | None:
        """(flow, step) of a step's Basic credentials, or None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, key = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        flow, _, step = user.partition(".")
        if not flow or not step:
            return None
        if not hmac.compare_digest(key.encode(), api_key(self.secret, flow, step).encode()):
            return None
        return flow, step

    def is_admin(self, header: str | None) -> bool:
        expected = f"Bearer {admin_token(self.secret)}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def background(self) -> None:
        """Drains snapshots and publishes ticks, forever; a broker that is away is
        waited for (flows resume when it is back)."""
        swept = 0.0
        while True:
            now = time.monotonic()
            for flow in list(self.flows.values()):
                if flow.active:
                    flow.look_after(self.amqp, now)
            if now - swept > 30:  # objects past their x-eio-ttl
                swept = now
                for name in list(self.flows):
                    with self.objects.lock:
                        self.objects.expire(name)
            time.sleep(min(DRAIN_EVERY, _next_tick_in(self.flows.values(), time.monotonic())))


def _next_tick_in(flows: Any, now: float) -> float:
    upcoming = [t for f in flows for t in f.next_tick.values()]
    return max(0.05, min(upcoming) - now) if upcoming else DRAIN_EVERY

