"""The engine path itself: a real container started and removed through the adapter."""

from __future__ import annotations

import uuid
from typing import Any

from flowrun.engine.adapter import ContainerSpec
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
