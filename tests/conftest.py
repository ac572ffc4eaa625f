"""Shared fixtures. Tests marked `engine` need a real Docker engine, the base images
and the broker; with CI set they fail, never skip, when any of that is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
COMPONENTS = ROOT / "sample_flows" / "components"
# The HTTP gateway's loopback port: any free one, chosen by Docker when the platform
# services start (a fixed port could be taken on a shared machine). Every `flowrun`
# of the session passes the same value on, so the services are not started anew.
os.environ.setdefault("FLOWRUN_GATEWAY_PORT", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/engine/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)
        if "/swarm/" in str(item.fspath):
            item.add_marker(pytest.mark.engine)
            item.add_marker(pytest.mark.swarm)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: engine tests must run; see scripts/ensure-engine)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine() -> Any:
    from flowrun.engine.adapter import Engine
    from flowrun.errors import EngineUnavailable
    from flowrun.settings import base_image

    try:
        eng = Engine()
    except EngineUnavailable as e:
        _unavailable(str(e))
    from flowrun.settings import broker_image, node_base_image

    for image in (base_image(), node_base_image(), broker_image()):
        if not eng.image_exists(image):
            _unavailable(f"image {image} is missing; run `make images`")
    return eng


def plan_of(path: Path, env: dict[str, str] | None = None,
            revision: str | None = None) -> Any:
    """The plan of a flow file, expanded without building or digesting anything: each
    component's revision is `rev-<name>` (or `revision`). The tests' one plan builder."""
    from flowrun.core.flowfile import load_flow
    from flowrun.core.plan import check_flow, expand, load_components, load_mapper

    flow = load_flow(path, env or {})
    components = load_components(flow)
    check_flow(flow, components)
    mapper = load_mapper()
    revisions = {c.path: revision or f"rev-{c.name}" for c in [*components.values(), mapper]}
    return expand(flow, components, mapper, revisions)


def python_child(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`script` run by a Python of its own, from the repository's root: for what may
    hang or signal its process (a hang ends at `timeout`, not with the suite)."""
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def flowrun(*args: str, timeout: float = 180, check: bool = True, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The tests' one way to run the CLI, from the repository's root. `env`: the whole
    environment it gets (with a PATH), instead of this one's with CI set."""
    if env is not None:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **{
            k: os.environ[k] for k in ("PYTHONPATH", "FLOWRUN_GATEWAY_PORT")
            if k in os.environ}, **env}
    result = subprocess.run([sys.executable, "-m", "flowrun", *args], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT, input=stdin,
                            env=env if env is not None else {**os.environ, "CI": "true"})
    if check and result.returncode != 0:
        raise AssertionError(f"flowrun {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


@dataclass
class RunningFlow:
    name: str
    path: Path

    def status(self) -> dict[str, Any]:
        data = json.loads(flowrun("status", self.name, "--json").stdout)
        return dict(data["flows"][0])

    def steps(self) -> dict[str, dict[str, Any]]:
        return {s["step"]: s for s in self.status()["steps"]}


def write_flow(directory: Path, name: str, steps_yaml: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\nsteps:\n{steps_yaml}")
    return path


def make_component(directory: Path, name: str, function: str, code: str,
                   trigger: bool = False, requirements: str | None = None) -> Path:
    """A one-function component in `directory/name`, with `code` as `<function>.py`."""
    path = directory / name
    path.mkdir()
    group = "triggers" if trigger else "actions"
    (path / "component.json").write_text(json.dumps(
        {"title": name, group: {function: {"main": f"{function}.py"}}}))
    (path / f"{function}.py").write_text(code)
    if requirements is not None:
        (path / "requirements.txt").write_text(requirements)
    return path


def wait_for(predicate: Any, timeout: float, what: str, every: float = 0.3) -> Any:
    """Poll until `predicate()` is truthy; return its value, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def flow_factory(engine: Any, tmp_path: Path) -> Iterator[Any]:
    started: list[str] = []

    def up(name: str, steps_yaml: str, *extra: str) -> RunningFlow:
        path = write_flow(tmp_path, name, steps_yaml)
        started.append(name)
        flowrun("up", "-d", "--timeout", "120", *extra, str(path))
        return RunningFlow(name, path)

    yield up
    for name in started:
        flowrun("down", "--purge", "--grace", "2", name, check=False)


# The sample flows some engine modules share (test_http, test_flow_tests): brought up
# once per session under their own names, taken down at its end. The orders trigger
# keeps firing (a limit it does not reach), as CI flows' triggers do.
SAMPLE_ENV = {"ORDERS_LIMIT": "100000"}


@pytest.fixture(scope="session")
def sample_flow(engine: Any) -> Iterator[Any]:
    """`sample_flow("hello-http")`: that sample flow, up; its status (with `webhook`)."""
    up: dict[str, dict[str, Any]] = {}

    def get(name: str) -> dict[str, Any]:
        if name not in up:
            flowrun("up", "-d", "--timeout", "240", str(ROOT / "sample_flows" / f"{name}.yaml"),
                    env={**os.environ, "CI": "true", **SAMPLE_ENV}, timeout=400)
            up[name] = json.loads(flowrun("status", name, "--json").stdout)["flows"][0]
        return up[name]

    yield get
    for name in up:
        flowrun("down", "--purge", "--grace", "2", name, check=False)


ORDERS_STEPS = f"""  - id: fetch
    component: {COMPONENTS}/shop
    function: newOrders
    config: {{apiKey: test-secret-key, limit: 0}}
  - id: enrich
    component: {COMPONENTS}/crm
    function: upsertContact
    map:
      email: customer.email
      name: customer.first & ' ' & customer.last
      orderId: id
      total: $sum(items.price)
  - id: notify
    component: {COMPONENTS}/chat
    function: post
    map:
      text: "'Order ' & orderId & ' from ' & name & ' <' & email & '>: ' & $string(total)"
      contact: contactId
"""
