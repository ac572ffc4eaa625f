"""`flowrun test`: run the cases of test files against their flows.

Each flow is brought up (`up -d`: nothing is done when it already runs at the
same revision) and taken down afterwards when this run brought it up (unless
`--keep`). A ThreadWatch sees everything the flow's steps emit, by thread; each
case puts its one input in (a message as the trigger or into a step's input, an
HTTP request, or an exec of one step alone), learns its thread, and checks what
came out of that thread only. Cases run at once, beside whatever else the flow
does (a trigger that keeps firing included).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowrun.broker.messaging import Sender, check_size, make_message
from flowrun.broker.platform import find_services
from flowrun.broker.server import Broker, find_broker
from flowrun.broker.threads import Emitted, ThreadWatch
from flowrun.commands.exec import exec_step
from flowrun.commands.status import running_flows
from flowrun.core.expect import check_jsonata, contains, diff, equals, holds
from flowrun.core.load import load_plan
from flowrun.core.plan import Plan
from flowrun.core.testfile import Case, ExpectSpec, LoadedTests, TestFileError, load_tests
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import FlowFailed

CONCURRENT_CASES = 16
SETTLE_SECONDS = 0.3  # after the last expected message: time for one too many to show
QUIET_SECONDS = 1.0  # a case that expects nothing more: its thread has been quiet this long


@dataclass
class Outcome:
    """One case's result."""

    file: str
    flow: str
    name: str
    where: str
    passed: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    thread: str | None = None
    emitted: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "flow": self.flow, "name": self.name, "where": self.where,
                "passed": self.passed, "seconds": round(self.seconds, 3),
                "failures": self.failures, "thread": self.thread, "emitted": self.emitted}


@dataclass
class Suite:
    """The cases of one flow (from one or more files), checked against its plan."""

    plan: Plan
    flow_path: Path
    cases: list[tuple[LoadedTests, Case]]


# ---------------------------------------------------------------- loading


def collect(paths: Sequence[Path], env: Mapping[str, str], keyword: str | None) -> list[Suite]:
    """Every file read and every case checked against its flow's plan before anything
    starts: a mistake is exit 2 with nothing brought up."""
    suites: dict[Path, Suite] = {}
    for path in paths:
        loaded = load_tests(path, env)
        flow_path = loaded.flow_path.resolve()
        if flow_path not in suites:
            suites[flow_path] = Suite(load_plan(loaded.flow_path, env), loaded.flow_path, [])
        suite = suites[flow_path]
        for case in loaded.cases:
            _check(case, suite.plan)
            if keyword is None or keyword.lower() in case.name.lower():
                suite.cases.append((loaded, case))
    return [s for s in suites.values() if s.cases]


def _check(case: Case, plan: Plan) -> None:
    spec, where = case.spec, case.where
    steps = [s.id for s in plan.steps]

    def known(step: str, what: str) -> None:
        if step not in steps:
            raise TestFileError(f"{where}: case {case.name!r}: {what} {step!r} is not a step "
                                f"of flow {plan.flow}; its steps: {', '.join(steps)}")

    if spec.send is not None and spec.send.to is not None:
        known(spec.send.to, "send.to")
        if spec.send.to == steps[0]:
            raise TestFileError(f"{where}: case {case.name!r}: send.to names the trigger, "
                                "which has no input; leave 'to' out to send as the trigger")
    if spec.http is not None and not plan.webhook:
        raise TestFileError(f"{where}: case {case.name!r}: 'http' needs a flow called over "
                            f"HTTP, and {plan.flow}'s trigger is no webhook; use 'send'")
    if spec.exec is not None:
        known(spec.exec.step, "exec.step")
    for expect in spec.expect:
        known(expect.target, "step" if expect.step is not None else "error")
        if expect.jsonata is not None and (why := check_jsonata(expect.jsonata)):
            raise TestFileError(f"{where}: case {case.name!r}: jsonata {expect.jsonata!r} is "
                                f"not JSONata ({why})")
        if spec.exec is not None and expect.target != spec.exec.step:
            raise TestFileError(f"{where}: case {case.name!r}: an exec case runs "
                                f"{spec.exec.step} alone; expect only what it emits")


# ---------------------------------------------------------------- running


def run(engine: ContainerEngine, suites: Sequence[Suite], *, keep: bool, up_timeout: float,
        log: Callable[[str], None], on_outcome: Callable[[Outcome], None]) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for suite in suites:
        outcomes += _run_suite(engine, suite, keep, up_timeout, log, on_outcome)
    return outcomes


def _flowrun(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowrun", *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ))


def _run_suite(engine: ContainerEngine, suite: Suite, keep: bool, up_timeout: float,
               log: Callable[[str], None], on_outcome: Callable[[Outcome], None],
               ) -> list[Outcome]:
    flow = suite.plan.flow
    only_exec = all(case.spec.exec is not None for _loaded, case in suite.cases)
    brought_up = False
    if not only_exec:
        was_running = flow in running_flows(engine)
        doing = "running; bringing it up to date" if was_running else "bringing it up"
        log(f"flow {flow}: {doing} ({suite.flow_path})")
        done = _flowrun("up", "-d", "--progress", "plain", "--timeout", f"{up_timeout:g}",
                        str(suite.flow_path), timeout=up_timeout + 120)
        brought_up = not was_running
        if done.returncode != 0:
            outcomes = []
            for loaded, case in suite.cases:
                outcome = Outcome(str(loaded.path), flow, case.name, case.where, failures=[
                    f"flow {flow} did not come up (exit {done.returncode}):\n"
                    + (done.stderr.strip() or done.stdout.strip())[-2000:]])
                on_outcome(outcome)
                outcomes.append(outcome)
            if brought_up and not keep:
                _flowrun("down", "--purge", "--grace", "2", flow, timeout=120)
            return outcomes
    broker = find_broker(engine) if not only_exec else None
    watch = ThreadWatch(broker, flow, [s.id for s in suite.plan.steps]) if broker else None
    webhook = None
    if suite.plan.webhook and broker is not None:
        services = find_services(engine, broker)
        webhook = services.webhook_url(flow) if services is not None else None
    try:
        def one(item: tuple[LoadedTests, Case]) -> Outcome:
            loaded, case = item
            outcome = _run_case(engine, suite.plan, broker, watch, webhook, loaded, case)
            on_outcome(outcome)
            return outcome

        with ThreadPoolExecutor(max_workers=CONCURRENT_CASES, thread_name_prefix="case") as pool:
            return list(pool.map(one, suite.cases))
    finally:
        if watch is not None:
            watch.close()
        if brought_up and not keep:
            log(f"flow {flow}: taking it down (brought up for the tests; --keep keeps it)")
            _flowrun("down", "--purge", "--grace", "2", flow, timeout=180)


def _run_case(engine: ContainerEngine, plan: Plan, broker: Broker | None,
              watch: ThreadWatch | None, webhook: str | None, loaded: LoadedTests,
              case: Case) -> Outcome:
    spec = case.spec
    outcome = Outcome(str(loaded.path), plan.flow, case.name, case.where)
    started = time.monotonic()
    try:
        if spec.exec is not None:
            step = plan.step(spec.exec.step)
            assert step is not None
            ran = exec_step(engine, plan, step, spec.exec.body, spec.exec.snapshot,
                            timeout=spec.timeout)
            seen = [found for e in ran.events
                    if (found := _emitted_by_exec(step.id, e, spec.exec.body)) is not None]
        else:
            assert watch is not None
            response = None
            thread: str | None
            if spec.send is not None:
                thread = send_message(broker, plan, spec.send.to, spec.send.body,
                                      spec.send.headers)
            else:
                assert spec.http is not None
                if webhook is None:
                    raise FlowFailed(f"flow {plan.flow} has no HTTP address (are the platform "
                                     "services running?)")
                response, thread = http_call(webhook, spec.http.method, spec.http.path,
                                         spec.http.headers, spec.http.body, spec.timeout)
            outcome.thread = thread
            left = max(0.5, spec.timeout - (time.monotonic() - started))
            seen = _wait(watch, thread, spec.expect, left) if thread else []
            if response is not None and spec.response is not None:
                outcome.failures += _check_response(spec.response, response)
        outcome.emitted = [e.to_json() for e in seen]
        for i, expect in enumerate(spec.expect):
            failure = _check_expect(expect, seen)
            if failure:
                outcome.failures.append(f"expect[{i}]: {failure}")
    except Exception as e:  # whatever stopped it, it is this case's failure, said once
        outcome.failures.append(f"could not run: {type(e).__name__}: {e}")
    outcome.seconds = time.monotonic() - started
    outcome.passed = not outcome.failures
    return outcome


def _emitted_by_exec(step: str, event: dict[str, Any], body: Any) -> Emitted | None:
    kind, payload = event.get("event"), event.get("payload")
    if kind == "data":
        return Emitted(step, "message", (payload or {}).get("body"))
    if kind == "error":
        error = payload if isinstance(payload, dict) else {}
        return Emitted(step, "error", body, str(error.get("message") or ""),
                       str(error.get("name") or "Error"))
    return None


def send_message(broker: Broker | None, plan: Plan, to: str | None, body: Any,
          headers: dict[str, Any]) -> str:
    assert broker is not None
    source = plan.steps[0].id
    if to is not None:
        index = [s.id for s in plan.steps].index(to)
        source = plan.steps[index - 1].id  # as the step before it emitted it
    message = make_message(body, headers)
    check_size(message)
    sender = Sender(broker, plan.flow)
    try:
        sender.send(source, message)
    finally:
        sender.close()
    return str(message["id"])  # a message sent as a step begins its own thread


@dataclass
class Response:
    """An HTTP answer; `thread`: the request's id (its thread), when it entered the flow."""

    status: int
    headers: dict[str, str]
    body: Any
    thread: str | None = None


def http_call(url: str, method: str, path: str, headers: dict[str, str], body: Any,
          timeout: float) -> tuple[Response, str | None]:
    parts = urllib.parse.urlsplit(url + path)
    sent = {k: v for k, v in headers.items()}
    data = None
    if body is not None:
        if isinstance(body, str):
            data = body.encode()
            sent.setdefault("Content-Type", "text/plain; charset=utf-8")
        else:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout + 5)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=data, headers=sent)
        answer = connection.getresponse()
        raw = answer.read()
        got = {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()
    try:
        value: Any = json.loads(raw) if raw else None
    except ValueError:
        value = raw.decode("utf-8", "replace")
    thread = got.get("x-request-id")
    return Response(answer.status, got, value, thread), thread


def _matches(expect: ExpectSpec, e: Emitted) -> bool:
    if e.step != expect.target or e.kind != expect.kind:
        return False
    if expect.has("body_contains") and not contains(expect.body_contains, e.body):
        return False
    if expect.has("body_equals") and not equals(expect.body_equals, e.body):
        return False
    if expect.jsonata is not None and not holds(expect.jsonata, e.body):
        return False
    return expect.message_contains is None or expect.message_contains in e.message


def _wait(watch: ThreadWatch, thread: str, expects: list[ExpectSpec], timeout: float,
          ) -> list[Emitted]:
    positive = [x for x in expects if x.count > 0]

    def met(seen: list[Emitted]) -> bool:
        return all(sum(_matches(x, e) for e in seen) >= x.count for x in positive)

    if positive:
        seen = watch.wait(thread, met, timeout)
        if met(seen):
            time.sleep(SETTLE_SECONDS)
            return watch.of(thread)
        return seen
    # Only "nothing comes out" left: wait until the thread has been quiet a while.
    deadline = time.monotonic() + timeout
    last, count = time.monotonic(), -1
    while time.monotonic() < deadline:
        seen = watch.of(thread)
        if len(seen) != count:
            last, count = time.monotonic(), len(seen)
        elif time.monotonic() - last >= QUIET_SECONDS:
            break
        time.sleep(0.1)
    return watch.of(thread)


def _describe(expect: ExpectSpec) -> str:
    what = (f"{expect.count} message(s) out of {expect.step}" if expect.kind == "message"
            else f"{expect.count} error(s) at {expect.error}")
    parts = []
    if expect.has("body_contains"):
        parts.append(f"body containing {json.dumps(expect.body_contains, default=str)}")
    if expect.has("body_equals"):
        parts.append(f"body equal to {json.dumps(expect.body_equals, default=str)}")
    if expect.jsonata is not None:
        parts.append(f"jsonata {expect.jsonata!r} true")
    if expect.message_contains is not None:
        parts.append(f"message containing {expect.message_contains!r}")
    return what + (" with " + " and ".join(parts) if parts else "")


def _check_expect(expect: ExpectSpec, seen: list[Emitted]) -> str | None:
    matching = [e for e in seen if _matches(expect, e)]
    if len(matching) == expect.count:
        return None
    same_place = [e for e in seen if e.step == expect.target and e.kind == expect.kind]
    text = f"expected {_describe(expect)}; {len(matching)} matched"
    if not same_place:
        elsewhere = sorted({f"{e.step} ({e.kind})" for e in seen})
        return text + (f"; nothing came from {expect.target} at all (the thread reached: "
                       f"{', '.join(elsewhere)})" if elsewhere else
                       "; nothing of this case's thread came out of any step")
    if expect.count and not matching:
        wanted = (expect.body_equals if expect.has("body_equals") else
                  expect.body_contains if expect.has("body_contains") else None)
        shown = same_place[0]
        if wanted is not None:
            return text + f", of {len(same_place)} from {expect.target}:\n" + diff(
                wanted, shown.body, f"came out of {expect.target}")
        detail = (f"message {shown.message!r}" if shown.kind == "error" else
                  f"body {json.dumps(shown.body, default=str)[:400]}")
        return text + f", of {len(same_place)} from {expect.target}; the first: {detail}"
    return text + f" (of {len(same_place)} from {expect.target})"


def _check_response(expected: Any, response: Response) -> list[str]:
    failures = []
    if expected.status is not None and response.status != expected.status:
        failures.append(f"response: expected status {expected.status}, got {response.status}: "
                        f"{json.dumps(response.body, default=str)[:400]}")
    if expected.has("body_contains") and not contains(expected.body_contains, response.body):
        failures.append("response: the body does not contain what was expected:\n"
                        + diff(expected.body_contains, response.body, "the response"))
    if expected.has("body_equals") and not equals(expected.body_equals, response.body):
        failures.append("response: the body is not what was expected:\n"
                        + diff(expected.body_equals, response.body, "the response"))
    for name, value in expected.headers_contain.items():
        if response.headers.get(name.lower()) != value:
            failures.append(f"response: header {name}: expected {value!r}, got "
                            f"{response.headers.get(name.lower())!r}")
    return failures

