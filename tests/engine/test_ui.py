"""The live page, as a person uses it: a real flow, `flowrun ui`, Debian's chromium.

playwright drives the system's chromium (it downloads no browser). The page's
state is read from `window.flowrunUI` and from what it shows; a screenshot is kept
in build/artifacts/ (FLOWRUN_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ORDERS_STEPS, ROOT, _unavailable, flowrun, unique

ARTIFACTS = Path(os.environ.get("FLOWRUN_ARTIFACTS", ROOT / "build" / "artifacts"))
STEPS = ["fetch", "mapper.fetch.enrich", "enrich", "mapper.enrich.notify", "notify"]
ORDER = {"id": "o-1", "customer": {"first": "Ada", "last": "L", "email": "a@x.org"},
         "items": [{"price": 1}]}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    # Fails, never skips, with CI set (as a missing engine or image does).
    _unavailable("chromium is missing; `make test` installs it (scripts/ensure-chromium)")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def page_server(engine: Any) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "flowrun", "ui", "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "CI": "true"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    out = proc.stdout.read() if proc.stdout else ""
                    raise AssertionError(f"flowrun ui exited: {out}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_live_page_shows_the_flow_working(flow_factory: Any, engine: Any,
                                              page_server: str) -> None:
    from playwright.sync_api import sync_playwright

    name = unique("page")
    flow = flow_factory(name, ORDERS_STEPS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(page_server)
            page.wait_for_function("window.flowrunUI && window.flowrunUI.updates >= 1",
                                   timeout=30_000)
            page.click(f"button[data-flow='{name}']")

            def step(step_id: str) -> dict[str, Any]:
                return dict(page.evaluate(
                    "([f, s]) => window.flowrunUI.flows[f].steps.find(x => x.id === s)",
                    [name, step_id]))

            # Every real step is a node of the graph, mappers drawn as such.
            nodes = page.evaluate("window.flowrunUI.cy.nodes().map(n => [n.id(), "
                                  "!!n.data('mapper'), n.data('live')])")
            assert [n[0] for n in nodes] == STEPS
            assert [n[1] for n in nodes] == [False, True, False, True, False]
            assert all(n[2] for n in nodes)

            # Counters move as messages pass, without a reload.
            before = step("notify")["processed"] or 0
            flowrun("send", name, json.dumps(ORDER), "-n", "3", "--expect", "notify",
                    "--expect-count", "3", "--timeout", "30")
            page.wait_for_function(
                "([f, n]) => (window.flowrunUI.flows[f].steps.find(x => x.id === 'notify')"
                ".processed || 0) >= n", arg=[name, before + 3], timeout=30_000)
            row = page.inner_text("tr[data-step='notify']")
            assert str(step("notify")["processed"]) in row

            # A killed step turns not-live on the page, and live again once it is back.
            subprocess.run(["docker", "kill", f"flowrun.{name}.enrich"], check=True,
                           capture_output=True)
            page.wait_for_function(
                "f => window.flowrunUI.flows[f].steps.find(x => x.id === 'enrich').live"
                " === false && window.flowrunUI.cy.$id('enrich').data('live') === false",
                arg=name, timeout=30_000)
            flowrun("up", "-d", "--timeout", "60", str(flow.path))
            page.wait_for_function(
                "f => window.flowrunUI.flows[f].steps.find(x => x.id === 'enrich').live",
                arg=name, timeout=30_000)
            assert page.evaluate("window.flowrunUI.cy.nodes().map(n => n.id())") == STEPS

            # A step's messages and log lines open on a click.
            page.click("tr[data-step='enrich']")
            page.wait_for_selector("#detail .msg", timeout=15_000)
            detail = page.inner_text("#detail")
            assert "a@x.org" in detail and "flowrun-sailor: live" in detail

            # A thread from the trace, followed through the graph.
            page.wait_for_selector("#threads li[data-thread]", timeout=15_000)
            page.click("#threads li[data-thread]")
            page.wait_for_function("window.flowrunUI.cy.nodes('.onpath').length >= 5",
                                   timeout=10_000)

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "flowrun-ui.png"))
        finally:
            browser.close()
