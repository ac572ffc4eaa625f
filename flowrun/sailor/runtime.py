"""The sailor's main loop: connect, load, start up, then consume or call the trigger.

Delivery is at-least-once: an input message is acked only after every output
it caused has been confirmed by the broker. The sailor does not wait for those
confirms before it takes the next batch: inputs are acked, in order, as their
outputs' confirms come in (a pipeline; see process_batch). On SIGTERM the
messages in hand are finished and acked, the rest of the prefetch goes back to
the queue when the channel closes, and the process exits 0.
"""

from __future__ import annotations

import gc
import json
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from typing import Any

from ..contract import LIVE_MARKER, STATE_FILE, amqp, files, names, traced, wire
from ..contract.confirms import Confirms, Outgoing
from .function import LoadError, Runner, as_message, load_function
from .leaks import LeakWatch, sample
from .stepinfo import StepInfo, StepInfoRefused, fetch_step_info

COMPONENT_DIR = os.environ.get("FLOWRUN_COMPONENT_DIR", "/app")
PREFETCH = int(os.environ.get("FLOWRUN_PREFETCH", "200"))
# An ack of inputs whose outputs are confirmed may wait this long, or until it covers
# ACK_BATCH inputs, to cover more: each ack is a command in each quorum queue's log.
# Acking later delays nothing downstream (the prefetch is far from used up).
ACK_DELAY = 0.01
ACK_BATCH = max(1, PREFETCH // 4)
RECONNECT_DELAY = 0.1
BORN = time.monotonic()
# In its first seconds a step waits for what is being made beside it (its broker
# user, the platform services): retrying often then is cheap and makes warm-up end
# as soon as they exist. Later, a missing broker is an outage: back off further.
WARMUP_SECONDS = 15.0


def _retry_cap() -> float:
    return 0.2 if time.monotonic() - BORN < WARMUP_SECONDS else 2.0
EMIT_TYPES = ("data", "error", "snapshot", "updateSnapshot", "rebound", "end", "httpReply",
              "updateKeys")
REBOUND_LIMIT = int(os.environ.get("ELASTICIO_REBOUND_LIMIT", "10"))
# As the platform's sailor: a step's error also answers the HTTP request its input
# came from (its `reply_to`), unless this is set.
NO_ERROR_REPLIES = bool(os.environ.get("ELASTICIO_NO_ERROR_REPLIES"))
REPLY_TO = "reply_to"
ROUTING_KEY_HEADER = "x-eio-routing-key"
ERROR_RESPONSE = "x-eio-error-response"


def log(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class ConsumerCancelled(Exception):
    pass


class Input:
    """One message a function is called with: decoded, with the AMQP headers it came
    with (its lineage) and its bytes as received (for errors and rebounds)."""

    def __init__(self, msg: dict[str, Any], headers: dict[str, Any] | None = None,
                 raw: bytes | None = None, properties: Any = None) -> None:
        self.msg = msg
        self.headers = headers if headers is not None else {}
        self.raw = raw
        self.properties = properties

    @classmethod
    def tick(cls) -> Input:
        """A trigger's call: no input message; each output begins its own thread."""
        return cls({"id": wire.new_id(), "body": {}, "headers": {}, "passthrough": {}})


class Context:
    """`ctx` as a function sees it. emit() works from any thread."""

    def __init__(self, sailor: Sailor) -> None:
        self._sailor = sailor
        self.step_id = sailor.step_id
        self.flow_id = sailor.flow_id
        self.logger = self
        self.variables = sailor.variables

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
        self.replica = int(env.get("FLOWRUN_REPLICA", "1") or 1)
        self.exchange = env["ELASTICIO_PUBLISH_MESSAGES_TO"]
        self.input_queue = env.get("ELASTICIO_LISTEN_MESSAGES_ON")
        self.keys = {
            "data": env["ELASTICIO_DATA_ROUTING_KEY"],
            "error": env["ELASTICIO_ERROR_ROUTING_KEY"],
            "snapshot": env["ELASTICIO_SNAPSHOT_ROUTING_KEY"],
            "rebound": env["ELASTICIO_REBOUND_ROUTING_KEY"],
        }
        self.interval = float(env.get("FLOWRUN_TRIGGER_INTERVAL", "1"))
        self._step_fetched = False
        # Config and broker credentials: from a file only this step's user may read
        # (never the environment, which /proc shows to anyone with the same uid).
        secret = _read_step_file(env.get("FLOWRUN_STEP_FILE"))
        self.secret = secret
        self.cfg = secret.get("cfg", {})
        self.amqp_uri = secret.get("amqp_uri") or env.get("ELASTICIO_AMQP_URI", "")
        self.wire_keys = wire.Keys(
            secret.get("message_password") or env.get("ELASTICIO_MESSAGE_CRYPTO_PASSWORD", ""),
            secret.get("message_iv") or env.get("ELASTICIO_MESSAGE_CRYPTO_IV", ""))
        self.variables: dict[str, Any] = {}
        self.passthrough = False  # the flow's passthrough, from the step-info call
        self.stopping = threading.Event()
        self.ctx = Context(self)
        self.runner = Runner()
        self.snapshot: Any = {}
        self.counters = {"processed": 0, "emitted": 0, "errors": 0, "calls": 0,
                         "unroutable": 0}
        # What a trigger published but never saw confirmed before its connection was
        # lost: sent again before process() is called again, so its progress (module
        # state, snapshot) never runs ahead of what the broker holds.
        self.carry: list[Outgoing] = []
        self.call_started: float | None = None
        self.call_start_ms: int | None = None
        self.beat = time.time()  # moved by the main loop only: its proof of progress
        self.leak: str | None = None
        self.live = False
        self._main_thread = threading.get_ident()
        self._collecting: list[tuple[str, Any]] | None = None
        # What listeners emit from their own threads (deque: thread-safe appends and
        # pops, without loading the queue module at every step's start).
        self._foreign: deque[tuple[str, Any, Input | None]] = deque()
        self.connection: Any = None
        self.channel: Any = None
        self.confirms: Confirms | None = None
        self._deliveries: list[tuple[Any, Any, bytes]] = []
        # Records of what was published since the last trace batch (contract/traced.py).
        self.trace_exchange = names.trace_exchange(self.flow_id)
        self._traced: list[bytes] = []
        self._traced_bytes = 0
        self._trace_due = 0.0  # (monotonic) when the oldest record must be sent
        # Inputs processed, not yet acked: (delivery tag of a batch's last input, the
        # number of its last output's publish), oldest first.
        self._unacked: deque[tuple[int, int]] = deque()
        self._acked_tag = 0  # the last delivery tag acked on this channel
        self._ackable = 0  # the last one whose outputs (and all before) are confirmed
        self._ack_due: float | None = None  # (monotonic) when a held ack must go
        self._cancelled_by_broker = False
        self._preloading = False

    # ------------------------------------------------------------ emitting

    def emit(self, event: str, payload: Any) -> None:
        if threading.get_ident() == self._main_thread and self._collecting is not None:
            self._collecting.append((event, payload))
        else:  # a listener's callback: the main loop publishes it
            self._foreign.append((event, payload, None))

    def publish_event(self, event: str, payload: Any, parent: Input | None) -> None:
        parent = parent or Input.tick()
        if event == "data":
            message = as_message(payload, parent.msg)
            if self.passthrough and self.kind != "mapper":
                # As the platform's sailor: each output keeps what this step emitted,
                # under its id, beside what the steps before kept (a mapper, hidden on
                # the platform, keeps nothing of its own).
                message["passthrough"] = {
                    **(parent.msg.get("passthrough") or {}),
                    self.step_id: {k: v for k, v in message.items() if k != "passthrough"}}
            key = self.keys["data"]
            routed = self._routed_by(message)
            if routed is not None:  # a reply step's answer, to the request's reply key
                key = routed
            headers = wire.outgoing_headers(parent.headers, self.step_id, self.flow_id,
                                            message_id=message["id"], **self._function_headers())
            self._publish(key, self.wire_keys.encrypt(message), headers)
            self.counters["emitted"] += 1
        elif event == "httpReply":
            self._http_reply(payload, parent)
        elif event == "error":
            self.counters["errors"] += 1
            self._publish_error(payload, parent)
        elif event in ("snapshot", "updateSnapshot"):
            kind = wire.SNAPSHOT_MERGE if event == "updateSnapshot" else wire.SNAPSHOT_REPLACE
            self.snapshot = wire.merge_snapshot(self.snapshot, kind, payload)
            headers = wire.outgoing_headers(parent.headers, self.step_id, self.flow_id,
                                            snapshotEvent=kind)
            self._publish(self.keys["snapshot"], json.dumps(payload, default=str).encode(),
                          headers)
        elif event == "rebound":
            self._rebound(payload, parent)
        else:  # end, updateKeys: nothing to route in a real-time flow
            pass

    def _reply_key(self, parent: Input) -> str | None:
        """The reply key of the request `parent` descends from, if it is one of this
        flow's (a `reply_to` is carried from step to step; a step that set another
        could not make us publish anywhere but to a reply of our own flow)."""
        key = parent.headers.get(REPLY_TO)
        return key if isinstance(key, str) and names.is_reply_key(self.flow_id, key) else None

    def _routed_by(self, message: dict[str, Any]) -> str | None:
        """A data message whose headers name a reply key (`X-EIO-Routing-Key`, the
        platform's request-reply component): published with that key, the header
        dropped. Any other key there is not this step's to publish with: ignored."""
        headers = message.get("headers") or {}
        for name in list(headers):
            if str(name).lower() == ROUTING_KEY_HEADER:
                key = headers.pop(name)
                if isinstance(key, str) and names.is_reply_key(self.flow_id, key):
                    return key
                log(f"WARNING an output named routing key {key!r}, which is not a reply "
                    "of this flow's requests; sent on to the next step instead")
        return None

    def _http_reply(self, reply: Any, parent: Input) -> None:
        """`ctx.emit("httpReply", {"statusCode", "headers", "body"})`: the answer to
        the HTTP request the input came from."""
        key = self._reply_key(parent)
        if key is None:
            log("WARNING httpReply emitted, but no HTTP request waits for this message "
                "(no reply_to): the flow is not called over HTTP, or has no reply step")
            return
        value = reply if isinstance(reply, dict) else {"body": reply}
        headers = wire.outgoing_headers(parent.headers, self.step_id, self.flow_id,
                                        **self._function_headers())
        self._publish(key, self.wire_keys.encrypt(value), headers)

    def _function_headers(self) -> dict[str, Any]:
        # `start`: when the step began on its input, as the platform's sailor says it;
        # with the input's `end` it tells time in the queue from time in the step.
        return {"function": self.function, "compId": self.step_id,
                "start": self.call_start_ms or wire.now_ms()}

    def _publish_error(self, error: Any, parent: Input) -> None:
        if isinstance(error, BaseException):
            name, text = type(error).__name__, str(error)
            import traceback  # on errors only: not at every start
            stack = "".join(traceback.format_exception(error))
        else:
            name, text, stack = "Error", str(error), ""
        log(f"ERROR {name}: {text}")
        raw = parent.raw if parent.raw is not None else self.wire_keys.encrypt(parent.msg)
        headers = wire.outgoing_headers(parent.headers, self.step_id, self.flow_id,
                                        **self._function_headers())
        self._publish(self.keys["error"], wire.error_payload(self.wire_keys, name, text, stack,
                                                             raw), headers)
        key = self._reply_key(parent)
        if key is not None and not NO_ERROR_REPLIES:
            self._publish(key, self.wire_keys.encrypt({"name": name, "message": text,
                                                       "stack": stack}),
                          {**headers, ERROR_RESPONSE: True})

    def _rebound(self, reason: Any, parent: Input) -> None:
        if parent.raw is None or not self.input_queue:
            log(f"WARNING rebound outside of an input message ignored: {reason}")
            return
        count = int(parent.headers.get("reboundIteration") or 0) + 1
        if count > REBOUND_LIMIT:
            self.publish_event("error", RuntimeError(f"rebound limit reached: {reason}"), parent)
            return
        kept = {k: v for k, v in parent.headers.items()
                if not k.startswith("x-") or k.startswith(wire.META_PREFIX)}
        headers = {**kept, "reboundIteration": count, "reboundReason": str(reason),
                   "end": wire.now_ms()}
        # The rebound queue holds it for a while, then dead-letters it back to our input,
        # as it came: same body, same messageId (it is the same message, again).
        self._publish(self.keys["rebound"], parent.raw, headers)

    def _publish(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        assert self.confirms is not None
        self.confirms.publish(
            self.exchange, key, body,
            amqp.Properties(
                delivery_mode=2, content_type="application/json", content_encoding="utf8",
                message_id=headers.get("messageId"), headers=headers,
            ),
        )
        if key != self.keys["snapshot"]:  # a snapshot is no message of a thread
            if not self._traced:
                self._trace_due = time.monotonic() + traced.BATCH_SECONDS
            record = traced.record(key, headers, body, wire.now_ms())
            self._traced.append(record)
            self._traced_bytes += len(record)

    def _send_trace(self, due_only: bool = False) -> None:
        """What was published since the last trace batch, told to the trace in one
        message (`due_only`: only once the oldest record has waited BATCH_SECONDS, or
        the batch is large). A step that keeps up takes one input at a time: one
        message per batch of inputs would have been the firehose's one per publish.
        Its user_id is checked by the broker: the services take it as this step's
        word about its own publishes."""
        if not self._traced or (due_only and time.monotonic() < self._trace_due
                                and self._traced_bytes < traced.BATCH_BYTES):
            return
        assert self.confirms is not None
        batch, self._traced, self._traced_bytes = b"".join(self._traced), [], 0
        self.confirms.publish_lossy(self.trace_exchange, "", batch, amqp.Properties(
            delivery_mode=1, user_id=self.connection.user))

    def _wait_limit(self, longest: float) -> float:
        """How long the loop may wait for the broker: no longer than the trace's
        records, or an ack held back, may wait."""
        due = [self._trace_due] if self._traced else []
        if self._ack_due is not None:
            due.append(self._ack_due)
        if not due:
            return longest
        return max(0.0, min(longest, min(due) - time.monotonic()))

    def _flush_foreign(self) -> None:
        published = False
        while True:
            try:
                event, payload, parent = self._foreign.popleft()
            except IndexError:
                break
            self.publish_event(event, payload, parent)
            published = True
        if published:
            self.confirm_outputs()

    def confirm_outputs(self) -> bool:
        """Wait until every output is confirmed and has reached a queue. One that found
        no queue (the flow's topology is incomplete) is sent again, with a growing pause,
        and the input it came from stays unacked meanwhile. False when asked to stop
        before that: the input then goes back to its queue."""
        assert self.confirms is not None
        self._send_trace()
        delay = 0.2
        while True:
            failed = self.confirms.wait()
            # An answer to a request nobody waits for (the flow has no reply queue):
            # dropped, as the platform's sailor does, not sent again forever.
            failed = [f for f in failed if not names.is_reply_key(self.flow_id, f[1])]
            if not failed:
                return True
            self.counters["unroutable"] += len(failed)
            keys = ", ".join(sorted({key for _x, key, _b, _p in failed}))
            log(f"WARNING {len(failed)} output(s) reached no queue (routing key {keys}): "
                f"the flow's queues are missing; not acking the input, sending again in "
                f"{delay:.1f} s. `flowrun up` declares them again.")
            self.write_state()
            self.connection.sleep(delay)
            self.beat = time.time()
            if self.stopping.is_set():
                return False
            for exchange, key, body, properties in failed:
                self.confirms.publish(exchange, key, body, properties)
            delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------ calling

    def call(self, given: Input) -> None:
        """Call process() once and publish (confirmed) everything it produced."""
        self._collecting = []
        self.call_started = time.time()
        self.call_start_ms = int(self.call_started * 1000)
        try:
            results = self.runner.run(self.module.process, given.msg, self.cfg, self.snapshot,
                                      self.ctx)
            events = self._collecting + [("data", r) for r in results]
        except Exception as e:  # the function's own failure: an error event, flow goes on
            import traceback
            traceback.print_exc(file=sys.stdout)
            events = self._collecting + [("error", e)]
        finally:
            self._collecting = None
            self.call_started = None
        for event, payload in events:
            self.publish_event(event, payload, given)
        # What a listener emits later, between calls, starts when it is emitted.
        self.call_start_ms = None

    # ------------------------------------------------------------ state

    def write_state(self) -> None:
        """At changes of `live` and `leak`; the watchdog writes it every second too,
        so the hot path (one batch of messages after another) never does."""
        state = {"live": self.live, "leak": self.leak, "pid": os.getpid(), "beat": self.beat,
                 "in_call_since": self.call_started, **self.counters}
        tmp = f"{STATE_FILE}.{threading.get_ident()}.tmp"
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
        delay = RECONNECT_DELAY
        said = 0.0
        while not self.stopping.is_set():
            try:
                self.connection = amqp.Connection(self.amqp_uri, heartbeat=60)
                self.channel = self.connection.channel()
                self.confirms = Confirms(self.connection, self.channel)
                self._deliveries = []
                # (a trigger's carried outputs were recorded when first sent)
                self._traced, self._traced_bytes = [], 0
                self._unacked.clear()  # delivery tags are a channel's: the old ones are void
                self._acked_tag, self._ackable, self._ack_due = 0, 0, None
                self._cancelled_by_broker = False
                return
            except (amqp.AMQPError, OSError) as e:
                # OSError: while the broker's container restarts, its name on the flow's
                # network does not resolve (gaierror); that is waiting too, not a crash
                # (a crash would restart this process and lose a trigger's state).
                # At warm-up the step's broker user is made only once the flow's queues
                # exist: a refused login then is expected, and said once, not each time.
                if time.monotonic() - said > 10:
                    log(f"waiting for the broker ({type(e).__name__})")
                    said = time.monotonic()
                self.stopping.wait(delay)
                delay = min(delay * 1.5, _retry_cap())

    def fetch_step(self) -> None:
        """The platform's step-info call, once per process: config (credentials merged
        in), the latest snapshot this step emitted (kept across restarts, redeploys and
        `down`), and the flow's variables. Without platform services (a sailor run by
        hand), the config of the step file stands."""
        if self._step_fetched or not self.secret.get("api_uri"):
            return
        info: StepInfo = fetch_step_info(self.secret, self.flow_id, self.step_id,
                                         self.stopping, log)
        self.cfg = info.config
        self.snapshot = info.snapshot
        self.passthrough = info.is_passthrough
        self.variables.clear()
        self.variables.update(info.variables)
        if info.snapshot:
            log(f"restored the snapshot this step emitted last: "
                f"{json.dumps(info.snapshot, default=str)[:200]}")
        self._step_fetched = True

    def watchdog(self) -> None:
        """Writes the state file every second from its own thread, so that a main loop
        stuck inside process() shows as such: `beat` stops moving, `in_call_since`
        says since when (`flowrun status` reports the step hung)."""
        while not self.stopping.wait(1.0):
            try:
                self.write_state()
            except OSError:
                pass

    def run(self) -> int:
        threading.Thread(target=self.watchdog, daemon=True, name="watchdog").start()
        self.fetch_step()
        if self.stopping.is_set():
            self.close()
            return 0
        self.load()
        gc.freeze()  # the imports stay for the process's life (see __main__.py)
        gc.enable()
        while not self.stopping.is_set():
            self.connect()
            if self.stopping.is_set():
                break
            try:
                # A trigger with an input of its own (a webhook trigger: the gateway puts
                # each HTTP request there) is called once per message, as an action.
                if self.kind == "trigger" and not self.input_queue:
                    self.run_trigger()
                else:
                    self.run_consumer()
            except (amqp.AMQPConnectionError, amqp.AMQPChannelError,
                    amqp.StreamLostError, amqp.ConnectionClosedByBroker,
                    ConsumerCancelled) as e:
                # The broker restarted or dropped us: unacked input goes back to its
                # queue on the broker's side, so reconnecting loses nothing. A trigger
                # has no input to be redelivered: it keeps what was not confirmed.
                if self.confirms is not None and self.kind == "trigger" \
                        and not self.input_queue:
                    self.carry = [*self.carry, *self.confirms.unsent()]
                self.live = False
                self.write_state()
                log(f"broker connection lost ({type(e).__name__}: {e}); reconnecting")
                self._drop_connection()
                self.stopping.wait(RECONNECT_DELAY)
        self.close()
        return 0

    def announce_live(self) -> None:
        # To the supervisor over the broker (the quickest path, and proof that this
        # step's connection works), and to the log for anyone reading it later.
        # Mandatory, like every publish: confirmed and routed (to the flow's live
        # queue), it proves the step can publish into its flow, not only consume.
        assert self.confirms is not None
        live_key = names.live_key(self.flow_id, self.step_id)
        self.confirms.publish(self.exchange, live_key, json.dumps(
            {"step": self.step_id, "replica": self.replica, "pid": os.getpid(),
             "at": time.time()}).encode(),
            amqp.Properties(delivery_mode=1, content_type="application/json"))
        if not self.confirm_outputs():
            return
        self.live = True
        self.write_state()
        log(f"{LIVE_MARKER} step={self.step_id} function={self.function} kind={self.kind}"
            + (f" replica={self.replica}" if self.replica > 1 else ""))
        if not self._preloading:
            self._preloading = True
            threading.Thread(target=_preload, args=(self.kind,), daemon=True,
                             name="preload").start()

    def run_consumer(self) -> None:
        assert self.input_queue
        # One message at a time until one has gone through: if the message at the head
        # of the queue is what crashed us, only its delivery count grows, not that of a
        # whole prefetch of innocent messages, so only it reaches the dead-letter queue.
        self.channel.basic_qos(prefetch_count=1)
        # The broker cancels a consumer whose queue is deleted; the channel
        # then simply stops delivering. Noticed, it is a reason to connect anew.
        self.channel.add_on_cancel_callback(self.on_cancel)
        tag = self.channel.basic_consume(self.input_queue, self.on_delivery)
        careful = True
        self.announce_live()
        while not self.stopping.is_set():
            self.beat = time.time()
            if not self._deliveries:
                self.connection.process_data_events(time_limit=self._wait_limit(0.2))
            if self._cancelled_by_broker:
                raise ConsumerCancelled(f"the broker cancelled consuming {self.input_queue} "
                                        "(its queue was deleted?)")
            if self.process_batch(wait=careful) and careful:
                # RabbitMQ applies a new prefetch to new consumers only: consume anew.
                self.channel.basic_cancel(tag)
                self.channel.basic_qos(prefetch_count=PREFETCH)
                tag = self.channel.basic_consume(self.input_queue, self.on_delivery)
                careful = False
            self._flush_foreign()
            self.ack_confirmed()
            self._send_trace(due_only=True)
        # Stopping: what was processed is acked once its outputs are confirmed;
        # deliveries handed to us but not started go back to the queue when the channel
        # closes. Nothing in hand is left half done.
        self.ack_confirmed(wait=True)

    def on_cancel(self, frame: Any) -> None:
        self._cancelled_by_broker = True

    def _drop_connection(self) -> None:
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except Exception:  # already broken: nothing to close cleanly
            pass

    def on_delivery(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._deliveries.append((method, properties, body))

    def process_batch(self, wait: bool = False) -> bool:
        """Call process() for each delivery in hand and publish the outputs; the batch
        is acked (one frame) once they are all confirmed: at once with `wait`, else
        when their confirms have come in, while the next batches are processed. Not
        waiting keeps the broker's work in large batches and the step busy while its
        outputs are written to disk. False when there was nothing to do."""
        batch, self._deliveries = self._deliveries, []
        if not batch:
            return False
        for method, properties, body in batch:
            headers = dict(properties.headers or {})
            try:
                msg = wire.decode_data(self.wire_keys, body, headers)
            except wire.WireError as e:
                # Not this flow's encoding: processing it cannot succeed. Rejected, it
                # goes to the flow's dead-letter queue (the platform's sailor does so too).
                log(f"ERROR message {headers.get('messageId')} cannot be read: {e}; "
                    "dead-lettered")
                self.counters["errors"] += 1
                self.channel.basic_nack(method.delivery_tag, multiple=False, requeue=False)
                continue
            self.call(Input(msg, headers, body, properties))
            self.counters["processed"] += 1
            self.beat = time.time()
        assert self.confirms is not None
        self._unacked.append((batch[-1][0].delivery_tag, self.confirms.published))
        self._send_trace(due_only=True)  # (its confirm holds back no ack)
        self.ack_confirmed(wait)
        return True

    def ack_confirmed(self, wait: bool = False) -> None:
        """Ack, in one frame, the inputs whose outputs (and those of every input before
        them) are all confirmed. With `wait`, or when an output came back (no queue for
        it), first wait for every confirm, sending what came back again: an input is
        never acked before its outputs are in a queue. Stopping meanwhile, the
        unacked inputs go back to their queue. Without `wait`, an ack that would cover
        few inputs waits up to ACK_DELAY for more (the loop wakes for it)."""
        assert self.confirms is not None
        if self._unacked:
            if wait or self.confirms.failed:
                if not self.confirm_outputs():
                    return
                settled = self.confirms.published
            else:
                settled = self.confirms.settled()
            while self._unacked and self._unacked[0][1] <= settled:
                self._ackable = self._unacked.popleft()[0]
        if self._ackable <= self._acked_tag:
            return
        if not wait and self._ackable - self._acked_tag < ACK_BATCH:
            now = time.monotonic()
            if self._ack_due is None:
                self._ack_due = now + ACK_DELAY
            if now < self._ack_due:
                return
        self.channel.basic_ack(self._ackable, multiple=True)
        self._acked_tag, self._ack_due = self._ackable, None

    def run_trigger(self) -> None:
        watch = LeakWatch()
        assert self.confirms is not None
        if self.carry:
            log(f"sending again {len(self.carry)} output(s) not confirmed before the "
                "connection was lost")
            for exchange, key, body, properties in self.carry:
                self.confirms.publish(exchange, key, body, properties)
            self.carry = []
            if not self.confirm_outputs():
                return
        self.announce_live()
        while not self.stopping.is_set():
            started = time.monotonic()
            self.call(Input.tick())
            self.counters["calls"] += 1
            self.counters["processed"] += 1
            if not self.confirm_outputs():
                return
            found = watch.observe(*sample())
            if found:
                self.leak = found
                log(f"WARNING trigger '{self.function}' leaks listeners: {found}. A real-time "
                    "trigger's process() is called again and again in the same process: create "
                    "the listener once (at module level, or guarded by `if listener is None`).")
            # Keep the connection serviced (heartbeats, emits from listeners) while waiting.
            while not self.stopping.is_set():
                self.beat = time.time()
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
                import traceback
                traceback.print_exc(file=sys.stdout)
        try:
            if self.connection and self.connection.is_open:
                self.connection.close()
        except amqp.AMQPError:
            pass
        self.runner.close()
        self.write_state()
        log("flowrun-sailor: stopped")




def _preload(kind: str) -> None:
    """Once live: what the first message would load otherwise (cryptography; for a
    mapper, jsonata), so that it is not 20-40 ms late at each step. Left out of the
    start, it is loaded at the lowest CPU priority: while the flow's other steps
    still start it mostly waits for them, then it takes a few tens of milliseconds."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except OSError:
        pass
    wire.preload()
    if kind == "mapper":
        try:
            import jsonata  # noqa: F401
        except ImportError:
            pass


def _read_step_file(path: str | None) -> dict[str, Any]:
    """The step's private file, received on standard input at the container's first
    start (files.py). Without one (a sailor run by hand), the environment stands."""
    if not path:
        return {}
    files.receive(path)
    with open(path) as f:
        return dict(json.load(f))


def stop_on_signals(stopping: threading.Event) -> None:
    """SIGTERM and SIGINT set `stopping`. A handler runs on the main thread between
    any two of its bytecodes, also inside Event.wait() holding the Event's lock, which
    Event.set() would then wait on forever (the step would sit out Docker's grace and
    be killed). So the handler only puts into a SimpleQueue (its put() is reentrant),
    and a thread of its own sets the Event. The relay thread starts while the signals
    are still blocked and keeps them blocked: they are the main thread's to take."""
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def relay() -> None:
        signals.get()
        stopping.set()

    def on_signal(signum: int, frame: Any) -> None:
        signals.put(signum)

    threading.Thread(target=relay, daemon=True, name="signals").start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Blocked until now (__main__): one that came meanwhile is taken here.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})


def main() -> int:
    try:
        sailor = Sailor()
    except files.FilesMissing as e:
        log(f"flowrun-sailor: {e}")
        return 1

    # Record only: the loop finishes the message in hand, acks it and exits.
    stop_on_signals(sailor.stopping)
    try:
        return sailor.run()
    except StepInfoRefused as e:
        log(f"flowrun-sailor: {e}")
        return 1
    except LoadError as e:
        log(f"flowrun-sailor: cannot load the function: {e}")
        return 2
    except Exception:
        log("flowrun-sailor: crashed")
        import traceback
        traceback.print_exc(file=sys.stdout)
        return 1
