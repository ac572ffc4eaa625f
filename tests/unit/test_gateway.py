"""The HTTP gateway's pure parts: the answer a reply message makes, reply keys and
what a step may publish, request bodies, the flow file's new keys."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowrun.contract import names, wire
from flowrun.core.flowfile import load_flow
from flowrun.errors import FlowFileError
from flowrun.services.gateway import reply_answer

KEYS = wire.Keys("password", "0123456789abcdef")


def test_a_reply_steps_message_gives_its_status_headers_and_body() -> None:
    body = KEYS.encrypt({"id": "m1", "body": {"ok": True}, "headers": {
        "X-EIO-Routing-Key": "f:reply.x", "x-eio-status-code": 201,
        "Content-Type": "application/json", "X-Custom": "yes", "Content-Length": "9"}})
    status, headers, raw = reply_answer(KEYS, {"stepId": "reply"}, body)
    assert (status, raw) == (201, b'{"ok": true}')
    assert headers == {"content-type": "application/json", "x-custom": "yes"}


def test_an_http_reply_event_and_a_text_body() -> None:
    body = KEYS.encrypt({"statusCode": 418, "headers": {"X-A": "b"}, "body": "teapot"})
    status, headers, raw = reply_answer(KEYS, {}, body)
    assert (status, raw) == (418, b"teapot")
    assert headers == {"x-a": "b", "content-type": "text/plain; charset=utf-8"}


def test_an_error_reply_is_a_502_naming_the_step_without_its_stack() -> None:
    body = KEYS.encrypt({"name": "ValueError", "message": "nope", "stack": "at secret.py:1"})
    status, _headers, raw = reply_answer(
        KEYS, {"stepId": "check", "x-eio-error-response": True}, body)
    assert status == 502
    assert b"step check failed: nope" in raw and b"secret.py" not in raw


@pytest.mark.parametrize("code", ["abc", 99, 600, -1])
def test_a_status_that_is_no_http_status_is_a_502(code: object) -> None:
    body = KEYS.encrypt({"statusCode": code, "body": {}})
    assert reply_answer(KEYS, {"stepId": "s"}, body)[0] == 502


def test_another_flows_message_is_a_502() -> None:
    other = wire.Keys("other", "fedcba9876543210")
    assert reply_answer(KEYS, {"stepId": "s"}, other.encrypt({"body": 1}))[0] == 502


def test_reply_keys_are_the_flows_own_and_never_a_steps_key() -> None:
    key = names.reply_key("orders", "0" * 32)
    assert names.is_reply_key("orders", key)
    assert not names.is_reply_key("order", key) and not names.is_reply_key("orders-x", key)
    assert not names.is_reply_key("orders", names.data_key("orders", "reply"))
    assert names.of_key("orders", key) is None
    pattern = re.compile(names.step_key_pattern("orders", "fetch"))
    assert pattern.search(key) and pattern.search(names.data_key("orders", "fetch"))
    for other in (names.reply_key("other", "0" * 32), "orders:reply.x",
                  names.data_key("orders", "enrich"), f"{key}.x"):
        assert not pattern.search(other), other


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30.0), ("500ms", 0.5), ("2m", 120.0),
                                               ("7", 7.0), ("1.5s", 1.5)])
def test_reply_timeouts(tmp_path: Path, text: str, seconds: float) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(f"version: 1\nname: f\nreply_timeout: {text}\npassthrough: true\n"
                    "steps:\n  - {id: a, component: c, function: f}\n")
    flow = load_flow(path, {})
    assert (flow.spec.reply_timeout, flow.spec.passthrough) == (seconds, True)


@pytest.mark.parametrize("text", ["0s", "-1", "2h", "61m", "true", "[1]", "1 s x"])
def test_what_is_not_a_reply_timeout(tmp_path: Path, text: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(f"version: 1\nname: f\nreply_timeout: {text}\n"
                    "steps:\n  - {id: a, component: c, function: f}\n")
    with pytest.raises(FlowFileError, match=r"f.yaml:3: reply_timeout: .* not a duration"):
        load_flow(path, {})
