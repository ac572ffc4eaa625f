"""The platform services' HTTP side, served for real (uvicorn on loopback) with a
flow handed over in memory: who may call what, and what a hostile caller cannot
do to the others (issue 18, items 2, 4 and 8). No broker: these calls need none."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowrun.contract.spec import AmqpAccess, FlowSpec, ServicesConfig, StepEntry
from flowrun.contract.wire import admin_token, api_key
from flowrun.services import http as svc

SECRET = "s3cret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[svc.Services, int]]:
    monkeypatch.setattr(svc.GuardedH11, "request_seconds", 1.0)
    monkeypatch.setattr(svc.GuardedH11, "peer_cap", 40)
    monkeypatch.setattr(svc, "REQUEST_SECONDS", 1.0)
    services = svc.Services(ServicesConfig(secret=SECRET, amqp=AmqpAccess(
        host="127.0.0.1", port=1, user="u", password="p")), tmp_path)
    flow = services.flow("f")
    flow.spec = FlowSpec(
        vhost="flowrun.f", snapshot_queue="f:snapshots", error_tally_queue="f:error-tally",
        dead_letter_queue="f:dead", steps={
            "a": StepEntry(kind="action", runtime="python", config={"x": 1},
                           credentials={"token": "A"}, account="f.a"),
            "b": StepEntry(kind="action", runtime="python", config={"y": 2},
                           credentials={"token": "B"}, account="f.b")})
    port = _free_port()
    server = svc.server(svc.App(services), "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield services, port
    server.should_exit = True
    thread.join(10)


def _auth(step: str) -> dict[str, str]:
    token = base64.b64encode(f"f.{step}:{api_key(SECRET, 'f', step)}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _call(port: int, method: str, path: str, body: Any = None, step: str = "a",
          source: str = "127.0.0.1") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10,
                                      source_address=(source, 0))
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=_auth(step))
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _raw(port: int, request: bytes, wait: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(request)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and not _more(b"".join(chunks)):
                    break
        except TimeoutError:
            pass
        return b"".join(chunks)


def _more(raw: bytes) -> bool:
    head, _, body = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) < int(line.split(b":")[1])
    return False


def test_a_step_reads_and_updates_its_own_account_only(served: Any) -> None:
    _, port = served
    assert _call(port, "PUT", "/v1/accounts/f.b", {"keys": {"token": "evil"}})[0] == 403
    status, info = _call(port, "GET", "/v1/tasks/f/steps/b", step="b")
    assert status == 200 and info["config"]["token"] == "B"
    status, answer = _call(port, "PUT", "/v1/accounts/f.a", {"keys": {"token": "A2"}})
    assert status == 200 and answer["keys"] == {"token": "A2"}
    assert _call(port, "GET", "/v1/tasks/f/steps/a")[1]["config"]["token"] == "A2"
    assert _call(port, "GET", "/v1/tasks/f/steps/b", step="a")[0] == 403


def test_idle_connections_starve_no_one_and_are_closed(served: Any) -> None:
    _, port = served
    held = []
    try:
        for _ in range(300):  # one address: past its cap its oldest idle ones go
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # Another address (another step) is served while they are held, and so is a
        # call from the same address (the host's own, beside a local user's).
        assert _call(port, "GET", "/v1/tasks/f/steps/a", source="127.0.0.2")[0] == 200
        assert _call(port, "GET", "/v1/tasks/f/steps/a")[0] == 200
        time.sleep(2.5)  # past request_seconds: every idle one was closed
        closed = 0
        for s in held:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, TimeoutError):
                closed += 1
        assert closed == len(held)
        assert _call(port, "GET", "/v1/tasks/f/steps/a")[0] == 200
    finally:
        for s in held:
            s.close()


def test_a_trickled_request_is_cut_off(served: Any) -> None:
    _, port = served
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        start = time.monotonic()
        try:
            for _ in range(20):
                s.sendall(b"G")
                time.sleep(0.25)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert time.monotonic() - start < 4.9


def test_bodies_over_their_cap_are_refused_before_they_are_read(served: Any) -> None:
    _, port = served
    token = _auth("a")["Authorization"]
    start = time.monotonic()
    answer = _raw(port, b"PUT /v1/accounts/f.a HTTP/1.1\r\nHost: x\r\nAuthorization: "
                  + token.encode() + b"\r\nContent-Length: 2000000000\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert time.monotonic() - start < 3
    big = {"keys": {"blob": "x" * (svc.MAX_STEP_BODY + 10)}}
    assert _call(port, "PUT", "/v1/accounts/f.a", big)[0] == 413


def test_a_slow_body_times_out(served: Any) -> None:
    _, port = served
    token = _auth("a")["Authorization"].encode()
    answer = _raw(port, b"POST /sailor-support/hooks/task/f/startup/data HTTP/1.1\r\n"
                  b"Host: x\r\nAuthorization: " + token + b"\r\nContent-Length: 10\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]


def test_garbage_and_chunked_requests_are_http_not_crashes(served: Any) -> None:
    _, port = served
    assert _raw(port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    token = _auth("a")["Authorization"].encode()
    body = b'{"hello": "world"}'
    chunked = (b"POST /sailor-support/hooks/task/f/startup/data HTTP/1.1\r\nHost: x\r\n"
               b"Authorization: " + token + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
               + f"{len(body):x}".encode() + b"\r\n" + body + b"\r\n0\r\n\r\n")
    answer = _raw(port, chunked)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:80]
    assert _call(port, "GET", "/sailor-support/hooks/task/f/startup/data") == (
        200, {"hello": "world"})


def test_a_request_whose_body_was_not_read_does_not_spoil_the_next(served: Any) -> None:
    """The Node.js sailor's start-up hook: POST (409: data exists), then DELETE on the
    same kept-alive connection; the POST's body must not be read as the next request."""
    _, port = served
    assert _call(port, "POST", "/sailor-support/hooks/task/f/startup/data", {"n": 1})[0] == 201
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/sailor-support/hooks/task/f/startup/data",
                     body=json.dumps({"n": 2}), headers=_auth("a"))
        first = conn.getresponse()
        first.read()
        assert first.status == 409
        conn.request("DELETE", "/sailor-support/hooks/task/f/startup/data", headers=_auth("a"))
        second = conn.getresponse()
        second.read()
        assert second.status == 200
    finally:
        conn.close()
    assert _call(port, "GET", "/sailor-support/hooks/task/f/startup/data")[0] == 404


def test_a_spec_that_is_not_the_contracts_is_a_400_naming_the_field(served: Any) -> None:
    services, port = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        token = admin_token(SECRET)
        conn.request("PUT", "/admin/flows/g", body=json.dumps({"vhost": "v", "steps": {}}),
                     headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        answer = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 400 and "snapshot_queue" in answer["message"]
    assert not services.flow("g").active
