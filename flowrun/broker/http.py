"""The one HTTP client of the host: JSON over HTTP to the broker's management API
and to the platform services, on the standard library (both are on loopback; a
call is a few milliseconds, and `validate` or `plan` must not load a library for it).

Every failure is flowrun's own error: `ServiceError` with the HTTP status and the
start of the answer, or `Unreachable` for a refused connection, a timeout or an
answer that is not JSON. A 404 is None where the caller says a missing thing is
an answer (`missing_ok`).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from flowrun.errors import ServiceError, Unreachable


@dataclass(frozen=True)
class JsonClient:
    base_url: str  # e.g. http://127.0.0.1:15672/api
    authorization: str  # the whole header value: "Basic ..." or "Bearer ..."
    what: str  # how errors name the service: "the broker", "the platform services"
    timeout: float = 10.0

    def call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
             missing_ok: bool = False) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}/{path.lstrip('/')}", data=data, method=method,
            headers={"Authorization": self.authorization, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            if e.code == 404 and missing_ok:
                return None
            text = e.read()[:200].decode("utf-8", "replace").strip()
            raise ServiceError(f"{self.what} answered {method} {path} with HTTP {e.code}: "
                               f"{text}", status=e.code) from None
        except (OSError, ValueError) as e:  # URLError, refused, timed out, not HTTP
            reason = getattr(e, "reason", None) or e
            raise Unreachable(f"{self.what} did not answer {method} {path}: {reason}") from None
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise Unreachable(f"{self.what} answered {method} {path} with something "
                              "that is not JSON") from None

    def answers(self, path: str, timeout: float = 2.0) -> bool:
        try:
            self.call("GET", path, timeout=timeout)
            return True
        except ServiceError:
            return False
