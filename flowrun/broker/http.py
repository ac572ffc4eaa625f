"""The one HTTP client of the host: JSON over HTTP to the broker's management API
and to the platform services, on the standard library (both are on loopback; a
call is a few milliseconds, and `validate` or `plan` must not load a library for
it). The request itself is contract/http.py's, which the services send too.

Every failure is flowrun's own error: `ServiceError` with the HTTP status and the
start of the answer, or `Unreachable` for a refused connection, a timeout or an
answer that is not JSON. A 404 is None where the caller says a missing thing is
an answer (`missing_ok`).
"""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass
from typing import Any

from flowrun.contract.http import request_json
from flowrun.errors import ServiceError, Unreachable


@dataclass(frozen=True)
class JsonClient:
    base_url: str  # e.g. http://127.0.0.1:15672/api
    authorization: str  # the whole header value: "Basic ..." or "Bearer ..."
    what: str  # how errors name the service: "the broker", "the platform services"
    timeout: float = 10.0

    def call(self, method: str, path: str, body: Any = None, *, timeout: float | None = None,
             missing_ok: bool = False) -> Any:
        try:
            return request_json(f"{self.base_url}/{path.lstrip('/')}", method, body,
                                authorization=self.authorization,
                                timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 404 and missing_ok:
                return None
            text = e.read()[:200].decode("utf-8", "replace").strip()
            raise ServiceError(f"{self.what} answered {method} {path} with HTTP {e.code}: "
                               f"{text}", status=e.code) from None
        except OSError as e:  # URLError, refused, timed out
            reason = getattr(e, "reason", None) or e
            raise Unreachable(f"{self.what} did not answer {method} {path}: {reason}") from None
        except ValueError:  # not HTTP, or not JSON
            raise Unreachable(f"{self.what} answered {method} {path} with something "
                              "that is not JSON") from None

    def answers(self, path: str, timeout: float = 2.0) -> bool:
        try:
            self.call("GET", path, timeout=timeout)
            return True
        except ServiceError:
            return False
