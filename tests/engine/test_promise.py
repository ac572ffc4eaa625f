"""The promise, tried as a hostile user would: no message confirmed into nowhere, no
flow harmed by another or by itself, no secret within reach of another account."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import docker.errors
import pika
import pika.exceptions
import pytest

from flowrun.broker.server import find_broker
from flowrun.supervise.specs import STEP_PIDS_LIMIT, STEP_UID
from tests.conftest import (
    COMPONENTS,
    ORDERS_STEPS,
    ROOT,
    flowrun,
    make_component,
    unique,
    wait_for,
    write_flow,
)
from tests.engine.stream import Sink

ECHO = "def process(msg):\n    return msg['body']\n"


def steps_of(engine: Any, name: str) -> dict[str, Any]:
    return {o.labels["io.flowrun.step"]: o for o in engine.observe({"io.flowrun.flow": name})}


# ------------------------------------------------------------------ lost messages

def test_an_output_that_reaches_no_queue_is_not_acked_and_is_sent_again(
        flow_factory: Any, engine: Any, tmp_path: Path) -> None:
    echo = make_component(tmp_path, "echo", "echo", ECHO)
    name = unique("route")
    flow = flow_factory(name, f"""  - {{id: src, component: {COMPONENTS}/shop, function: newOrders,
       config: {{limit: 0}}}}
  - {{id: a, component: {echo}, function: echo}}
  - {{id: b, component: {echo}, function: echo}}
""")
    broker = find_broker(engine)
    assert broker is not None
    # Take away the queue after `a` (as a half-made topology would have it): what `a`
    # emits now has no queue to go to. The broker would confirm such a publish and
    # drop it; flowrun's sailor publishes `mandatory`, gets it back, and keeps the
    # input unacked.
    conn = broker.connect(name)
    conn.channel().queue_delete(f"{name}:mapper.a.b:messages")
    conn.close()
    flowrun("send", name, json.dumps({"n": 1}), "-n", "3")
    waiting = wait_for(
        lambda: "reached no queue" in flowrun("logs", name, "a").stdout, 30,
        "a's warning about outputs that reached no queue")
    assert waiting
    # Not acked, so not lost: the broker's counters (refreshed every few seconds).
    wait_for(lambda: broker.queues(name)[f"{name}:a:messages"].get("messages") == 3, 30,
             "3 messages held in a's input queue")
    assert flow.steps()["a"]["live"]
    # `up` again declares the topology again, even with every step unchanged; the held
    # messages then go on by themselves.
    with_sink = Sink(engine, name, "b")
    with_sink.declare()
    flowrun("up", "-d", str(flow.path))
    with_sink.drain_until(3, timeout=60)
    assert sorted(with_sink.seen) == [0, 1, 2]


COUNTING_TRIGGER = """
n = 0

def process(msg, cfg):
    global n
    out = []
    for _ in range(20):
        if n >= cfg['total']:
            break
        out.append({'body': {'n': n}, 'headers': {'seq': n}})
        n += 1
    return out
"""


def test_a_trigger_sends_again_what_a_broker_crash_left_unconfirmed(
        flow_factory: Any, engine: Any, tmp_path: Path) -> None:
    counter = make_component(tmp_path, "counter", "count", COUNTING_TRIGGER, trigger=True)
    echo = make_component(tmp_path, "echo", "echo", ECHO)
    total = 6000
    name = unique("trig")
    sink = Sink(engine, name, "count")
    # The sink must exist before the trigger emits: declare it on a paused flow.
    path = write_flow(tmp_path, name, f"""  - id: count
    component: {counter}
    function: count
    interval: 0.01
    config: {{total: 0}}
  - {{id: end, component: {echo}, function: echo}}
""")
    flowrun("up", "-d", str(path))
    try:
        sink.declare()
        path.write_text(path.read_text().replace("total: 0", f"total: {total}"))
        flowrun("up", "-d", str(path))  # config changed: the trigger starts counting
        wait_for(lambda: (steps_of(engine, name)["count"].running and
                          (json.loads(flowrun("status", name, "--json").stdout)
                           ["flows"][0]["steps"][0]["processed"] or 0) > 20), 60,
                 "the trigger counting")
        # Freeze the broker so the trigger's next outputs wait in its socket, unconfirmed,
        # then SIGKILL it (from the host, as the OOM killer would): they are gone, and
        # Docker's restart policy brings the broker back. Without sending again what was
        # not confirmed, the trigger would move on past them.
        pid = engine.api.inspect_container("flowrun-broker")["State"]["Pid"]
        for attempt in range(5):
            try:  # the cgroup freezer can fail on a busy machine ("unable to freeze")
                engine.api.pause("flowrun-broker")
                break
            except docker.errors.APIError:
                if attempt == 4:
                    raise
                time.sleep(0.5)
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)
        try:
            engine.api.unpause("flowrun-broker")
        except Exception:  # already gone: nothing to thaw
            pass
        sink.drain_until(total, timeout=180)
        missing = sink.missing(total)
        print(f"\n{name}: {len(sink.seen)}/{total} delivered, {sink.duplicates()} duplicate(s)")
        assert len(sink.seen) > 0 and max(sink.seen) == total - 1
        assert not missing, f"{len(missing)} lost, first {missing[:10]}"
    finally:
        flowrun("down", "--purge", "--grace", "0", name, check=False)


# ------------------------------------------------------------------ flows apart

def test_flows_whose_names_once_clashed_run_side_by_side(flow_factory: Any, engine: Any,
                                                         tmp_path: Path) -> None:
    echo = make_component(tmp_path, "echo", "echo", ECHO)
    base = unique("p")
    first = flow_factory(base, f"""  - {{id: src, component: {COMPONENTS}/shop, function: newOrders,
       config: {{limit: 0}}}}
  - {{id: x-y, component: {echo}, function: echo}}
""")
    before = steps_of(engine, base)["x-y"].id
    second = flow_factory(f"{base}-x", f"""  - {{id: src, component: {COMPONENTS}/shop,
       function: newOrders, config: {{limit: 0}}}}
  - {{id: y, component: {echo}, function: echo}}
""")
    assert steps_of(engine, base)["x-y"].id == before  # untouched by the second flow
    assert all(s["live"] for s in first.status()["steps"])
    assert all(s["live"] for s in second.status()["steps"])
    flowrun("down", second.name, "--grace", "0")
    assert steps_of(engine, base)["x-y"].running


def test_two_ups_of_one_flow_at_once_leave_it_working(engine: Any, tmp_path: Path) -> None:
    name = unique("twice")
    path = write_flow(tmp_path, name, ORDERS_STEPS)
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "flowrun", "up", "-d", "--timeout",
                                   "120", str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "CI": "true"}) for _ in range(2)]
        results = [(p.wait(timeout=180), p.communicate()) for p in procs]
        for code, (out, err) in results:
            assert code == 0, out + err
        nets = engine.api.networks(names=[f"flowrun.{name}"])
        assert [n["Name"] for n in nets].count(f"flowrun.{name}") == 1
        assert len(steps_of(engine, name)) == 5
        flowrun("up", "-d", str(path))  # and every later `up` works
        flowrun("send", name, json.dumps({"id": "1", "customer": {
            "first": "A", "last": "B", "email": "a@b"}, "items": []}),
            "--expect", "notify", "--timeout", "30")
    finally:
        flowrun("down", "--purge", "--grace", "0", name, check=False)
    assert engine.observe({"io.flowrun.flow": name}) == []


def test_ctrl_c_during_warm_up_stops_what_it_started(engine: Any, tmp_path: Path) -> None:
    echo = make_component(tmp_path, "echo", "echo", ECHO)
    name = unique("intr")
    chain = "".join(f"  - {{id: s{i}, component: {echo}, function: echo}}\n"
                    for i in range(1, 12))
    path = write_flow(tmp_path, name, f"""  - {{id: s0, component: {COMPONENTS}/shop,
       function: newOrders, config: {{limit: 0}}}}
{chain}""")
    flowrun("up", "-d", str(path))  # images built; the interrupted run only starts
    flowrun("down", name, "--grace", "0")
    proc = subprocess.Popen([sys.executable, "-m", "flowrun", "up", "--progress", "json",
                             str(path)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CI": "true"})
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("event") == "phase" and event.get("phase") == "starting":
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, out + err
        assert "Traceback" not in err
        time.sleep(2)  # nothing the interrupted `up` was starting shows up later
        assert engine.observe({"io.flowrun.flow": name}) == []
        assert engine.networks(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # reaped and its pipes closed, not left to a later test
        flowrun("down", "--purge", "--grace", "0", name, check=False)


def test_a_step_stopped_as_it_starts_stops_at_once(flow_factory: Any, engine: Any,
                                                    tmp_path: Path) -> None:
    # The sailor was its container's process 1: the kernel drops a signal process 1
    # has no handler for. A SIGTERM in its first tenth of a second was lost, and a
    # Ctrl-C or `down` then waited out the grace with the step still up. Docker's init
    # now passes it on; before the sailor's handler, it dies of it (143).
    echo = make_component(tmp_path, "echo", "echo", ECHO)
    name = unique("term")
    flow_factory(name, f"""  - {{id: src, component: {COMPONENTS}/shop, function: newOrders,
       config: {{limit: 0}}}}
  - {{id: e, component: {echo}, function: echo}}
""")
    container = f"flowrun.{name}.e"
    for _ in range(3):
        engine.api.stop(container, timeout=0)
        engine.api.start(container)
        engine.api.kill(container, signal="SIGTERM")
        try:
            exited = engine.api.wait(container, timeout=8)  # the grace is 10 s
        except Exception as e:  # the client's read timeout: the SIGTERM was lost
            raise AssertionError(f"a SIGTERM at its start did not stop the step ({e})") from e
        assert exited["StatusCode"] in (0, 143), engine.api.logs(container, tail=20)


# ------------------------------------------------------------------ secrets and isolation

SHOW_CFG = """
def process(msg, cfg):
    return {'size': len(cfg['blob']), 'key_ok': cfg['apiKey'] == 'sk-live-0123456789'}
"""


def test_config_reaches_the_step_privately_and_any_size_starts(
        flow_factory: Any, engine: Any, tmp_path: Path, monkeypatch: Any) -> None:
    shower = make_component(tmp_path, "shower", "show", SHOW_CFG)
    monkeypatch.setenv("TEST_SHOP_KEY", "sk-live-0123456789")
    blob = "x" * 300_000  # more than one environment string may hold (128 KiB)
    name = unique("cfg")
    flow_factory(name, f"""  - {{id: src, component: {COMPONENTS}/shop, function: newOrders,
       config: {{limit: 0}}}}
  - id: show
    component: {shower}
    function: show
    config: {{apiKey: "${{TEST_SHOP_KEY}}", blob: {blob}}}
""")
    out = flowrun("send", name, "{}", "--expect", "show", "--timeout", "30").stdout
    assert json.loads(out)["body"] == {"size": 300_000, "key_ok": True}
    info = engine.api.inspect_container(f"flowrun.{name}.show")
    env = "\n".join(info["Config"]["Env"])
    assert "sk-live" not in env and "xxxxxxxx" not in env and "amqp://" not in env
    assert info["Config"]["User"] == f"{STEP_UID}:{STEP_UID}"
    with pytest.raises(KeyError):
        pwd.getpwuid(STEP_UID)  # no account of this host shares the steps' uid
    pid = info["State"]["Pid"]
    assert os.stat(f"/proc/{pid}").st_uid == STEP_UID
    assert "sk-live" not in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    for command in (["logs", name, "show"], ["status", name, "--json"]):
        assert "sk-live" not in flowrun(*command).stdout
    assert "sk-live" not in flowrun("plan", "--json", str(tmp_path / f"{name}.yaml")).stdout


def step_connection(broker: Any, flow: str, step: str) -> pika.BlockingConnection:
    credentials = pika.PlainCredentials(f"{flow}.{step}", broker.step_password(flow, step))
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=broker.amqp_port, virtual_host=f"flowrun.{flow}",
        credentials=credentials, connection_attempts=1))


def refused(action: Any) -> bool:
    try:
        action()
    except pika.exceptions.ChannelClosedByBroker as e:
        return e.reply_code == 403
    return False


def test_a_step_may_read_its_input_and_publish_as_itself_nothing_more(
        flow_factory: Any, engine: Any, tmp_path: Path) -> None:
    echo = make_component(tmp_path, "echo", "echo", ECHO)
    name = unique("perm")
    flow_factory(name, f"""  - {{id: src, component: {COMPONENTS}/shop, function: newOrders,
       config: {{limit: 0}}}}
  - {{id: a, component: {echo}, function: echo}}
  - {{id: b, component: {echo}, function: echo}}
""")
    broker = find_broker(engine)
    assert broker is not None
    conn = step_connection(broker, name, "a")
    try:
        def on_channel(action: Any) -> bool:
            return refused(lambda: action(conn.channel()))

        for queue in (f"{name}:errors", f"{name}:dead", f"{name}:a:messages",
                      f"{name}:b:messages"):
            assert on_channel(lambda ch, q=queue: ch.queue_delete(q)), queue
        # RabbitMQ lets whoever may read a queue purge it: for its own input that is no
        # more than consuming and acking all of it, which a step may do anyway.
        for queue in (f"{name}:errors", f"{name}:dead", f"{name}:b:messages"):
            assert on_channel(lambda ch, q=queue: ch.queue_purge(q)), queue
        assert on_channel(lambda ch: ch.basic_get(f"{name}:b:messages"))
        assert on_channel(lambda ch: ch.basic_get(f"{name}:errors"))
        assert on_channel(lambda ch: ch.queue_declare("mine"))
        assert on_channel(lambda ch: ch.exchange_delete(f"{name}.a"))

        def publish_as(ch: Any, key: str, exchange: str = f"{name}.a") -> None:
            ch.confirm_delivery()
            ch.basic_publish(exchange, key, b"{}")

        assert on_channel(lambda ch: publish_as(ch, f"{name}.b.message"))
        assert on_channel(lambda ch: publish_as(ch, f"{name}.mapper.src.a.message"))
        assert on_channel(lambda ch: publish_as(ch, f"{name}.b.message", f"{name}.b"))
        assert on_channel(lambda ch: publish_as(ch, f"{name}:b:messages", ""))
        # What it is for still works: reading its own input, publishing as itself.
        ch = conn.channel()
        ch.basic_get(f"{name}:a:messages", auto_ack=False)
        publish_as(ch, f"{name}.a.error")
    finally:
        if conn.is_open:
            conn.close()


def test_the_broker_sits_only_on_flowrun_networks(flow_factory: Any, engine: Any) -> None:
    name = unique("iso")
    flow_factory(name, ORDERS_STEPS)
    broker = engine.api.inspect_container("flowrun-broker")
    networks = broker["NetworkSettings"]["Networks"]
    assert "bridge" not in networks
    assert set(networks) >= {"flowrun-broker", f"flowrun.{name}", f"flowrun.{name}.internal"}
    assert broker["HostConfig"]["Memory"] > 0
    addresses = [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]
    # A throwaway container on Docker's default bridge tries every broker address.
    probe = ("import socket,sys\nok=[]\n"
             "for a in sys.argv[1:]:\n"
             "  for p in (5672, 15672):\n"
             "    s=socket.socket(); s.settimeout(1.5)\n"
             "    try: s.connect((a,p)); ok.append(f'{a}:{p}')\n"
             "    except OSError: pass\n"
             "print('reached', ok)\n")
    result = subprocess.run(["docker", "run", "--rm", "flowrun/python-base:bookworm",
                             "python3", "-c", probe, *addresses],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "reached []" in result.stdout, result.stdout
    # Limits, and mappers on a network that leads nowhere else.
    for step, o in steps_of(engine, name).items():
        info = engine.api.inspect_container(o.id)
        assert info["HostConfig"]["PidsLimit"] == STEP_PIDS_LIMIT
        nets = set(info["NetworkSettings"]["Networks"])
        if step.startswith("mapper."):
            assert nets == {f"flowrun.{name}.internal"}, (step, nets)
        else:
            assert nets == {f"flowrun.{name}"}, (step, nets)
    internal = engine.api.inspect_network(f"flowrun.{name}.internal")
    assert internal["Internal"] is True


# ------------------------------------------------------------------ bad input

def test_send_and_tail_refuse_what_cannot_work(flow_factory: Any, engine: Any,
                                               tmp_path: Path) -> None:
    name = unique("send")
    flow_factory(name, ORDERS_STEPS)
    for args in (["send", name, "{}", "--as", "nope"],
                 ["send", name, "{}", "--expect", "nope", "--timeout", "60"],
                 ["send", unique("absent"), "{}", "--as", "fetch"],
                 ["tail", name, "nope", "--timeout", "60"]):
        started = time.monotonic()
        result = flowrun(*args, check=False)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert time.monotonic() - started < 20  # at once, not after the timeout
    big = json.dumps({"blob": "x" * (65 * 1024 * 1024)})
    result = flowrun("send", name, "-", "--timeout", "10", check=False, stdin=big)
    assert result.returncode == 2, result.stderr
    assert "the broker takes at most" in result.stderr


def test_status_tells_what_happened_to_a_step(flow_factory: Any, engine: Any,
                                              tmp_path: Path, monkeypatch: Any) -> None:
    hog = make_component(tmp_path, "hog", "hog",
                         "def process(msg):\n"
                         "    if msg['body'].get('eat'):\n"
                         "        chunks = []\n"
                         "        while True:\n"
                         "            chunks.append(bytearray(16 * 1024 * 1024))\n"
                         "    if msg['body'].get('hang'):\n"
                         "        import time\n"
                         "        time.sleep(3600)\n"
                         "    return msg['body']\n")
    name = unique("why")
    flow = flow_factory(name, f"""  - {{id: src, component: {COMPONENTS}/shop, function: newOrders,
       config: {{limit: 0}}}}
  - {{id: hog, component: {hog}, function: hog, memory: 64m}}
  - {{id: other, component: {hog}, function: hog}}
""")
    # Out of memory: killed by the kernel, restarted by Docker; status says so.
    flowrun("send", name, json.dumps({"eat": True}), "--as", "mapper.src.hog")
    text = wait_for(lambda: (lambda st: st["last_exit"] if st["restarts"] else None)(
        flow.steps()["hog"]), 60, "the out-of-memory restart")
    assert "out of memory" in text, text
    # Removed by hand: shown as missing, with what brings it back.
    engine.remove(f"flowrun.{name}.other")
    other = flow.steps()["other"]
    assert other["state"] == "missing" and not other["live"]
    assert "flowrun up" in other["remedy"]
    assert "MISSING" in flowrun("status", name).stdout
    # Hung inside process(): not live, and said so.
    monkeypatch.setenv("FLOWRUN_HUNG_AFTER", "3")
    flowrun("up", "-d", str(flow.path))  # brings `other` back
    flowrun("send", name, json.dumps({"hang": True}), "--as", "mapper.hog.other")
    hung = wait_for(lambda: (lambda st: st if st["state"] == "hung" else None)(
        flow.steps()["other"]), 60, "the hung state")
    assert not hung["live"] and "inside process()" in hung["why"]
