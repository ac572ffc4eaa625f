"""The object store in the platform services, used by a Node.js step through the
platform's public client (@elastic.io/maester-client, unmodified): objects found by
query headers, made with meta headers and a TTL, updated, read back, deleted; kept
sealed with the flow's key on the services' volume."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import COMPONENTS, flowrun, unique
from tests.engine.test_http import Http

STORE = Path(__file__).parent / "components" / "store-js"


def test_a_node_step_keeps_lists_in_the_object_store(engine: Any, tmp_path: Path) -> None:
    name = unique("objects")
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""version: 1
name: {name}
steps:
  - id: ingest
    component: {COMPONENTS}/hook-py
    function: receive
  - id: keep
    component: {STORE}
    function: keep
  - id: answer
    component: {COMPONENTS}/answer-py
    function: answer
""")
    try:
        flowrun("up", "-d", "--timeout", "240", str(path), timeout=400)
        web = Http(json.loads(flowrun("status", name, "--json").stdout)["flows"][0]["webhook"])

        def keep(**body: Any) -> dict[str, Any]:
            status, _h, answer = web.call("POST", body=body)
            assert status == 200, answer
            return dict(answer)

        first = keep(group="g1", item=1)
        assert (first["items"], first["kind"], first["found"]) == ([1], "list", 0)
        second = keep(group="g1", item=2)
        assert (second["items"], second["found"], second["id"]) == ([1, 2], 1, first["id"])
        assert keep(group="g2", item="x")["items"] == ["x"]
        # Kept sealed with the flow's key: the volume holds no plain text of it.
        stored = subprocess.run(
            ["docker", "exec", "flowrun-services", "cat",
             f"/var/lib/flowrun-services/{name}/objects/{first['id']}"],
            capture_output=True, check=True).stdout
        assert stored and b"items" not in stored
        # Deleted, it is gone: the next message of the group starts a new list.
        keep(group="g1", item=3, drop=True)
        again = keep(group="g1", item=4)
        assert (again["items"], again["found"]) == ([4], 0)
    finally:
        flowrun("down", "--purge", "--grace", "2", name, check=False)
