"""`flowrun test`, `flowrun exec`, `trace --as-test` and the pytest plugin, on the real
engine, with the sample flows' own test files (so `make test` runs those through
`flowrun test`), a failing file, and twenty cases at once beside a firing trigger.

The three sample flows are the session's (conftest.sample_flow): `flowrun test` finds
them running at the same revision and uses them as they are, then leaves them up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLE_ENV, flowrun

SAMPLES = ROOT / "sample_flows"
FILES = [SAMPLES / "orders.test.yaml", SAMPLES / "hello-http.test.yaml",
         SAMPLES / "ask-http.yaml"]
ORDER = ('{{"id": "{id}", "customer": {{"first": "Ada", "last": "L{n}", '
         '"email": "c{n}@example.org"}}, "items": [{{"price": {n}}}]}}')


def _run_test(*args: str, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowrun", "test", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "CI": "true", **(env or {})})


@pytest.fixture(scope="module")
def suite_run(sample_flow: Any, tmp_path_factory: pytest.TempPathFactory,
              ) -> Iterator[tuple[subprocess.CompletedProcess[str], ET.Element, Path]]:
    for name in ("orders", "hello-http", "ask-http"):
        sample_flow(name)
    tmp = tmp_path_factory.mktemp("flow-tests")
    # Failing on purpose: a wrong body, a step nothing reaches, a wrong status.
    failing = tmp / "failing.test.yaml"
    failing.write_text(f"""flow: {SAMPLES / 'orders.yaml'}
tests:
  - name: a wrong total
    send: {{body: {ORDER.format(id="f-1", n=7)}}}
    expect:
      - step: enrich
        body_contains: {{total: 8}}
    timeout: 20s
  - name: nothing should come out of notify
    send: {{body: {ORDER.format(id="f-2", n=1)}}}
    expect:
      - {{step: notify, count: 0}}
    timeout: 20s
""")
    # Twenty cases at once, while the trigger keeps emitting orders of its own: each
    # sees exactly its own message at notify.
    many = tmp / "many.test.yaml"
    many.write_text(f"flow: {SAMPLES / 'orders.yaml'}\ntests:\n" + "".join(
        f"""  - name: order {i}
    send: {{body: {ORDER.format(id=f"m-{i}", n=i)}}}
    expect:
      - step: notify
        body_contains: {{posted: "Order m-{i} from Ada L{i} <c{i}@example.org>: {i}"}}
        count: 1
    timeout: 30s
""" for i in range(20)))
    junit = tmp / "junit.xml"
    result = _run_test(*map(str, FILES), str(failing), str(many), "--junit", str(junit),
                       env=SAMPLE_ENV)
    yield result, ET.parse(junit).getroot(), tmp
    # Still up: this run did not bring them up (the session did).
    assert "taking it down" not in result.stderr


def test_the_sample_test_files_pass_and_a_failing_one_says_why(
        suite_run: tuple[subprocess.CompletedProcess[str], ET.Element, Path]) -> None:
    result, junit, _tmp = suite_run
    assert result.returncode == 1, result.stdout + result.stderr  # the failing file
    cases = {c.get("name"): c for c in junit.iter("testcase")}
    assert len(cases) == 4 + 3 + 2 + 2 + 20, sorted(cases)
    failed = {n for n, c in cases.items() if c.find("failure") is not None}
    assert failed == {"a wrong total", "nothing should come out of notify"}, \
        result.stdout[-4000:]
    assert junit.get("failures") == "2" and junit.get("tests") == str(len(cases))
    # What was expected and what came out, as a diff, with where and which thread.
    wrong = cases["a wrong total"].find("failure")
    assert wrong is not None and "-  \"total\": 8" in (wrong.text or "")
    assert "+  \"total\": 7" in (wrong.text or "") and "failing.test.yaml:3" in (wrong.text or "")
    assert "flowrun trace orders --thread" in (wrong.text or "")
    nothing = cases["nothing should come out of notify"].find("failure")
    assert nothing is not None and "expected 0 message(s) out of notify" in (
        nothing.get("message") or "")
    assert "FAIL  orders: a wrong total" in result.stdout
    assert "2 failed" in result.stdout.splitlines()[-1]


def test_exec_runs_one_python_and_one_node_step_alone(suite_run: Any) -> None:
    out = flowrun("exec", str(SAMPLES / "orders.yaml"), "enrich",
                  '{"email": "a@b.c", "name": "Ada"}').stdout
    [event] = [json.loads(line) for line in out.splitlines()]
    assert event["event"] == "data" and event["payload"]["body"]["contactId"].startswith("c-")
    # The platform's webhook trigger and reply step, under the platform sailor's executor.
    out = flowrun("exec", str(SAMPLES / "hello-http.yaml"), "receive", "-",
                  stdin='{"name": "Bo"}').stdout
    [event] = [json.loads(line) for line in out.splitlines()]
    assert event["event"] == "data" and event["payload"]["body"]["name"] == "Bo"
    failed = flowrun("exec", str(SAMPLES / "hello-http.yaml"), "reply", "{}", check=False)
    assert failed.returncode == 1
    [event] = [json.loads(line) for line in failed.stdout.splitlines()]
    assert event["event"] == "error" and "reply_to" in event["payload"]["message"]
    bad = flowrun("exec", str(SAMPLES / "orders.yaml"), "nope", check=False)
    assert bad.returncode == 2 and "has no step 'nope'" in bad.stderr


def test_a_recorded_thread_becomes_a_passing_case(suite_run: Any) -> None:
    _result, _junit, tmp = suite_run
    out = flowrun("send", "orders", ORDER.format(id="r-1", n=4), "--expect", "notify",
                  "--timeout", "30").stdout
    thread = json.loads(out.splitlines()[0])["headers"]["threadId"]
    case = flowrun("trace", "orders", "--thread", thread, "--as-test").stdout
    assert "step: notify" in case and "r-1" in case
    recorded = tmp / "recorded.test.yaml"
    recorded.write_text(f"flow: {SAMPLES / 'orders.yaml'}\ntests:\n" + "".join(
        f"  {line}\n" for line in case.splitlines() if not line.startswith("#")))
    result = _run_test(str(recorded), env=SAMPLE_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout


def test_the_pytest_plugin(suite_run: Any, pytester: pytest.Pytester,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SAMPLE_ENV.items():  # the flow as it runs: nothing to redeploy
        monkeypatch.setenv(key, value)
    pytester.makepyfile(test_orders=f'''
def test_an_order(flowrun_flow):
    flow = flowrun_flow({str(SAMPLES / "orders.yaml")!r})
    thread = flow.send({ORDER.format(id="p-1", n=5)})
    [posted] = flow.expect(thread, "notify")
    assert posted["posted"].startswith("Order p-1 from Ada L5")
    [error] = flow.expect(flow.send({{"id": "p-2", "customer": {{}}, "items": []}}),
                          "enrich", errors=True)
    assert "no email" in error["message"]
    [event] = flow.exec("enrich", {{"email": "x@y.z"}})
    assert event["event"] == "data"

def test_a_flow_called_over_http(flowrun_flow):
    flow = flowrun_flow({str(SAMPLES / "hello-http.yaml")!r})
    answer = flow.http("POST", body={{"name": "Cy"}})
    assert (answer.status, answer.body["greeting"]) == (200, "Hello, Cy!")
    assert answer.thread
''')
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
