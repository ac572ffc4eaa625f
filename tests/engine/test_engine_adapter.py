"""The engine path itself: a real container started and removed through the adapter."""

from __future__ import annotations

import uuid
from typing import Any

from flowrun.engine.spec import ContainerSpec
from flowrun.settings import base_image


def test_start_and_remove_a_real_container(engine: Any) -> None:
    name = f"flowrun-test-{uuid.uuid4().hex[:8]}"
    engine.run(ContainerSpec(name=name, image=base_image(), env={"X": "1"},
                             labels={"io.flowrun.test": "1"},
                             command=["python3", "-c",
                                      "import time; print('hi', flush=True); time.sleep(60)"],
                             memory="64m", user="1000:1000", restart=False))
    try:
        observed = engine.inspect(name)
        assert observed.running
        assert observed.labels["io.flowrun.test"] == "1"
        for _ in range(50):
            if "hi" in list(engine.logs(name)):
                break
            import time
            time.sleep(0.1)
        assert "hi" in list(engine.logs(name))
    finally:
        engine.stop(name, 0)
        engine.remove(name)
    assert engine.find(name) is None


def test_a_network_is_made_even_when_a_longer_name_contains_its_name(engine: Any) -> None:
    # Docker's name filter matches substrings: `flowrun.n.internal` once hid `flowrun.n`.
    name = f"flowrun.{uuid.uuid4().hex[:8]}"
    engine.ensure_network(f"{name}.internal", {}, internal=True)
    try:
        engine.ensure_network(name, {})
        assert [n["Name"] for n in engine.api.networks(names=[name]) if n["Name"] == name]
    finally:
        engine.remove_network(name)
        engine.remove_network(f"{name}.internal")


REWRITER = """
import os
n = 0
while True:  # replaced whole, as the sailor writes its state; shorter every other time
    n += 1
    with open('/tmp/state.tmp', 'w') as f:
        f.write('s' if n % 2 else 'l' * 300)
    os.replace('/tmp/state.tmp', '/tmp/state')
"""


def test_a_file_read_while_it_is_replaced_is_read_again(engine: Any) -> None:
    # Docker sizes a file's tar entry, then copies whichever file is at the path then:
    # one replaced by a shorter one in between ends the archive short (about 1 read in
    # 5 here), and `flowrun status` said so with a traceback. By a longer one, the
    # entry is its first bytes: torn, for the reader to tell (the sailor's state: JSON).
    name = f"flowrun-test-{uuid.uuid4().hex[:8]}"
    engine.run(ContainerSpec(name=name, image=base_image(), env={},
                             labels={"io.flowrun.test": "1"},
                             command=["python3", "-c", REWRITER],
                             memory="64m", user="1000:1000", restart=False))
    try:
        reads = [engine.read_file(name, "/tmp/state") for _ in range(100)]
        assert all(r is None or r == b"s" or set(r) == {ord("l")} for r in reads)
        assert reads.count(None) < 10  # short three times running: about 1 in 150
    finally:
        engine.stop(name, 0)
        engine.remove(name)
