"""The object store's rules, on a directory: tokens, queries, TTLs, limits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from flowrun.contract import wire
from flowrun.services import objects
from flowrun.services.objects import Refused, Store

KEYS = wire.Keys("password", "0123456789abcdef")


def test_a_token_names_its_step_and_cannot_be_forged() -> None:
    token = wire.object_token("secret", "orders", "mapper.a.b")
    assert objects.who("secret", f"Bearer {token}") == ("orders", "mapper.a.b")
    forged = token.replace("orders/", "other/", 1)
    for header in (f"Bearer {forged}", f"Bearer {token}x", token, None, "Bearer a/b",
                   f"Basic {token}"):
        assert objects.who("secret", header) is None, header
    assert objects.who("another secret", f"Bearer {token}") is None


def test_objects_are_found_by_query_kept_sealed_and_deleted(tmp_path: Path) -> None:
    store = Store(tmp_path)
    status, made = store.put("f", KEYS, "s", b'{"a": 1}', {
        "content-type": "application/json", "x-query-group": "g1", "x-meta-kind": "list"})
    assert status == 201 and made["size"] == 8
    oid = made["objectId"]
    assert b'"a"' not in (tmp_path / "f" / "objects" / oid).read_bytes()
    got = store.get("f", KEYS, oid)
    assert got.body == b'{"a": 1}'
    assert got.headers == {"content-type": "application/json", "x-meta-kind": "list",
                           "x-query-group": "g1"}
    assert [o["objectId"] for o in store.find("f", {"group": "g1"})] == [oid]
    assert store.find("f", {"group": "g2"}) == [] and store.find("other", {"group": "g1"}) == []
    status, updated = store.put("f", KEYS, "s", b"[]", {}, oid)
    assert status == 200 and updated["queriableHeaders"] == {"group": "g1"}
    # Another store on the same directory (the services started anew) sees the same.
    assert Store(tmp_path).get("f", KEYS, oid).body == b"[]"
    assert store.delete("f", None, {"group": "g1"}) == 1
    with pytest.raises(Refused) as e:
        store.get("f", KEYS, oid)
    assert e.value.status == 404


def test_limits_and_time_to_live(tmp_path: Path) -> None:
    store = Store(tmp_path, budget=100)
    with pytest.raises(Refused) as e:
        store.put("f", KEYS, "s", b"x" * 101, {})
    assert e.value.status == 507
    with pytest.raises(Refused) as e:
        store.put("f", KEYS, "s", b"x", {f"x-query-k{i}": "v" for i in range(6)})
    assert e.value.status == 400
    with pytest.raises(Refused) as e:
        store.put("f", KEYS, "s", b"x", {"x-eio-ttl": "soon"})
    assert e.value.status == 400
    with pytest.raises(Refused) as e:
        store.get("f", KEYS, "../../etc/passwd")
    assert e.value.status == 404
    _status, made = store.put("f", KEYS, "s", b"x" * 60, {"x-eio-ttl": "1"})
    with pytest.raises(Refused):  # 60 + 60 > 100
        store.put("f", KEYS, "s", b"y" * 60, {})
    made_at = time.time()
    while time.time() < made_at + 1.1:
        time.sleep(0.05)
    store.put("f", KEYS, "s", b"y" * 60, {})  # the first has expired: room again
    with pytest.raises(Refused):
        store.get("f", KEYS, made["objectId"])


def test_search_parameters_as_the_client_sends_them() -> None:
    assert objects.query_of({"query[ExternalId]": ["x"], "other": ["y"]}) == {
        "externalid": "x"}
