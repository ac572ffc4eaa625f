"""The object store: what the platform's object storage answers to its public
client (`@elastic.io/maester-client`), for the components that keep payloads there
(attachments, a splitter's re-assembly, "lightweight" messages).

    POST   /objects            the body is the object -> 201 {objectId, ...}
    PUT    /objects/<id>       replace it             -> 200 {objectId, ...}
    GET    /objects/<id>       the object, with its Content-Type and x-meta-* headers
    GET    /objects?query[k]=v the descriptors of the objects whose x-query-k is v
    DELETE /objects/<id>, /objects?query[k]=v

`Authorization: Bearer <the step's token>` (ELASTICIO_OBJECT_STORAGE_TOKEN): a
step reaches the objects of its own flow only (one step stores what the next
reads). Headers `x-query-<k>` (at most 5) make an object findable, `x-meta-<k>`
travel with it, `x-eio-ttl` (seconds) ends it. Objects are kept on the services'
volume sealed with the flow's message key, as the platform keeps them encrypted;
each is at most MAX_OBJECT_BYTES, and all of them together at most
BUDGET_BYTES (past it: 507, nothing is evicted behind a step's back).
"""

from __future__ import annotations

import hmac
import json
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..contract import wire

MAX_OBJECT_BYTES = 16 * 1024 * 1024
BUDGET_BYTES = int(os.environ.get("FLOWRUN_OBJECTS_BUDGET", str(512 * 1024 * 1024)))
MAX_QUERY_HEADERS = 5
_ID = re.compile(r"^[0-9a-f]{32}$")
_HEADER_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


class Refused(Exception):
    """An answer other than success: (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Raw:
    """An answer that is not JSON: an object's bytes and its headers."""

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body, self.headers = body, headers


def who(secret: str, authorization: str | None) -> tuple[str, str] | None:
    """(flow, step) of a step's object-store token, or None."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    token = authorization[7:].strip()
    parts = token.split("/")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        return None
    expected = wire.object_token(secret, parts[0], parts[1])
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return None
    return parts[0], parts[1]


class Store:
    """Every flow's objects, on the services' volume: `<flow>/objects/<id>` (sealed)
    and `<flow>/objects/index.json` (descriptors)."""

    def __init__(self, root: Path, budget: int = BUDGET_BYTES) -> None:
        self.root, self.budget = root, budget
        self.lock = threading.Lock()
        self._index: dict[str, dict[str, dict[str, Any]]] = {}

    def _objects(self, flow: str) -> dict[str, dict[str, Any]]:
        if flow not in self._index:
            try:
                self._index[flow] = json.loads((self._dir(flow) / "index.json").read_text())
            except (OSError, ValueError):
                self._index[flow] = {}
        return self._index[flow]

    def _dir(self, flow: str) -> Path:
        return self.root / flow / "objects"

    def _save(self, flow: str) -> None:
        path = self._dir(flow) / "index.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._objects(flow)))
        os.replace(tmp, path)

    def used(self) -> int:
        """Bytes kept by every flow's objects (those past their TTL not counted)."""
        total, now = 0, time.time()
        if self.root.is_dir():
            for flow_dir in self.root.iterdir():
                if (flow_dir / "objects").is_dir():
                    total += sum(o.get("size", 0) for o in self._objects(flow_dir.name).values()
                                 if (o.get("expiresAt") or now + 1) > now)
        return total

    # ------------------------------------------------------------ calls

    def put(self, flow: str, keys: wire.Keys, step: str, data: bytes, headers: dict[str, str],
            object_id: str | None = None) -> tuple[int, dict[str, Any]]:
        if len(data) > MAX_OBJECT_BYTES:
            raise Refused(413, f"an object may have at most {MAX_OBJECT_BYTES} bytes")
        query = _prefixed(headers, "x-query-")
        if len(query) > MAX_QUERY_HEADERS:
            raise Refused(400, f"at most {MAX_QUERY_HEADERS} x-query-* headers")
        meta = _prefixed(headers, "x-meta-")
        ttl = headers.get("x-eio-ttl")
        if ttl is not None and not ttl.isdigit():
            raise Refused(400, "x-eio-ttl: a whole number of seconds")
        with self.lock:
            self.expire(flow)
            objects = self._objects(flow)
            old = objects.get(object_id) if object_id else None
            if object_id is not None and old is None:
                raise Refused(404, f"no object {object_id}")
            if self.used() - (old or {}).get("size", 0) + len(data) > self.budget:
                raise Refused(507, f"the object store is full ({self.budget} bytes); "
                                   "delete objects, or give them an x-eio-ttl")
            object_id = object_id or uuid.uuid4().hex
            now = time.time()
            descriptor = {
                "objectId": object_id,
                "contentType": headers.get("content-type") or "application/octet-stream",
                "size": len(data), "createdAt": (old or {}).get("createdAt", now),
                "updatedAt": now, "createdBy": (old or {}).get("createdBy", step),
                "queriableHeaders": query if query or old is None else old["queriableHeaders"],
                "metaHeaders": meta if meta or old is None else old["metaHeaders"],
                "expiresAt": now + int(ttl) if ttl else (old or {}).get("expiresAt")}
            path = self._dir(flow) / object_id
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(keys.seal(data))
            os.replace(tmp, path)
            objects[object_id] = descriptor
            self._save(flow)
        return (200 if old else 201), _public(descriptor)

    def get(self, flow: str, keys: wire.Keys, object_id: str) -> Raw:
        with self.lock:
            descriptor = self._live(flow, object_id)
            sealed = (self._dir(flow) / object_id).read_bytes()
        headers = {"content-type": descriptor["contentType"],
                   **{f"x-meta-{k}": v for k, v in descriptor["metaHeaders"].items()},
                   **{f"x-query-{k}": v for k, v in descriptor["queriableHeaders"].items()}}
        return Raw(keys.unseal(sealed), headers)

    def find(self, flow: str, query: dict[str, str]) -> list[dict[str, Any]]:
        if not query:
            raise Refused(400, "find objects by at least one query[<key>]=<value>")
        with self.lock:
            self.expire(flow)
            return [_public(d) for d in self._objects(flow).values()
                    if all(d["queriableHeaders"].get(k) == v for k, v in query.items())]

    def delete(self, flow: str, object_id: str | None, query: dict[str, str]) -> int:
        with self.lock:
            if object_id is not None:
                self._live(flow, object_id)
                gone = [object_id]
            else:
                if not query:
                    raise Refused(400, "delete objects by id or by query[<key>]=<value>")
                gone = [i for i, d in self._objects(flow).items()
                        if all(d["queriableHeaders"].get(k) == v for k, v in query.items())]
            for i in gone:
                self._forget(flow, i)
            self._save(flow)
            return len(gone)

    def expire(self, flow: str) -> None:
        """Objects past their x-eio-ttl go (at each look, and by the services' chores)."""
        now = time.time()
        gone = [i for i, d in self._objects(flow).items()
                if d.get("expiresAt") is not None and d["expiresAt"] <= now]
        for i in gone:
            self._forget(flow, i)
        if gone:
            self._save(flow)

    def purge(self, flow: str) -> None:
        with self.lock:
            for i in list(self._objects(flow)):
                self._forget(flow, i)
            (self._dir(flow) / "index.json").unlink(missing_ok=True)
            self._index.pop(flow, None)

    def _live(self, flow: str, object_id: str) -> dict[str, Any]:
        self.expire(flow)
        descriptor = self._objects(flow).get(object_id) if _ID.match(object_id) else None
        if descriptor is None:
            raise Refused(404, f"no object {object_id}")
        return descriptor

    def _forget(self, flow: str, object_id: str) -> None:
        self._objects(flow).pop(object_id, None)
        (self._dir(flow) / object_id).unlink(missing_ok=True)


def _prefixed(headers: dict[str, str], prefix: str) -> dict[str, str]:
    found = {k[len(prefix):]: v for k, v in headers.items() if k.startswith(prefix)}
    for name in found:
        if not _HEADER_NAME.match(name):
            raise Refused(400, f"{prefix}{name}: letters, digits, '-' and '_' only")
    return found


def _public(descriptor: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in descriptor.items() if k != "createdBy"}


def query_of(query: dict[str, list[str]]) -> dict[str, str]:
    """`query[externalid]=x` (as the client sends a search) -> {"externalid": "x"}."""
    out = {}
    for key, values in query.items():
        m = re.fullmatch(r"query\[([^\]]+)\]", key)
        if m and values:
            out[m.group(1).lower()] = values[0]
    return out
