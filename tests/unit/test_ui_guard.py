"""The live page answers loopback Hosts only (DNS rebinding), and shows message
bodies masked as `flowrun trace` does (issue 18, item 5)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from flowrun.ui import model
from flowrun.ui import server as ui


class _NoEngine:
    def find(self, name: str) -> None:
        return None


@pytest.fixture
def page() -> Iterator[int]:
    bound: list[int] = []
    server = ui.make_server(_NoEngine(), 0, bound.append)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not bound and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bound
        yield bound[0]
    finally:
        server.should_exit = True
        thread.join(10)


def _status(port: int, host: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return int(s.recv(64).split()[1])


def test_the_page_refuses_a_host_that_is_not_loopback(page: int) -> None:
    assert _status(page, f"127.0.0.1:{page}") == 200
    assert _status(page, f"localhost:{page}") == 200
    assert _status(page, f"rebind.attacker.example:{page}") == 400
    assert _status(page, "10.0.0.1") == 400


def test_step_detail_masks_bodies_as_trace_does(monkeypatch: pytest.MonkeyPatch) -> None:
    class Services:
        def trace(self, flow: str, limit: int) -> dict[str, Any]:
            return {"threads": [{"records": [{"step": "a", "seq": 1, "body": {
                "password": "pw-1", "apiKey": "k-2", "nested": {"token": "t-3"},
                "plain": "shown"}}]}]}

    monkeypatch.setattr(model, "_services", lambda engine: (None, Services()))
    detail = model.step_detail(_NoEngine(), "f", "a")  # type: ignore[arg-type]
    body = detail["messages"][0]["body"]
    assert body == {"password": "***", "apiKey": "***", "nested": {"token": "***"},
                    "plain": "shown"}
