"""The platform services: what a hosted platform answers to its sailors, served per host.

One long-lived container (`flowrun-services`) beside the broker, running this
module, for as long as flows run (also after `flowrun up -d` has returned):

- `GET /v1/tasks/{flow}/steps/{step}`: the step-info call every sailor makes
  at start: `config` (the step's config with its credentials merged in, plus
  `_account`), its latest `snapshot`, the flow's `variables`, `is_passthrough`.
- `POST|GET|DELETE /sailor-support/hooks/task/{flow}/startup/data`: start-up
  hook data.
- `PUT /v1/accounts/{account}`: a component's `updateKeys`.
- Snapshots: every step's snapshot messages (one queue per flow) are drained
  into a per-step snapshot, `snapshot` replacing and `updateSnapshot` merging,
  kept on a volume: a trigger continues from its last state after a crash, a
  redeploy or `down` without `--purge`.
- Trace: a copy of every message, error and rebound of a flow (RabbitMQ's
  firehose into a bounded queue) is recorded in a bounded ring per flow:
  lineage headers, times, the body (cut), for `flowrun trace`. Dead letters
  are read without being taken when a trace is asked for.
- Ticks: a Node.js trigger's `process` runs once per message on its input
  queue, as on the platform, whose scheduler publishes one per interval; so
  does this one (skipping a tick while the last is still unread).
- `/admin/...`: the host's `flowrun up` and `down` hand a flow's steps over
  (admin token), on a port published on loopback only.

Every caller authenticates. A step's user is `<flow>.<step>` with a key derived
from the host's secret; it may read its own step only, its own flow's hook
data, and its own account. The container sits on each flow's networks, so a step
reaches it by the alias `platform`; nothing is published beyond loopback.
Served by uvicorn, with the limits below (see "serving"): any step and any local
user can reach this server, and none of them may starve it for the others.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import re
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from . import SERVICES_CONFIG_FILE, SERVICES_DATA_DIR, files, wire
from .wire import admin_token, api_key

PORT = 9090
DATA_DIR = Path(os.environ.get("FLOWRUN_SERVICES_DATA", SERVICES_DATA_DIR))
CONFIG_FILE = Path(os.environ.get("FLOWRUN_SERVICES_CONFIG", SERVICES_CONFIG_FILE))
DRAIN_EVERY = 1.0
TRACE_RECORDS = 5000  # per flow, the latest
TRACE_BODY_CHARS = 16_384  # a body longer than this (as JSON) is shown cut
TRACE_RAW_BYTES = 64 * 1024  # a message larger than this is recorded without its body
TRACE_BUDGET_BYTES = 48 * 1024 * 1024  # per flow, for the bodies kept
_STEP_PATH = re.compile(r"^/v1/tasks/([^/]+)/steps/([^/]+)$")
_HOOK_PATH = re.compile(r"^/sailor-support/hooks/task/([^/]+)/startup/data$")
_ACCOUNT_PATH = re.compile(r"^/v1/accounts/([^/]+)$")
_ADMIN_FLOW_PATH = re.compile(r"^/admin/flows/([^/]+)$")
_ADMIN_TRACE_PATH = re.compile(r"^/admin/flows/([^/]+)/trace$")


def log(text: str) -> None:
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    sys.stdout.flush()


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, default=str))
    os.replace(tmp, path)


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
        self.spec: dict[str, Any] = _read_json(self.dir / "flow.json", {})
        self.snapshots: dict[str, Any] = _read_json(self.dir / "snapshots.json", {})
        self.hooks: dict[str, Any] = _read_json(self.dir / "hooks.json", {})
        self.accounts: dict[str, Any] = _read_json(self.dir / "accounts.json", {})
        self.errors: dict[str, int] = _read_json(self.dir / "errors.json", {})
        self.lock = threading.RLock()
        self.connection: Any = None
        self._channel: Any = None
        self._tracing: Any = None  # the channel the trace consumer is on
        self.trace: deque[dict[str, Any]] = deque()
        self.trace_bytes = 0
        self.trace_seq = 0
        self.next_tick: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return bool(self.spec.get("steps"))

    def save(self, what: str) -> None:
        _write_json(self.dir / f"{what}.json", getattr(self, what))

    # ------------------------------------------------------------ broker side

    def channel(self, amqp: dict[str, Any]) -> Any:
        """One connection and one channel per flow, kept: a step-info call during
        warm-up costs a round trip, not a login."""
        if self.connection is None or not self.connection.is_open:
            self.connection = pika.BlockingConnection(pika.ConnectionParameters(
                host=amqp["host"], port=int(amqp["port"]), virtual_host=self.spec["vhost"],
                credentials=pika.PlainCredentials(amqp["user"], amqp["password"]),
                heartbeat=60, blocked_connection_timeout=30, socket_timeout=5,
                stack_timeout=15, connection_attempts=1))
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
        self.connection = self._channel = self._tracing = None

    def look_after(self, amqp: dict[str, Any], now: float) -> None:
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
                log(f"flow {self.name}: broker unavailable ({type(e).__name__}); retrying")
                return
            except Exception:
                self.drop_connection()
                traceback.print_exc(file=sys.stdout)
                return

    def restore_trace(self, amqp: dict[str, Any]) -> None:
        """What a broker restart loses of a flow's trace, made again: RabbitMQ keeps
        neither a vhost's firehose setting nor a non-durable queue across a restart
        (the trace queue is not durable: its copies need no disk write)."""
        queue, spec = self.spec.get("trace_queue"), self.spec.get("trace")
        if not queue or not isinstance(spec, dict):
            return
        vhost = urllib.parse.quote(self.spec["vhost"], safe="")
        management = f"http://{amqp['host']}:{int(amqp.get('management_port', 15672))}"
        token = base64.b64encode(f"{amqp['user']}:{amqp['password']}".encode()).decode()
        request = urllib.request.Request(
            f"{management}/api/vhosts/{vhost}", method="PUT",
            data=json.dumps({"tracing": True}).encode(),
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5):
            pass
        ch = self.channel(amqp)
        ch.queue_declare(queue, durable=False, arguments=spec.get("arguments") or {})
        ch.queue_bind(queue, spec["exchange"], routing_key=spec["key"])
        log(f"flow {self.name}: trace recording restored")

    def drain_snapshots(self, amqp: dict[str, Any]) -> None:
        """Every snapshot message waiting, folded into the per-step snapshots, saved,
        then acked: a snapshot is never acked before it is on disk."""
        queue = self.spec.get("snapshot_queue")
        if not queue:
            return
        def fold(method: Any, props: Any, body: bytes) -> None:
            step = _step_of_key(self.name, method.routing_key)
            try:
                value = json.loads(body)
            except ValueError:
                return
            if step is not None:
                event = (props.headers or {}).get("snapshotEvent")
                self.snapshots[step] = wire.merge_snapshot(self.snapshots.get(step), event,
                                                           value)

        self._drain(amqp, queue, fold, "snapshots")

    def _drain(self, amqp: dict[str, Any], queue: str,
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

    def record_trace(self, amqp: dict[str, Any]) -> None:
        """Take in what the flow's trace queue holds (a consumer on the flow's kept
        channel, serviced here, so a burst of messages is not a burst of round trips)."""
        queue = self.spec.get("trace_queue")
        if not queue:
            return
        with self.lock:
            ch = self.channel(amqp)
            if self._tracing is not ch:
                try:
                    ch.basic_consume(queue, self._on_trace, auto_ack=True)
                except pika.exceptions.ChannelClosedByBroker as e:
                    if e.reply_code != 404 or not self.spec.get("trace"):
                        raise
                    self.restore_trace(amqp)  # the broker restarted without it
                    ch = self.channel(amqp)
                    ch.basic_consume(queue, self._on_trace, auto_ack=True)
                self._tracing = ch
            self.connection.process_data_events(time_limit=0)

    def _on_trace(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        # A firehose copy: the publish's routing key and properties are in its headers.
        firehose = props.headers or {}
        keys = firehose.get("routing_keys") or [b""]
        key = keys[0].decode() if isinstance(keys[0], bytes) else str(keys[0])
        rest = key[len(self.name) + 1:]
        step, _, kind = rest.rpartition(".")
        if kind not in ("message", "error", "rebound"):
            return  # live announcements and snapshots are not messages of a thread
        headers = (firehose.get("properties") or {}).get("headers") or {}
        self.trace_seq += 1
        # Kept as it came: decrypted only when a trace is asked for, so recording
        # costs the services a dict per message, not a decryption. Bounded by count
        # and by bytes, the oldest going first.
        while self.trace and (len(self.trace) >= TRACE_RECORDS
                              or self.trace_bytes > TRACE_BUDGET_BYTES):
            self.trace_bytes -= len(self.trace.popleft()["raw"])
        self.trace_bytes += min(len(body), TRACE_RAW_BYTES)
        self.trace.append({
            "seq": self.trace_seq, "at": wire.now_ms(), "step": step, "kind": kind,
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
                value = wire.decode_data(self.keys, body, {
                    "protocolVersion": stored["protocol"]}).get("body")
        except wire.WireError as e:
            value, record["unreadable"] = None, str(e)
        text = json.dumps(value, default=str)
        if len(text) > TRACE_BODY_CHARS:
            record["body"], record["truncated"] = text[:TRACE_BODY_CHARS], True
        else:
            record["body"] = value
        return record

    def dead_letters(self, amqp: dict[str, Any], limit: int = 500) -> list[dict[str, Any]]:
        """The flow's dead letters as trace records, read without taking them: each
        is got, then all are handed back to the dead-letter queue (nack, requeue)."""
        queue = self.spec.get("dead_letter_queue")
        if not queue:
            return []
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
                    step = source[len(self.name) + 1:].rsplit(":", 1)[0] if source.startswith(
                        f"{self.name}:") else "?"
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
        known = {str(r.get("threadId")) for r in self.trace}
        for record in [*self.trace, *(r for r in extra or []
                                       if str(r.get("threadId")) in known)]:
            tid = str(record.get("threadId") or record.get("messageId") or "?")
            if thread and not tid.startswith(thread):
                continue
            by_thread.setdefault(tid, []).append(record)
        latest = sorted(by_thread.items(), key=lambda kv: max(r["seq"] for r in kv[1]))[-limit:]
        return [{"threadId": tid, "records": [self._readable(r) if "raw" in r else r
                                              for r in records]} for tid, records in latest]

    def count_errors(self, amqp: dict[str, Any]) -> None:
        """Errors per step (from a copy of the error queue): `flowrun status` shows
        them for steps whose sailor keeps no counters of its own (Node.js)."""
        queue = self.spec.get("error_tally_queue")
        if not queue:
            return
        def count(method: Any, _props: Any, _body: bytes) -> None:
            step = _step_of_key(self.name, method.routing_key, ".error")
            if step is not None:
                self.errors[step] = self.errors.get(step, 0) + 1

        self._drain(amqp, queue, count, "errors")

    def tick(self, amqp: dict[str, Any], now: float) -> None:
        """One message per interval on each ticked trigger's input queue, as the
        platform's scheduler does; none while the previous one is still unread (a
        stopped trigger does not come back to a pile of ticks)."""
        for step, spec in (self.spec.get("steps") or {}).items():
            interval = spec.get("tick_interval")
            queue = spec.get("input_queue")
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
        spec = (self.spec.get("steps") or {}).get(step) or {}
        return spec.get("account")

    def base_credentials(self, account: str) -> dict[str, Any]:
        for spec in (self.spec.get("steps") or {}).values():
            if spec.get("account") == account:
                return dict(spec.get("credentials") or {})
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
        spec = (self.spec.get("steps") or {}).get(step)
        if spec is None:
            return None
        config = dict(spec.get("config") or {})
        account = spec.get("account")
        if account:
            config.update(self.credentials(account))
            config["_account"] = account
        return {"id": step, "config": config, "snapshot": self.snapshots.get(step, {}),
                "variables": self.spec.get("variables") or {},
                "is_passthrough": bool(spec.get("passthrough", False))}


def _step_of_key(flow: str, key: str, suffix: str = ".snapshot") -> str | None:
    prefix = f"{flow}."
    if key.startswith(prefix) and key.endswith(suffix) and len(key) > len(prefix + suffix):
        return key[len(prefix):-len(suffix)]
    return None


class Services:
    def __init__(self, config: dict[str, Any], root: Path) -> None:
        self.secret: str = config["secret"]
        self.amqp: dict[str, Any] = config["amqp"]
        self.root = root
        self.flows: dict[str, Flow] = {}
        self.lock = threading.Lock()
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

    def require_admin(self, call: Call) -> None:
        if not self.is_admin(call.authorization):
            raise Reply(401, "admin token required")

    def background(self) -> None:
        """Drains snapshots and publishes ticks, forever; a broker that is away is
        waited for (flows resume when it is back)."""
        while True:
            now = time.monotonic()
            for flow in list(self.flows.values()):
                if flow.active:
                    flow.look_after(self.amqp, now)
            tracing = any(f.active and f.spec.get("trace_queue") for f in self.flows.values())
            time.sleep(min(0.2 if tracing else DRAIN_EVERY,
                           _next_tick_in(self.flows.values(), time.monotonic())))


def _next_tick_in(flows: Any, now: float) -> float:
    upcoming = [t for f in flows for t in f.next_tick.values()]
    return max(0.05, min(upcoming) - now) if upcoming else DRAIN_EVERY


class Reply(Exception):
    """An answer decided before the call's own work: a refusal, a bad request."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.value = code, {"message": message}


@dataclass(frozen=True)
class Call:
    """One HTTP request, as the routes see it: read whole, within its limits."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    body: bytes = b""

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else {}
        except ValueError as e:
            raise Reply(400, f"the body is not JSON ({e})") from None


def route(s: Services, call: Call) -> tuple[int, Any]:
    """Who may call what; blocking (the broker, the disk), so it runs on a worker."""
    path = call.path
    if path == "/healthz":
        return 200, {"ok": True}
    if m := _ADMIN_TRACE_PATH.match(path):
        s.require_admin(call)
        flow = s.flow(m.group(1))
        dead: list[dict[str, Any]] = []
        try:
            flow.record_trace(s.amqp)  # what is waiting now counts
            dead = flow.dead_letters(s.amqp)
        except pika.exceptions.ChannelClosedByBroker:
            pass  # a queue not there (yet): what is recorded still answers
        except Exception:  # the broker away: what is recorded still answers
            flow.drop_connection()
        try:
            limit = int(call.query.get("limit", ["10"])[0])
        except ValueError:
            raise Reply(400, "limit must be a number") from None
        with flow.lock:
            threads = flow.threads(limit, call.query.get("thread", [None])[0], dead)
        return 200, {"flow": flow.name, "recording": bool(flow.spec.get("trace_queue")),
                     "threads": threads}
    if m := _ADMIN_FLOW_PATH.match(path):
        s.require_admin(call)
        return admin(s.flow(m.group(1)), call)
    caller = s.who(call.authorization)
    if caller is None:
        return 401, {"message": "unknown step or wrong API key"}
    flow_name, step = caller
    if m := _STEP_PATH.match(path):
        if call.method != "GET":
            return 405, {"message": "step info is read with GET"}
        if (m.group(1), m.group(2)) != (flow_name, step):
            return 403, {"message": "a step may read its own step only"}
        flow = s.flow(flow_name)
        try:
            flow.drain_snapshots(s.amqp)  # what it emitted just before a crash counts
        except pika.exceptions.ChannelClosedByBroker:
            pass  # no snapshot queue yet: the flow is warming up, nothing to drain
        except Exception as e:  # the broker away: the snapshot on disk still answers
            flow.drop_connection()
            log(f"flow {flow_name}: snapshots not drained before step-info ({e!r})")
        info = flow.step_info(step)
        if info is None:
            return 404, {"message": f"flow {flow_name} has no step {step}"}
        return 200, info
    if m := _HOOK_PATH.match(path):
        if m.group(1) != flow_name:
            return 403, {"message": "another flow's hook data"}
        return hook(s.flow(flow_name), call)
    if m := _ACCOUNT_PATH.match(path):
        if call.method != "PUT":
            return 405, {"message": "an account is updated with PUT"}
        flow = s.flow(flow_name)
        account = m.group(1)
        # Its own account only: being in the same flow is not enough (a step could
        # otherwise read, and replace, another step's credentials).
        if account != flow.account_of(step):
            return 403, {"message": "a step may update its own account only"}
        body = call.json()
        keys = body.get("keys", body) if isinstance(body, dict) else {}
        with flow.lock:
            current = flow.credentials(account)
            current.update(keys if isinstance(keys, dict) else {})
            flow.accounts[account] = {"base": flow.base_credentials(account), "keys": current}
            flow.save("accounts")
        return 200, {"id": account, "keys": current}
    return 404, {"message": f"no such call: {call.method} {path}"}


def hook(flow: Flow, call: Call) -> tuple[int, Any]:
    with flow.lock:
        if call.method == "GET":
            if "startup" not in flow.hooks:
                return 404, {"message": "no startup data"}
            return 200, flow.hooks["startup"]
        if call.method == "POST":
            if "startup" in flow.hooks:
                return 409, {"message": "startup data exists"}
            flow.hooks["startup"] = call.json()
            flow.save("hooks")
            return 201, flow.hooks["startup"]
        if call.method == "DELETE":
            flow.hooks.pop("startup", None)
            flow.save("hooks")
            return 200, {}
    return 405, {"message": "hook data: GET, POST or DELETE"}


def admin(flow: Flow, call: Call) -> tuple[int, Any]:
    with flow.lock:
        if call.method == "PUT":
            spec = call.json()
            if not isinstance(spec, dict):
                raise Reply(400, "a flow's spec is a JSON object")
            flow.spec = spec
            _write_json(flow.dir / "flow.json", spec)
            flow.next_tick.clear()
            flow.restored = False
            return 200, {"flow": flow.name, "steps": len(spec.get("steps", {}))}
        if call.method == "DELETE":
            purge = call.query.get("purge", ["0"])[0] == "1"
            flow.spec = {}
            flow.drop_connection()
            flow.next_tick.clear()
            if purge:
                for what in ("flow", "snapshots", "hooks", "accounts", "errors"):
                    (flow.dir / f"{what}.json").unlink(missing_ok=True)
                flow.snapshots, flow.hooks, flow.accounts, flow.errors = {}, {}, {}, {}
                flow.trace.clear()
                flow.trace_bytes = 0
            else:
                (flow.dir / "flow.json").unlink(missing_ok=True)
            return 200, {"flow": flow.name, "purged": purge}
        if call.method == "GET":
            return 200, {"snapshots": flow.snapshots, "errors": flow.errors,
                         "hooks": flow.hooks, "steps": sorted(flow.spec.get("steps") or {})}
    return 405, {"message": "a flow: PUT, GET or DELETE"}


# ---------------------------------------------------------------- serving
#
# Served by uvicorn (asyncio, h11): a connection costs a socket, not a thread, and
# h11 parses requests (a garbage request line is a 400, a chunked body is a body).
# What uvicorn leaves open is closed here: a connection that brings no whole request
# within REQUEST_SECONDS, more than PEER_CONNECTIONS from one address, bodies over
# their cap, and a body that takes longer than REQUEST_SECONDS to arrive.

MAX_STEP_BODY = 1024 * 1024  # a step's hook data or updated keys
MAX_ADMIN_BODY = 256 * 1024 * 1024  # a flow's spec from the host: its steps' configs
REQUEST_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
PEER_CONNECTIONS = 128  # open at once from one address (a step, or the host)
MAX_CONNECTIONS = 4096
WORKERS = 8  # calls doing their blocking work (the broker, the disk) at once


class App:
    """The services' HTTP answers, as an ASGI application."""

    def __init__(self, services: Services, workers: int = WORKERS) -> None:
        self.services = services
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="call")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        try:
            call = Call(method=scope["method"], path=scope["path"],
                        query=urllib.parse.parse_qs(scope.get("query_string", b"").decode(
                            "latin-1")), authorization=headers.get("authorization"))
            if call.method in ("PUT", "POST"):
                cap = (MAX_ADMIN_BODY if call.path.startswith("/admin/")
                       and self.services.is_admin(call.authorization) else MAX_STEP_BODY)
                body = await asyncio.wait_for(_read_body(receive, headers, cap),
                                              REQUEST_SECONDS)
                call = Call(call.method, call.path, call.query, call.authorization, body)
            code, value = await asyncio.get_running_loop().run_in_executor(
                self.pool, _answer, self.services, call)
        except Reply as e:
            code, value = e.code, e.value
        except TimeoutError:
            code, value = 408, {"message": f"the request took over {REQUEST_SECONDS:g} s"}
        except _Gone:
            return
        raw = json.dumps(value if value is not None else {}, default=str).encode()
        await send({"type": "http.response.start", "status": code, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})


class _Gone(Exception):
    """The caller went away before its request was whole."""


async def _read_body(receive: Any, headers: dict[str, str], cap: int) -> bytes:
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > cap):
        raise Reply(413, f"a body may have at most {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > cap:
            raise Reply(413, f"a body may have at most {cap} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _answer(services: Services, call: Call) -> tuple[int, Any]:
    try:
        return route(services, call)
    except Reply as e:
        return e.code, e.value
    except (ValueError, KeyError) as e:
        return 400, {"message": f"bad request: {e}"}
    except Exception as e:
        traceback.print_exc(file=sys.stdout)
        return 500, {"message": repr(e)}


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with what it leaves to whoever runs it: a
    connection must bring a whole request within `request_seconds` of opening (or of
    its last answer), and one address holds at most `peer_cap` connections. Past the
    cap, the address's oldest connection with no request in hand is closed, not the
    new one: whoever holds connections open for nothing loses them to whoever comes
    with a request (the host's calls and any local user's arrive from one address)."""

    peers: dict[str, list[GuardedH11]] = {}
    peer_cap = PEER_CONNECTIONS
    request_seconds = REQUEST_SECONDS

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else "?"
        self._answered = self._looked = 0
        if len(self.connections) > MAX_CONNECTIONS:
            transport.close()
            return
        mine = GuardedH11.peers.setdefault(self._peer, [])
        mine.append(self)
        if len(mine) > self.peer_cap:
            idle = next((c for c in mine if c is not self and not c._busy()), None)
            if idle is not None:
                idle.transport.close()
        self._watch = self.loop.call_later(self.request_seconds, self._look)

    def connection_lost(self, exc: Exception | None) -> None:
        mine = GuardedH11.peers.get(getattr(self, "_peer", "?"), [])
        if self in mine:
            mine.remove(self)
            if not mine:
                del GuardedH11.peers[self._peer]
        watch = getattr(self, "_watch", None)
        if watch is not None:
            watch.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()

    def _busy(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _look(self) -> None:
        """Nothing answered since the last look and no request in hand: a connection
        held open for nothing (idle from the start, or trickling its headers)."""
        if self.transport.is_closing():
            return
        if self._answered == self._looked and not self._busy():
            self.transport.close()
            return
        self._looked = self._answered
        self._watch = self.loop.call_later(self.request_seconds, self._look)


def server(services: Services, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(
        App(services), host=host, port=port, http=GuardedH11, lifespan="off",
        access_log=False, log_level="warning", timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=64 * 1024, server_header=False, date_header=False))


def main() -> int:
    files.receive(str(CONFIG_FILE))  # on one host, sent on standard input at the first start
    config = json.loads(CONFIG_FILE.read_text())
    services = Services(config, DATA_DIR)
    threading.Thread(target=services.background, daemon=True, name="background").start()
    log(f"flowrun platform services: listening on :{PORT}, {len(services.flows)} flow(s) known")
    server(services, "0.0.0.0", PORT).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
