"""The platform services' HTTP answers: who may call what, and how the server
holds up against whoever calls it (any step, any local user)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import traceback
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..contract.spec import FlowSpec, SpecError
from . import objects
from .state import Flow, Services, log

_STEP_PATH = re.compile(r"^/v1/tasks/([^/]+)/steps/([^/]+)$")
_HOOK_PATH = re.compile(r"^/sailor-support/hooks/task/([^/]+)/startup/data$")
_ACCOUNT_PATH = re.compile(r"^/v1/accounts/([^/]+)$")
_ADMIN_FLOW_PATH = re.compile(r"^/admin/flows/([^/]+)$")
_ADMIN_TRACE_PATH = re.compile(r"^/admin/flows/([^/]+)/trace$")


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
    headers: dict[str, str] | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else {}
        except ValueError as e:
            raise Reply(400, f"the body is not JSON ({e})") from None


def _require_admin(s: Services, call: Call) -> None:
    if not s.is_admin(call.authorization):
        raise Reply(401, "admin token required")


def route(s: Services, call: Call) -> tuple[int, Any]:
    """Who may call what; blocking (the broker, the disk), so it runs on a worker."""
    path = call.path
    if path == "/healthz":
        return 200, {"ok": True}
    if path == "/objects" or path.startswith("/objects/"):
        return object_call(s, call)
    if m := _ADMIN_TRACE_PATH.match(path):
        _require_admin(s, call)
        flow = s.flow(m.group(1))
        dead: list[dict[str, Any]] = []
        try:
            flow.catch_up()  # what is waiting now counts
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
        return 200, {"flow": flow.name, "recording": flow.recording,
                     "threads": threads}
    if m := _ADMIN_FLOW_PATH.match(path):
        _require_admin(s, call)
        answer = admin(s.flow(m.group(1)), call)
        if call.method == "DELETE" and call.query.get("purge", ["0"])[0] == "1":
            s.objects.purge(m.group(1))
        return answer
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


def object_call(s: Services, call: Call) -> tuple[int, Any]:
    """The object store (services/objects.py), for a step with its token."""
    caller = objects.who(s.secret, call.authorization)
    if caller is None:
        return 401, {"message": "an object store token is required (Bearer)"}
    flow_name, step = caller
    flow = s.flow(flow_name)
    object_id = call.path[len("/objects/"):] if call.path.startswith("/objects/") else None
    headers = call.headers or {}
    try:
        if call.method == "POST" and object_id is None:
            return s.objects.put(flow_name, flow.keys, step, call.body, headers)
        if call.method == "PUT" and object_id:
            return s.objects.put(flow_name, flow.keys, step, call.body, headers, object_id)
        if call.method == "GET" and object_id:
            return 200, s.objects.get(flow_name, flow.keys, object_id)
        if call.method == "GET":
            return 200, s.objects.find(flow_name, objects.query_of(call.query))
        if call.method == "DELETE":
            s.objects.delete(flow_name, object_id or None, objects.query_of(call.query))
            return 204, objects.Raw(b"", {})
    except objects.Refused as e:
        return e.status, {"message": str(e)}
    return 405, {"message": "objects: POST /objects, GET|PUT|DELETE /objects/<id>, "
                            "GET|DELETE /objects?query[<key>]=<value>"}


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
            try:
                spec = FlowSpec.from_json(call.json())
            except SpecError as e:
                raise Reply(400, f"not a flow spec: {e}") from None
            flow.handed_over(spec)
            return 200, {"flow": flow.name, "steps": len(spec.steps)}
        if call.method == "DELETE":
            purge = call.query.get("purge", ["0"])[0] == "1"
            flow.handed_over(None)
            flow.drop_connection()
            if purge:
                for what in ("flow", "snapshots", "hooks", "accounts", "errors"):
                    (flow.dir / f"{what}.json").unlink(missing_ok=True)
                flow.snapshots, flow.hooks, flow.accounts, flow.errors = {}, {}, {}, {}
                with flow.trace_lock:
                    flow.trace.clear()
                    flow.trace_bytes = 0
            return 200, {"flow": flow.name, "purged": purge}
        if call.method == "GET":
            return 200, {"snapshots": flow.snapshots, "errors": flow.errors,
                         "hooks": flow.hooks,
                         "steps": sorted(flow.spec.steps if flow.spec is not None else {})}
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
                            "latin-1")), authorization=headers.get("authorization"),
                        headers=headers)
            if call.method in ("PUT", "POST"):
                cap = MAX_STEP_BODY
                if call.path.startswith("/admin/") and self.services.is_admin(
                        call.authorization):
                    cap = MAX_ADMIN_BODY
                elif call.path.startswith("/objects") and objects.who(
                        self.services.secret, call.authorization):
                    cap = objects.MAX_OBJECT_BYTES
                body = await asyncio.wait_for(_read_body(receive, headers, cap),
                                              REQUEST_SECONDS)
                call = Call(call.method, call.path, call.query, call.authorization, body,
                            headers)
            code, value = await asyncio.get_running_loop().run_in_executor(
                self.pool, _answer, self.services, call)
        except Reply as e:
            code, value = e.code, e.value
        except TimeoutError:
            code, value = 408, {"message": f"the request took over {REQUEST_SECONDS:g} s"}
        except _Gone:
            return
        if isinstance(value, objects.Raw):  # an object's bytes, as stored
            raw = value.body
            sent = [(k.encode("latin-1"), str(v).encode("latin-1"))
                    for k, v in value.headers.items()]
        else:
            raw = json.dumps(value if value is not None else {}, default=str).encode()
            sent = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": code, "headers": [
            *sent, (b"content-length", str(len(raw)).encode())]})
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

    def connection_made(self, transport: Any) -> None:
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


class ByPort:
    """One server, two ports: the services' calls and the HTTP gateway's."""

    def __init__(self, apps: dict[int, Any], default: Any) -> None:
        self.apps, self.default = apps, default

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        server = scope.get("server") or ("", 0)
        app = self.apps.get(int(server[1] or 0), self.default)
        await app(scope, receive, send)


def server(app: Any, host: str, port: int) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, http=GuardedH11, lifespan="off",
        access_log=False, log_level="warning", timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=64 * 1024, server_header=False, date_header=False))

