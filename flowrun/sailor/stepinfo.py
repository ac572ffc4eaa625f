"""The platform's step-info call, as flowrun's Python sailor makes it.

`GET {api_uri}/v1/tasks/{flow}/steps/{step}` with Basic auth, answered by
flowrun's platform services with `{config, snapshot, variables,
is_passthrough}`: the same call the platform's Node.js sailor makes at start.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class StepInfoRefused(Exception):
    """The services answered 4xx: waiting will not help (wrong key, unknown step)."""


@dataclass(frozen=True)
class StepInfo:
    config: dict[str, Any] = field(default_factory=dict)
    snapshot: Any = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    is_passthrough: bool = False


def auth_header(username: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()


def step_info_url(api_uri: str, flow: str, step: str) -> str:
    return (f"{api_uri.rstrip('/')}/v1/tasks/{urllib.parse.quote(flow, safe='')}"
            f"/steps/{urllib.parse.quote(step, safe='')}")


def fetch_step_info(secret: dict[str, Any], flow: str, step: str, stopping: threading.Event,
                    log: Callable[[str], None]) -> StepInfo:
    """Waits (with a growing pause) while the services are not reachable: they may be
    starting beside this step. A refusal (4xx) raises StepInfoRefused."""
    request = urllib.request.Request(
        step_info_url(secret["api_uri"], flow, step),
        headers={"Authorization": auth_header(secret["api_username"], secret["api_key"]),
                 "Accept": "application/json"})
    delay, said, started = 0.05, 0.0, time.monotonic()
    while not stopping.is_set():
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                data = json.loads(response.read() or b"{}")
            return StepInfo(config=dict(data.get("config") or {}),
                            snapshot=data.get("snapshot") or {},
                            variables=dict(data.get("variables") or {}),
                            is_passthrough=bool(data.get("is_passthrough")))
        except urllib.error.HTTPError as e:
            if 400 <= e.code < 500:
                raise StepInfoRefused(
                    f"the platform services refused the step-info call: HTTP {e.code} "
                    f"{e.read()[:200].decode('utf-8', 'replace')}") from None
            problem = f"HTTP {e.code}"
        except (OSError, ValueError) as e:  # refused, unresolvable, timed out, bad JSON
            problem = type(e).__name__
        if time.monotonic() - said > 10:
            log(f"waiting for the platform services ({problem})")
            said = time.monotonic()
        stopping.wait(delay)
        delay = min(delay * 1.5, 2.0 if time.monotonic() - started > 15 else 0.2)
    return StepInfo()
