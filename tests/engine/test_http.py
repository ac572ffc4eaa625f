"""Flows called over HTTP, as the platform's clients call them: the gateway in the
platform services (`/hook/<flow>`), answers by `reply_to` from Node.js steps under
the platform's own sailor and from Python steps, passthrough, and real status codes.

Three flows, each brought up once for the module from the sample flows:
hello-http (Node.js: webhook-js -> mapper -> reply-js), ask-http (Python:
hook-py -> check -> answer, passthrough on) and a webhook flow with no reply step.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import COMPONENTS, ROOT, flowrun, unique, wait_for


class Http:
    """A flow's URL, and plain HTTP calls to it (no client library between the test
    and what the gateway answers)."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path

    def call(self, method: str, suffix: str = "", body: Any = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None,
             path: str | None = None) -> tuple[int, dict[str, str], Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            data = raw if raw is not None else (
                json.dumps(body).encode() if body is not None else None)
            sent = dict(headers or {})
            if body is not None and raw is None:
                sent.setdefault("Content-Type", "application/json")
            connection.request(method, (path or self.path) + suffix, body=data, headers=sent)
            response = connection.getresponse()
            text = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
            try:
                value = json.loads(text) if text else None
            except ValueError:
                value = text.decode()
            return response.status, got, value
        finally:
            connection.close()


@pytest.fixture(scope="module")
def hello(sample_flow: Any) -> Http:
    return Http(sample_flow("hello-http")["webhook"])


@pytest.fixture(scope="module")
def ask(sample_flow: Any) -> tuple[str, Http]:
    return "ask-http", Http(sample_flow("ask-http")["webhook"])


def test_up_says_where_a_flow_is_called(sample_flow: Any) -> None:
    status = sample_flow("hello-http")
    out = flowrun("up", "-d", str(ROOT / "sample_flows" / "hello-http.yaml")).stdout
    assert f"called over HTTP: {status['webhook']}" in out, out
    assert f"called over HTTP: POST or GET {status['webhook']}" in flowrun(
        "status", "hello-http").stdout


def test_a_node_reply_step_sets_status_headers_and_body(hello: Http) -> None:
    status, headers, body = hello.call("POST", body={"name": "Ada"})
    assert (status, body) == (200, {"greeting": "Hello, Ada!", "method": "POST"})
    assert headers["content-type"].startswith("application/json")
    assert "x-eio-routing-key" not in headers and "x-eio-status-code" not in headers
    status, _h, body = hello.call("POST", body={})
    assert status == 422 and "say who you are" in body["error"]
    # GET: the query is the body; HEAD: the flow exists.
    status, _h, body = hello.call("GET", "?name=Bob")
    assert (status, body) == (200, {"greeting": "Hello, Bob!", "method": "GET"})
    assert hello.call("HEAD")[0] == 200


def test_fifty_concurrent_requests_each_get_their_own_answer(hello: Http) -> None:
    def one(i: int) -> tuple[int, Any]:
        status, _h, body = hello.call("POST", f"/extra/{i}", body={"name": f"caller-{i}"})
        return status, body

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(one, range(50)))
    assert answers == [(200, {"greeting": f"Hello, caller-{i}!", "method": "POST"})
                       for i in range(50)]


def test_what_the_gateway_cannot_take_enters_nothing(hello: Http,
                                                     ask: tuple[str, Http]) -> None:
    name, web = ask
    before = _processed(name, "ingest")
    status, _h, body = web.call("POST", raw=b"{not json", headers={
        "Content-Type": "application/json"})
    assert status == 400 and "not JSON" in body["message"]
    assert web.call("POST", raw=b"{}")[0] == 415  # no Content-Type
    assert web.call("POST", raw=b"\x00\x01", headers={
        "Content-Type": "application/octet-stream"})[0] == 415
    status, _h, body = web.call("POST", raw=b"x" * (10 * 1024 * 1024 + 1), headers={
        "Content-Type": "text/plain"})
    assert status == 413, body
    assert web.call("PUT", body={})[0] == 405
    assert _processed(name, "ingest") == before  # none of them reached the trigger
    # Unknown flows, and paths that are no flow's, are 404 (and so is HEAD of them).
    status, _h, body = hello.call("POST", body={}, path="/hook/no-such-flow")
    assert status == 404 and "no-such-flow" in body["message"]
    assert hello.call("HEAD", path="/hook/no-such-flow")[0] == 404
    assert hello.call("GET", path="/elsewhere")[0] == 404


def test_python_steps_reply_fail_and_time_out_with_passthrough(ask: tuple[str, Http]) -> None:
    name, web = ask
    status, headers, body = web.call("POST", "/orders?x=1", body={"name": "Ada",
                                                                   "status": 201})
    assert status == 201, body
    assert headers["x-answered-by"] == "answer"  # the httpReply's own headers
    # Passthrough: the mapper before `answer` read the trigger's output and saw
    # every step before it.
    assert body == {"name": "Ada", "checked": True, "method": "POST",
                    "steps": ["ingest", "check"]}
    # A form body is parsed as the platform's gateway does.
    status, _h, body = web.call("POST", raw=b"name=Bo&x=1", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert (status, body["name"]) == (200, "Bo")

    status, _h, body = web.call("POST", body={"name": "Ada", "fail": "thirteen"})
    assert status == 502 and body["step"] == "check"
    assert "refused: thirteen" in body["message"]

    status, _h, body = web.call("POST", body={"name": "Ada", "silent": True})
    assert status == 504 and "5 s" in body["message"]
    # The request's id is its thread's: the trace shows it, passthrough included.
    out = flowrun("trace", name, "--thread", body["requestId"]).stdout
    assert "check" in out and "passthrough: ingest" in out, out


def test_requests_are_answered_again_after_a_broker_restart(ask: tuple[str, Http]) -> None:
    """The reply queue and its bindings outlive the restart; the gateway connects anew."""
    _name, web = ask
    assert web.call("POST", body={"name": "Ada"})[0] == 200
    subprocess.run(["docker", "restart", "-t", "5", "flowrun-broker"], check=True,
                   capture_output=True)
    status, _h, body = wait_for(lambda: (answer := web.call("POST", body={"name": "Bo"}))[0]
                                == 200 and answer, 90, "an answer after the restart", every=1)
    assert body["name"] == "Bo"


def test_a_webhook_flow_without_a_reply_step(engine: Any, tmp_path: Path) -> None:
    name = unique("hook")
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""version: 1
name: {name}
steps:
  - id: ingest
    component: {COMPONENTS}/hook-py
    function: receive
  - id: notify
    component: {COMPONENTS}/chat
    function: post
    map:
      text: "'hello ' & name"
""")
    try:
        flowrun("up", "-d", "--timeout", "180", str(path))
        web = Http(json.loads(flowrun("status", name, "--json").stdout)["flows"][0]["webhook"])
        status, _h, body = web.call("POST", body={"name": "Ada"})
        assert status == 202 and len(body["requestId"]) == 32
        # It ran through the flow: no ticks, only the request.
        wait_for(lambda: _processed(name, "notify") == 1, 30, "the request at notify")
        assert "hello Ada" in flowrun("logs", name, "notify").stdout
        # A step that is not running: the flow takes no request (503), none is lost.
        subprocess.run(["docker", "stop", "-t", "2", f"flowrun.{name}.notify"], check=True,
                       capture_output=True)
        wait_for(lambda: not _step(name, "notify")["live"], 20, "notify not live")
        status, headers, body = web.call("POST", body={"name": "Bo"})
        assert status == 503 and "notify" in body["message"], body
        assert headers["retry-after"] == "1"
        assert _processed(name, "ingest") == 1
    finally:
        flowrun("down", "--purge", "--grace", "2", name, check=False)


def _step(flow: str, step: str) -> dict[str, Any]:
    steps = json.loads(flowrun("status", flow, "--json").stdout)["flows"][0]["steps"]
    return dict(next(s for s in steps if s["step"] == step))


def _processed(flow: str, step: str) -> int:
    return int(_step(flow, step)["processed"] or 0)

