"""`flowrun test`'s results: a line per case, the failures in full, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any, Protocol, TextIO


class Result(Protocol):
    file: str
    flow: str
    name: str
    where: str
    passed: bool
    seconds: float
    failures: list[str]
    thread: str | None

    def to_json(self) -> dict[str, Any]: ...


def case_line(result: Result) -> str:
    mark = "PASS" if result.passed else "FAIL"
    return f"{mark}  {result.flow}: {result.name}  ({result.seconds:.2f} s)"


def failure_text(result: Result) -> str:
    lines = [f"  at {result.where}" + (f"  (thread {result.thread}: `flowrun trace "
                                        f"{result.flow} --thread {result.thread}`)"
                                        if result.thread else "")]
    for failure in result.failures:
        first, *rest = failure.splitlines()
        lines.append(f"  - {first}")
        lines += [f"      {line}" for line in rest]
    return "\n".join(lines)


def summary(results: Sequence[Result], seconds: float) -> str:
    failed = sum(not r.passed for r in results)
    return (f"{len(results) - failed} passed, {failed} failed in {seconds:.1f} s"
            if results else "no case matched")


def print_results(results: Sequence[Result], seconds: float, out: TextIO) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        out.write("\nfailures:\n")
        for r in failed:
            out.write(f"{case_line(r)}\n{failure_text(r)}\n")
    out.write(summary(results, seconds) + "\n")


def results_json(results: Sequence[Result], seconds: float) -> str:
    return json.dumps({"passed": sum(r.passed for r in results),
                       "failed": sum(not r.passed for r in results),
                       "seconds": round(seconds, 3),
                       "cases": [r.to_json() for r in results]}, indent=2, default=str)


def junit_xml(results: Sequence[Result], seconds: float) -> str:
    """JUnit XML as CI servers read it: one <testsuite> per test file, one <testcase>
    per case (classname: the flow), a <failure> with what differed."""
    root = ET.Element("testsuites", name="flowrun", tests=str(len(results)),
                      failures=str(sum(not r.passed for r in results)), errors="0",
                      time=f"{seconds:.3f}")
    by_file: dict[str, list[Result]] = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    for file, cases in by_file.items():
        suite = ET.SubElement(root, "testsuite", name=file, tests=str(len(cases)),
                              failures=str(sum(not r.passed for r in cases)), errors="0",
                              time=f"{sum(r.seconds for r in cases):.3f}")
        for r in cases:
            case = ET.SubElement(suite, "testcase", name=r.name, classname=r.flow,
                                 file=file, time=f"{r.seconds:.3f}")
            if not r.passed:
                failure = ET.SubElement(case, "failure", type="AssertionError",
                                        message=r.failures[0].splitlines()[0][:500])
                failure.text = failure_text(r)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
