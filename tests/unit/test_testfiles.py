"""`flowrun test`'s pure parts: test files (and the corpus of bad ones), comparisons,
reports, and cases made from recorded threads."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flowrun.commands.test import collect
from flowrun.commands.trace import _steady
from flowrun.core.expect import contains, diff, equals, holds
from flowrun.render.tests import junit_xml, results_json
from tests.conftest import ROOT, flowrun

BAD = sorted((ROOT / "tests" / "bad_tests").glob("*.yaml"))
SAMPLES = [ROOT / "sample_flows" / n for n in (
    "orders.test.yaml", "hello-http.test.yaml", "ask-http.yaml")]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_a_bad_test_file_is_one_line_and_exit_2(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    result = flowrun("test", str(path), env={}, check=False, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert lines[0].startswith(f"flowrun: {path.relative_to(ROOT)}:") or \
        lines[0].startswith(f"flowrun: {path}:"), lines[0]
    assert "Traceback" not in result.stderr


def test_the_sample_test_files_load_against_their_flows() -> None:
    suites = collect(SAMPLES, {"PATH": "/usr/bin:/bin"}, None)
    assert {s.plan.flow: len(s.cases) for s in suites} == {
        "orders": 4, "hello-http": 3, "ask-http": 2}
    only = collect(SAMPLES, {}, "greeting")
    assert [[c.name for _f, c in s.cases] for s in only] == [["a greeting for a name"]]


def test_structural_comparisons() -> None:
    assert contains({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}, "d": 3})
    assert not contains({"a": {"b": 2}}, {"a": {"b": 1}})
    assert contains([{"p": 1}, {"p": 3}], [{"p": 1}, {"p": 2}, {"p": 3, "q": 0}])
    assert not contains([{"p": 3}, {"p": 1}], [{"p": 1}, {"p": 3}])  # in order
    assert not contains([1, 1], [1])  # each expected item by a different one
    assert not contains(1, True) and not contains(True, 1) and contains(1, 1.0)
    assert equals({"a": [1, 2]}, {"a": [1, 2]}) and not equals({"a": [1]}, {"a": [1, 2]})
    assert holds("total > 3", {"total": 4}) and not holds("total > 3", {"total": 1})
    assert not holds("$undefinedFunction(x)", {})
    assert "-  \"a\": 1" in diff({"a": 1}, {"a": 2}) and "+  \"a\": 2" in diff({"a": 1}, {"a": 2})


@dataclass
class _Result:
    file: str
    flow: str
    name: str
    where: str = "f.test.yaml:3"
    passed: bool = True
    seconds: float = 0.25
    failures: list[str] = field(default_factory=list)
    thread: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed}


def test_junit_xml_as_ci_servers_read_it() -> None:
    results = [_Result("a.test.yaml", "orders", "passes"),
               _Result("a.test.yaml", "orders", "fails <&>", passed=False,
                       failures=["expect[0]: expected 1 message\n-  x\n+  y"], thread="t1"),
               _Result("b.test.yaml", "hello", "other")]
    root = ET.fromstring(junit_xml(results, 1.5))
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "3", "1")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["a.test.yaml", "b.test.yaml"]
    failed = suites[0].findall("testcase")[1]
    assert failed.get("name") == "fails <&>" and failed.get("classname") == "orders"
    failure = failed.find("failure")
    assert failure is not None and failure.get("message") == "expect[0]: expected 1 message"
    assert "+  y" in (failure.text or "") and "flowrun trace orders --thread t1" in (
        failure.text or "")
    assert '"failed": 1' in results_json(results, 1.5)


def test_a_recorded_body_without_what_changes_from_run_to_run() -> None:
    body = {"id": "o-1", "orderId": "o-1", "paid": True, "format": "a4",
            "sentAt": 1764670000000, "when": "2026-12-02T10:00:00Z",
            "token": "4f1c2a9e-5b7d-4e3a-9c1f-2d3e4f5a6b7c", "total": 12.5,
            "items": [{"uuid": "x", "price": 3}]}
    steady, cut = _steady(body)
    assert cut and steady == {"paid": True, "format": "a4", "total": 12.5,
                              "items": [{"price": 3}]}
    assert _steady({"n": 1}) == ({"n": 1}, False)
