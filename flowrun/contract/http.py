"""One JSON request over HTTP, on the standard library: what the host's client
(broker/http.py, which turns failures into flowrun's errors) sends."""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any


def basic(user: str, password: str) -> str:
    """An Authorization header's value for HTTP Basic."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request_json(url: str, method: str, body: Any = None, *, authorization: str,
                 timeout: float) -> Any:
    """The answer's JSON (None for an empty one). Raises urllib.error.HTTPError for an
    error status, OSError when nothing answered, ValueError for what is not JSON."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": authorization, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None
