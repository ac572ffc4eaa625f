"""The platform's Node.js components, run unmodified by the platform's own sailor
(elasticio-sailor-nodejs, pinned in their package.json), in flows with Python steps.

The components are the samples in sample_flows/components (clock-js: a trigger
that keeps its count in its snapshot; fanout-js: split into 3, check and fail on
request), written here against the platform's component API.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from flowrun.broker.messaging import tap
from flowrun.broker.platform import find_services
from flowrun.broker.server import find_broker
from tests.conftest import COMPONENTS, ROOT, RunningFlow, flowrun, unique, wait_for, write_flow
from tests.engine.attached import AttachedUp
from tests.engine.stream import Sink, Stream

CLOCK = f"""  - id: clock
    component: {COMPONENTS}/clock-js
    function: tick
    interval: 0.3
    config: {{source: test}}
    credentials: {{token: test-token-value}}
"""
SPLIT = f"""  - id: split
    component: {COMPONENTS}/fanout-js
    function: split
    config: {{copies: 3}}
"""
CHECK = f"""  - id: check
    component: {COMPONENTS}/fanout-js
    function: check
"""
NOTIFY = f"""  - id: notify
    component: {COMPONENTS}/chat
    function: post
    map:
      text: "'tick ' & $string(n) & ' part ' & $string(part)"
      contact: $string(signed)
"""


def services_state(engine: Any, flow: str) -> dict[str, Any]:
    broker = find_broker(engine)
    assert broker is not None
    services = find_services(engine, broker)
    assert services is not None
    return services.flow_state(flow)


def tail(name: str, step: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    out = flowrun("tail", name, step, "-n", str(count), "--timeout", str(timeout),
                  timeout=timeout + 30).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_node_trigger_node_action_python_action(flow_factory: Any) -> None:
    name = unique("mixed")
    flow = flow_factory(name, CLOCK + SPLIT + NOTIFY)
    steps = flow.steps()
    assert list(steps) == ["clock", "mapper.clock.split", "split", "mapper.split.notify",
                           "notify"]
    assert all(s["live"] for s in steps.values()), steps

    # Every tick of the Node.js trigger becomes 3 messages in the Node.js action, each of
    # which reaches the Python action through a Python mapper: the wire is one protocol.
    messages = tail(name, "notify", 9)
    by_tick: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for m in messages:
        by_tick[m["body"]["posted"].split(" part ")[0]].append(m)
    complete = [ms for ms in by_tick.values() if len(ms) == 3]
    assert complete, messages
    parts = complete[0]
    assert sorted(m["body"]["posted"][-1] for m in parts) == ["1", "2", "3"]
    # Three messages, not one taken three times: ids differ, one thread, one parent chain.
    assert len({m["headers"]["messageId"] for m in parts}) == 3
    assert len({m["headers"]["threadId"] for m in parts}) == 1
    # The credential is merged into the trigger's cfg by the step-info call.
    assert all(m["body"]["contact"] == "true" for m in parts)

    # Readable logs of a Node.js step, the raw JSON on request; no secret anywhere.
    assert "INFO  tick" in flowrun("logs", name, "clock").stdout
    assert '"msg":"tick' in flowrun("logs", name, "clock", "--raw").stdout
    shown = flowrun("plan", "--json", str(flow.path)).stdout + flowrun("status", name).stdout
    assert "test-token-value" not in shown
    inspect = subprocess.run(["docker", "inspect", f"flowrun.{name}.clock"],
                             capture_output=True, text=True).stdout
    assert "test-token-value" not in inspect and "MESSAGE_CRYPTO" not in inspect
    # The platform's sailor keeps no counters: its input queue's acks are counted
    # (RabbitMQ's statistics lag by up to 5 s).
    wait_for(lambda: (flow.steps()["split"]["processed"] or 0) >= 1, 30, "acks counted")
    assert json.loads(flowrun("plan", "--json", str(flow.path)).stdout)["steps"][0][
        "runtime"] == "node"


def test_node_errors_snapshots_and_restarts(flow_factory: Any, engine: Any) -> None:
    name = unique("snap")
    flow = flow_factory(name, CLOCK + CHECK)

    # An error in a Node.js action: on the flow's error queue, counted in status, and
    # the message it refused is dead-lettered, not lost.
    flowrun("send", name, json.dumps({"fail": True}), "--as", "clock")

    def failed() -> Any:
        s = flow.status()
        check = {x["step"]: x for x in s["steps"]}["check"]
        return (check["errors"] or 0) >= 1 and s["errors_queued"] and s["dead_letters"]

    wait_for(failed, 30, "the error in status, on the error queue and dead-lettered")

    # The trace shows where it failed, and that the refused message is a dead letter.
    def kinds(node: dict[str, Any]) -> list[str]:
        return [node["kind"], *(k for c in node["children"] for k in kinds(c))]

    traced = json.loads(flowrun("trace", name, "-n", "200", "--json").stdout)["threads"]
    failing = [t for t in traced if "error" in kinds(t["tree"][0])]
    assert failing and "dead" in kinds(failing[0]["tree"][0]), failing

    # A rebound comes back after its delay and then goes through.
    broker = find_broker(engine)
    assert broker is not None
    came: list[tuple[float, dict[str, Any]]] = []
    with tap(broker, name, "check") as t:
        started = time.monotonic()
        flowrun("send", name, json.dumps({"reboundOnce": "r1"}), "--as", "clock")
        # What comes out in 8 s (the ticks too), with when it came.
        t.take(200, 8, lambda m: came.append((time.monotonic(), m)))
    back = [(at, m) for at, m in came if m["body"].get("reboundOnce") == "r1"]
    assert len(back) == 1 and back[0][1]["body"]["checked"] is True, came[-3:]
    assert back[0][0] - started >= 1.0  # it waited out the rebound delay

    # The trigger's count lives in its snapshot: a SIGKILL of its process (Docker's
    # restart policy starts it again) does not send it back to 1.
    before = max(m["body"]["n"] for m in tail(name, "check", 3))
    assert before >= 3
    pid = engine.api.inspect_container(f"flowrun.{name}.clock")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: flow.steps()["clock"]["restarts"] >= 1, 60, "the trigger's restart")
    after = [m["body"]["n"] for m in tail(name, "check", 2)]
    assert min(after) >= before, (before, after)

    # The trigger's start-up hook ran and its data is kept; at `down` the shutdown
    # hook runs once with it (and deletes it, as the platform's sailor does).
    assert services_state(engine, name)["hooks"]["startup"]["subscription"].startswith(
        "clock-test-")

    # `down` without --purge keeps the snapshot too; with --purge it is gone.
    flowrun("down", "--grace", "2", name)
    assert services_state(engine, name)["hooks"] == {}
    flowrun("up", "-d", "--timeout", "120", str(flow.path))
    again = [m["body"]["n"] for m in tail(name, "check", 2)]
    assert min(again) > max(after), (after, again)
    flowrun("down", "--purge", "--grace", "2", name)
    flowrun("up", "-d", "--timeout", "120", str(flow.path))
    fresh = [m["body"]["n"] for m in tail(name, "check", 1)]
    assert fresh[0] < min(again), (again, fresh)  # counting from 1 again


def test_node_step_sigkilled_mid_stream_loses_nothing(flow_factory: Any, engine: Any) -> None:
    name = unique("nodekill")
    flow_factory(name, CLOCK.replace("interval: 0.3", "interval: 60") + CHECK + NOTIFY.replace(
        "'tick ' & $string(n) & ' part ' & $string(part)", "'seen'"))
    count = 600
    sink = Sink(engine, name, "notify")
    sink.declare()
    stream = Stream(engine, name, "clock", {"n": 0}, count, rate=200)
    stream.start()
    time.sleep(1.0)
    before = stream.sent
    pid = engine.api.inspect_container(f"flowrun.{name}.check")["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    after = stream.sent
    stream.join(timeout=120)
    assert 0 < before and after < count and stream.sent == count, (before, after)
    assert stream.error is None, stream.error
    sink.drain_until(count, timeout=120)
    missing = sink.missing(count)
    print(f"\n{name}: {len(sink.seen)}/{count} delivered, {sink.duplicates()} duplicate(s)")
    assert not missing, f"{len(missing)} lost, first {missing[:10]}"


def test_watch_redeploys_a_changed_node_component_only(engine: Any, tmp_path: Path) -> None:
    fanout = tmp_path / "fanout-js"
    shutil.copytree(COMPONENTS / "fanout-js", fanout, ignore=shutil.ignore_patterns(
        "node_modules"))
    name = unique("nodewatch")
    path = write_flow(tmp_path, name, (CLOCK + SPLIT + NOTIFY).replace(
        f"{COMPONENTS}/fanout-js", str(fanout)))
    up = AttachedUp(path, name, "--watch")
    try:
        up.until(lambda e: e.get("event") == "notice" and "watching" in e.get("text", ""), 180)
        before = {o.labels["io.flowrun.step"]: o.id
                  for o in engine.observe({"io.flowrun.flow": name})}
        source = fanout / "lib" / "split.js"
        source.write_text(source.read_text().replace("part, of: copies", "part, of: copies, v: 2"))
        up.until(lambda e: e.get("event") == "notice" and "redeploy split" in e.get("text", ""),
                 30)
        up.until(lambda e: e.get("event") == "phase" and e["step"] == "split"
                 and e["phase"] == "live", 90)
        after = {o.labels["io.flowrun.step"]: o.id
                 for o in engine.observe({"io.flowrun.flow": name})}
        assert sorted(s for s in before if before[s] != after.get(s)) == ["split"]
        messages = tail(name, "split", 1)
        assert messages[0]["body"].get("v") == 2  # the new code runs
    finally:
        up.stop()


def test_node_component_mistakes_are_one_clear_line(engine: Any, tmp_path: Path) -> None:
    # An unknown function: exit 2 before anything starts, naming the ones there are.
    name = unique("nodebad")
    path = write_flow(tmp_path, name, CLOCK + SPLIT.replace("function: split",
                                                            "function: splat"))
    bad = subprocess.run([sys.executable, "-m", "flowrun", "up", "-d", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2, bad.stderr
    assert "function 'splat' is not in" in bad.stderr and "split, check" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1

    # Dependencies that npm cannot install: the build fails with npm's exit code.
    broken = tmp_path / "broken-js"
    shutil.copytree(COMPONENTS / "fanout-js", broken)
    (broken / "package-lock.json").unlink()
    package = json.loads((broken / "package.json").read_text())
    package["dependencies"]["flowrun-no-such-package-here"] = "9.9.9"
    (broken / "package.json").write_text(json.dumps(package))
    path = write_flow(tmp_path, name, CLOCK + SPLIT.replace(f"{COMPONENTS}/fanout-js",
                                                            str(broken)))
    result = subprocess.run([sys.executable, "-m", "flowrun", "up", "-d", "--timeout", "120",
                             str(path)], capture_output=True, text=True, cwd=ROOT)
    try:
        assert result.returncode == 1, result.stderr
        assert "npm install --omit=dev --no-package-lock` failed with exit code" in result.stderr
        assert "broken-js" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        flowrun("down", "--purge", "--grace", "0", name, check=False)


def test_platform_services_answer_only_the_steps_own_calls(flow_factory: Any,
                                                           engine: Any) -> None:
    """The step-info call as a step makes it, and what another flow's step may not do.
    (Asked from the Python action: a mapper makes no such call, its mapping is all in
    its step file, and the services are not on its network.)"""
    name = unique("svc")
    flow: RunningFlow = flow_factory(name, CLOCK + CHECK + NOTIFY)
    probe = (
        "import json,urllib.request,base64,sys\n"
        "s=json.load(open('/etc/flowrun/step.json'))\n"
        "def get(path, user=s['api_username'], key=s['api_key']):\n"
        "    r=urllib.request.Request(s['api_uri']+path, headers={'Authorization':'Basic '+"
        "base64.b64encode(f'{user}:{key}'.encode()).decode()})\n"
        "    try:\n"
        "        with urllib.request.urlopen(r, timeout=5) as x: return x.status, json.load(x)\n"
        "    except urllib.error.HTTPError as e: return e.code, None\n"
        f"print(json.dumps([get('/v1/tasks/{name}/steps/notify'),"
        f"get('/v1/tasks/{name}/steps/clock'),"
        f"get('/v1/tasks/{name}/steps/notify', key='wrong')]))\n"
    )
    out = subprocess.run(["docker", "exec", f"flowrun.{name}.notify", "python3",
                          "-c", probe], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    own, other, wrong = json.loads(out.stdout)
    assert own[0] == 200 and own[1]["config"] == {}  # no config in the flow file
    assert other[0] == 403 and wrong[0] == 401
    mapper_file = subprocess.run(["docker", "exec", f"flowrun.{name}.mapper.clock.check",
                                  "cat", "/etc/flowrun/step.json"], capture_output=True,
                                 text=True, timeout=30)
    assert mapper_file.returncode == 0, mapper_file.stderr
    assert "api_uri" not in json.loads(mapper_file.stdout)
    assert flow.steps()["clock"]["live"]
