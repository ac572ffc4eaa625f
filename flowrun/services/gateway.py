"""The HTTP gateway: flows called over HTTP, as the platform's clients call them.

`/hook/<flow>` and `/hook/<flow>/<more path>`: POST and GET put one message into
the flow's webhook trigger (GET's body is its query), HEAD says whether the flow
takes requests. A flow with a step that replies (the platform's `request-reply`
service) gets a `reply_to` header on that message, and the caller waits for the
answer that any step publishes with that routing key: a reply step's message (its
`x-eio-status-code`, headers and body), an `httpReply` event, or a step's error
(`x-eio-error-response`: 502 naming the step). A flow without one is answered at
once, 202 with the request's id.

Unlike the platform's old gateway, which answered 200 to everything, the status
says what happened: 404 no such flow, 415/400 a body it cannot read (nothing
enters the flow), 413 too large, 503 a step of the flow not consuming, 504 no
answer in the flow's reply timeout.

One connection per flow (its own vhost), held by a thread of its own: requests
are published there (confirmed), and the flow's reply queue is consumed there and
handed to the waiting request on the event loop. Nothing of a request is logged:
its headers and body may carry the flow's secrets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions

from ..contract import GATEWAY_MAX_BODY, names, wire
from ..contract.confirms import Confirms
from ..contract.spec import AmqpAccess, WebhookSpec
from .http import Reply, _Gone
from .http import _read_body as read_body
from .state import Flow, Services, log

_HOOK = re.compile(r"^/hook/([^/]+)(/.*)?$")
ERROR_RESPONSE = "x-eio-error-response"
STATUS_HEADER = "x-eio-status-code"
ROUTING_KEY_HEADER = "x-eio-routing-key"
LIVE_CACHE_SECONDS = 0.5
# Not carried from a reply's headers to the HTTP answer: the server sets them, or
# they are the platform's routing instructions.
_DROPPED = {"content-length", "transfer-encoding", "connection", "keep-alive",
            ROUTING_KEY_HEADER, STATUS_HEADER, ERROR_RESPONSE, "reply_to"}


class Answer(Exception):
    """The HTTP answer to a request, decided (raised from anywhere in its handling)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


# ---------------------------------------------------------------- one flow's link


class FlowLink:
    """One flow's connection to the broker for the gateway, on a thread of its own:
    pika's blocking connection is not thread-safe, so everything done with it is
    handed to that thread (`submit`), which also consumes the flow's replies."""

    def __init__(self, amqp: AmqpAccess, vhost: str, reply_queue: str | None,
                 on_reply: Callable[[str, Any, Any, bytes], None]) -> None:
        self.amqp, self.vhost, self.reply_queue = amqp, vhost, reply_queue
        self.on_reply = on_reply
        self.ready = threading.Event()
        self.dead = False
        self.connection: Any = None
        self.channel: Any = None
        self.confirms: Confirms | None = None
        self._probe: Any = None
        self._live: tuple[float, str | None] = (0.0, None)
        threading.Thread(target=self._run, daemon=True, name=f"gateway {vhost}").start()

    def _run(self) -> None:
        try:
            self.connection = pika.BlockingConnection(pika.ConnectionParameters(
                host=self.amqp.host, port=self.amqp.port, virtual_host=self.vhost,
                credentials=pika.PlainCredentials(self.amqp.user, self.amqp.password),
                heartbeat=60, blocked_connection_timeout=30, socket_timeout=5,
                stack_timeout=15, connection_attempts=1))
            self.channel = self.connection.channel()
            # Confirmed one by one but not waited for in turn: the thread goes on
            # publishing other requests while a confirm is on its way.
            self.confirms = Confirms(self.connection, self.channel)
            if self.reply_queue is not None:
                self.channel.basic_consume(self.reply_queue, self._delivered, auto_ack=True)
            self.ready.set()
            while not self.dead:
                self.connection.process_data_events(time_limit=1)
        except Exception as e:  # the broker away, the queue gone: the next request connects anew
            what = "connection lost" if self.ready.is_set() else "cannot connect"
            log(f"gateway {self.vhost}: {what} ({type(e).__name__}: {e})")
        finally:
            self.dead = True
            self.ready.set()
            try:
                if self.connection is not None and self.connection.is_open:
                    self.connection.close()
            except Exception:  # already broken
                pass

    def _delivered(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self.on_reply(method.routing_key, properties, properties.headers or {}, body)

    def submit(self, job: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run `job` on the connection's thread; its result as a future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(job())
            except BaseException as e:  # handed to the caller, whatever it is
                future.set_exception(e)

        if self.dead or self.connection is None:
            future.set_exception(ConnectionError("no connection to the broker"))
            return future
        try:
            self.connection.add_callback_threadsafe(run)
        except Exception as e:  # closed meanwhile
            future.set_exception(ConnectionError(str(e)))
        return future

    def not_consumed(self, queues: list[str]) -> str | None:
        """The first of `queues` nobody consumes (the flow is not live), or None. On
        the connection's thread; remembered for a moment, so a burst of requests
        costs one look."""
        at, found = self._live
        if time.monotonic() - at < LIVE_CACHE_SECONDS:
            return found
        found = None
        for queue in queues:
            if self._probe is None or not self._probe.is_open:
                self._probe = self.connection.channel()
            try:
                consumers = self._probe.queue_declare(queue, passive=True).method.consumer_count
            except pika.exceptions.ChannelClosedByBroker:  # no such queue (yet)
                self._probe = None
                consumers = 0
            if consumers == 0:
                found = queue
                break
        self._live = (time.monotonic(), found)
        return found

    def publish(self, queue: str, body: bytes, headers: dict[str, Any],
                ) -> concurrent.futures.Future[bool]:
        """Into the trigger's input; the future says once it is confirmed whether it
        reached the queue."""
        confirmed: concurrent.futures.Future[bool] = concurrent.futures.Future()

        def job() -> None:
            assert self.confirms is not None
            self.confirms.publish("", queue, body, pika.BasicProperties(
                delivery_mode=2, content_type="application/json", content_encoding="utf8",
                message_id=headers["messageId"], headers=headers),
                done=confirmed.set_result)

        started = self.submit(job)
        started.add_done_callback(
            lambda f: confirmed.set_exception(f.exception() or RuntimeError()) if (
                f.exception() is not None and not confirmed.done()) else None)
        return confirmed

    def close(self) -> None:
        self.dead = True


# ---------------------------------------------------------------- the gateway


class Gateway:
    """The ASGI application behind the gateway's port."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.links: dict[str, tuple[WebhookSpec, FlowLink]] = {}
        self.waiting: dict[str, asyncio.Future[tuple[int, dict[str, str], bytes]]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.loop = asyncio.get_running_loop()
        try:
            status, headers, raw = await self.handle(scope, receive)
        except Answer as a:
            status, headers, raw = a.status, a.headers, _json(a.body)
        except _Gone:
            return
        if scope["method"] == "HEAD":
            raw = b""
        headers = {"content-type": "application/json", **headers}
        await send({"type": "http.response.start", "status": status, "headers": [
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
            (b"content-length", str(len(raw)).encode())]})
        await send({"type": "http.response.body", "body": raw})

    async def handle(self, scope: dict[str, Any], receive: Any,
                     ) -> tuple[int, dict[str, str], bytes]:
        m = _HOOK.match(scope["path"])
        if m is None:
            raise Answer(404, {"message": "flows are called at /hook/<flow>"})
        name, suffix = urllib.parse.unquote(m.group(1)), m.group(2) or ""
        method = scope["method"]
        flow = self.services.flows.get(name)
        spec = flow.spec if flow is not None else None
        if flow is None or spec is None or spec.webhook is None:
            # The same answer whether the flow is unknown or not called over HTTP.
            raise Answer(404, {"message": f"no flow called over HTTP is named {name!r}"})
        if method == "HEAD":
            return 200, {}, b""
        if method not in ("GET", "POST"):
            raise Answer(405, {"message": "a flow is called with POST or GET"},
                         {"allow": "GET, POST, HEAD"})
        headers = _headers(scope)
        query = _query(scope.get("query_string", b""))
        body = await self._body(method, headers, query, receive)
        hook = spec.webhook
        link = await self._link(flow, hook)
        loop = asyncio.get_running_loop()
        idle = await asyncio.wrap_future(link.submit(
            lambda: link.not_consumed(hook.input_queues)))
        if idle is not None:
            step = names.step_of_queue(name, idle) or idle
            raise Answer(503, {"message": f"flow {name!r} is not live: step {step} is not "
                               "running; `flowrun status` says why"}, {"retry-after": "1"})
        request_id = uuid.uuid4().hex
        key = names.reply_key(name, request_id)
        message = {
            "id": request_id, "body": body, "headers": headers, "query": query,
            "method": method, "url": scope["path"], "originalUrl": _original(scope),
            "params": {}, "pathSuffix": suffix, "additionalUrlPath": suffix.lstrip("/"),
            "taskId": name, "attachments": {}, "passthrough": {}, "metadata": {}}
        amqp_headers: dict[str, Any] = {
            "messageId": request_id, "threadId": request_id, "taskId": name,
            "execId": request_id, "stepId": "gateway", "protocolVersion": wire.PROTOCOL_VERSION,
            "end": wire.now_ms()}
        replies = hook.reply_queue is not None
        if replies:
            amqp_headers["reply_to"] = key
            answer: asyncio.Future[tuple[int, dict[str, str], bytes]] = loop.create_future()
            self.waiting[key] = answer
        try:
            encrypted = flow.keys.encrypt(message)
            try:
                reached = await asyncio.wait_for(asyncio.wrap_future(
                    link.publish(hook.input_queue, encrypted, amqp_headers)), 30)
                if not reached:
                    raise ConnectionError("the broker returned it: no trigger input queue")
            except (pika.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as e:
                self._drop(name, link)
                raise Answer(503, {"message": f"flow {name!r}: the request could not be put "
                                   f"into its trigger's input ({type(e).__name__})"},
                             {"retry-after": "1"}) from None
            # The request's id is its thread's: `flowrun trace --thread` and `flowrun
            # test` follow it.
            mine = {"x-request-id": request_id}
            if not replies:
                return 202, mine, _json({"requestId": request_id, "message":
                                         "accepted; no step of this flow replies"})
            try:
                status, headers, raw = await asyncio.wait_for(answer, hook.reply_timeout)
                return status, {**headers, **mine}, raw
            except TimeoutError:
                raise Answer(504, {"message": f"flow {name!r} did not reply within "
                                   f"{hook.reply_timeout:g} s", "requestId": request_id},
                             mine) from None
        finally:
            self.waiting.pop(key, None)

    async def _body(self, method: str, headers: dict[str, str], query: dict[str, Any],
                    receive: Any) -> Any:
        if method == "GET":
            return query
        try:  # the services' own reader: the same caps, the same 413
            raw = await read_body(receive, headers, GATEWAY_MAX_BODY)
        except Reply as e:
            raise Answer(e.code, e.value) from None
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if not kind:
            raise Answer(415, {"message": "a POST needs a Content-Type: application/json, "
                               "application/x-www-form-urlencoded or text/*"})
        if kind == "application/json" or kind.endswith("+json"):
            if not raw.strip():
                return {}
            try:
                return json.loads(raw)
            except ValueError as e:
                raise Answer(400, {"message": f"the body is not JSON ({e}); nothing entered "
                                   "the flow"}) from None
        try:
            text = raw.decode(_charset(headers.get("content-type", "")))
        except (LookupError, UnicodeDecodeError):
            raise Answer(400, {"message": "the body is not text in its charset; nothing "
                               "entered the flow"}) from None
        if kind == "application/x-www-form-urlencoded":
            return _query(text.encode())
        if kind.startswith("text/"):
            return text
        raise Answer(415, {"message": f"a body of type {kind} is not taken; send JSON, a "
                           "form or text"})

    async def _link(self, flow: Flow, hook: WebhookSpec) -> FlowLink:
        """The flow's link, made (or made anew: the broker restarted, `up` changed the
        flow) when needed."""
        with self._lock:
            held = self.links.get(flow.name)
            if held is not None and (held[1].dead or held[0] != hook):
                held[1].close()
                held = None
            if held is None:
                spec = flow.spec
                assert spec is not None
                held = (hook, FlowLink(self.services.amqp, spec.vhost, hook.reply_queue,
                                       self._replied(flow)))
                self.links[flow.name] = held
        link = held[1]
        if not link.ready.is_set():
            await asyncio.get_running_loop().run_in_executor(None, link.ready.wait, 10)
        if link.dead:
            self._drop(flow.name, link)
            raise Answer(503, {"message": f"flow {flow.name!r}: the broker cannot be reached "
                               "now"}, {"retry-after": "1"})
        return link

    def _drop(self, name: str, link: FlowLink) -> None:
        link.close()
        with self._lock:
            if self.links.get(name, (None, None))[1] is link:
                del self.links[name]

    def _replied(self, flow: Flow) -> Callable[[str, Any, Any, bytes], None]:
        def on_reply(key: str, properties: Any, headers: Any, body: bytes) -> None:
            # On the link's thread: decrypt here, hand over on the event loop.
            if key not in self.waiting or self.loop is None:
                return  # an answer nobody waits for any more (timed out, a second one)
            answer = reply_answer(flow.keys, headers, body)
            self.loop.call_soon_threadsafe(self._hand_over, key, answer)
        return on_reply

    def _hand_over(self, key: str, answer: tuple[int, dict[str, str], bytes]) -> None:
        future = self.waiting.pop(key, None)
        if future is not None and not future.done():
            future.set_result(answer)


def reply_answer(keys: wire.Keys, headers: dict[str, Any], body: bytes,
                 ) -> tuple[int, dict[str, str], bytes]:
    """The HTTP answer a reply message makes: (status, headers, body).

    Three shapes arrive (read from the platform's sailor and components): an error
    (`x-eio-error-response`: the encrypted {name, message, stack}), an `httpReply`
    event ({statusCode, headers, body}), and a data message a reply step emitted
    with the reply key as its `x-eio-routing-key` (its headers carry
    `x-eio-status-code` and `content-type`)."""
    step = str(headers.get("stepId") or "?")
    if headers.get(ERROR_RESPONSE):
        try:
            error = keys.decrypt(body)
        except wire.WireError:
            error = {}
        error = error if isinstance(error, dict) else {"message": str(error)}
        return 502, {}, _json({"message": f"step {step} failed: {error.get('message') or ''}",
                               "step": step, "error": str(error.get("name") or "Error")})
    try:
        value = keys.decrypt(body, wire.protocol_of(headers))
    except wire.WireError:
        return 502, {}, _json({"message": f"step {step} replied with a message that is not "
                               "this flow's", "step": step})
    value = value if isinstance(value, dict) else {"body": value}
    if "statusCode" in value and "id" not in value:  # httpReply
        status: Any = value.get("statusCode")
        reply_headers = value.get("headers") or {}
    else:
        reply_headers = value.get("headers") or {}
        status = {str(k).lower(): v for k, v in reply_headers.items()}.get(STATUS_HEADER)
    out = {str(k).lower(): str(v) for k, v in (reply_headers.items()
                                                if isinstance(reply_headers, dict) else ())
           if str(k).lower() not in _DROPPED}
    try:
        code = int(status) if status is not None and status != "" else 200
    except (TypeError, ValueError):
        code = 0
    if not 100 <= code <= 599:
        return 502, {}, _json({"message": f"step {step} replied with status {status!r}, "
                               "not an HTTP status (100-599)", "step": step})
    content = value.get("body")
    if isinstance(content, str):
        out.setdefault("content-type", "text/plain; charset=utf-8")
        return code, out, content.encode()
    return code, out, _json(content if content is not None else {})


# ---------------------------------------------------------------- HTTP details


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1")
            for k, v in scope.get("headers") or []}


def _query(raw: bytes) -> dict[str, Any]:
    """`a=1&b=2&b=3` -> {"a": "1", "b": ["2", "3"]}, as Express parses a query."""
    parsed = urllib.parse.parse_qs(raw.decode("latin-1"), keep_blank_values=True)
    return {k: v[0] if len(v) == 1 else v for k, v in parsed.items()}


def _original(scope: dict[str, Any]) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return str(scope["path"]) + (f"?{query}" if query else "")


def _charset(content_type: str) -> str:
    m = re.search(r"charset=([\w-]+)", content_type, re.IGNORECASE)
    return str(m.group(1)) if m else "utf-8"


def _json(value: Any) -> bytes:
    return json.dumps(value, default=str).encode()
