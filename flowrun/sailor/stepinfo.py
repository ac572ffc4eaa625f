"""The platform's step-info call, as flowrun's Python sailor makes it.

`GET {api_uri}/v1/tasks/{flow}/steps/{step}` with Basic auth, answered by
flowrun's platform services with `{config, snapshot, variables,
is_passthrough}`: the same call the platform's Node.js sailor makes at start.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, NamedTuple


class StepInfoRefused(Exception):
    """The services answered 4xx: waiting will not help (wrong key, unknown step)."""


class StepInfo(NamedTuple):
    config: dict[str, Any]
    snapshot: Any
    variables: dict[str, Any]
    is_passthrough: bool = False


def auth_header(username: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()


def step_info_url(api_uri: str, flow: str, step: str) -> str:
    return (f"{api_uri.rstrip('/')}/v1/tasks/{urllib.parse.quote(flow, safe='')}"
            f"/steps/{urllib.parse.quote(step, safe='')}")


def http_get(url: str, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    """One HTTP/1.0 GET: (status, body). The platform services answer HTTP/1.0 and
    close, so the body is whatever comes before the end. (http.client would cost a
    step's boot more than the call itself: it loads the email package.)"""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// address: {url}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {path or '/'} HTTP/1.0", f"Host: {parts.netloc}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _sep, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or not status[1].isdigit():
        raise ValueError(f"not an HTTP answer: {head[:80]!r}")
    return int(status[1]), body


def fetch_step_info(secret: dict[str, Any], flow: str, step: str, stopping: threading.Event,
                    log: Callable[[str], None]) -> StepInfo:
    """Waits (with a growing pause) while the services are not reachable: they may be
    starting beside this step. A refusal (4xx) raises StepInfoRefused."""
    url = step_info_url(secret["api_uri"], flow, step)
    headers = {"Authorization": auth_header(secret["api_username"], secret["api_key"]),
               "Accept": "application/json"}
    delay, said, started = 0.05, 0.0, time.monotonic()
    while not stopping.is_set():
        try:
            status, body = http_get(url, headers, timeout=10)
            if status == 200:
                data = json.loads(body or b"{}")
                return StepInfo(config=dict(data.get("config") or {}),
                                snapshot=data.get("snapshot") or {},
                                variables=dict(data.get("variables") or {}),
                                is_passthrough=bool(data.get("is_passthrough")))
            if 400 <= status < 500:
                raise StepInfoRefused(
                    f"the platform services refused the step-info call: HTTP {status} "
                    f"{body[:200].decode('utf-8', 'replace')}")
            problem = f"HTTP {status}"
        except (OSError, ValueError) as e:  # refused, unresolvable, timed out, bad JSON
            problem = type(e).__name__
        if time.monotonic() - said > 10:
            log(f"waiting for the platform services ({problem})")
            said = time.monotonic()
        stopping.wait(delay)
        delay = min(delay * 1.5, 2.0 if time.monotonic() - started > 15 else 0.2)
    return StepInfo({}, {}, {})
