"""A hostile component in a real flow, a hostile local user, a broker restart
(issue 18): a step reaches only what is its own, the platform services keep
serving whatever is held against them, and a restart stops no flow."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from flowrun.broker.platform import ensure_services
from flowrun.broker.server import ensure_broker, find_broker
from flowrun.engine.images import build_services_image
from tests.conftest import (
    COMPONENTS,
    ORDERS_STEPS,
    flowrun,
    make_component,
    unique,
    wait_for,
)

# Inside its step, with what the step has: its private step file (broker login, its
# key for the platform services) and pika, which every Python image holds.
ATTACK = r'''
import base64, json, os, struct, urllib.error, urllib.request
import pika, pika.exceptions

def _call(secrets, method, path, body=None):
    token = base64.b64encode(
        f"{secrets['api_username']}:{secrets['api_key']}".encode()).decode()
    request = urllib.request.Request(secrets["api_uri"] + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Basic " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code

def _publish(secrets, exchange, key, headers, body=b"forged", user_id=None):
    connection = pika.BlockingConnection(pika.URLParameters(secrets["amqp_uri"]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, key, body, pika.BasicProperties(
            headers=headers, delivery_mode=2, user_id=user_id), mandatory=True)
        return "confirmed"
    except pika.exceptions.UnroutableError:
        return "unroutable"
    except pika.exceptions.ChannelClosedByBroker as e:
        return f"refused {e.reply_code}"
    finally:
        if connection.is_open:
            connection.close()

def _record_of(key):
    # A trace batch (flowrun.contract.traced) of one record: lengths, meta, body.
    meta = json.dumps([key, {"messageId": "forged-record", "threadId": "forged-thread"},
                       0]).encode()
    return struct.pack(">II", len(meta), 6) + meta + b"forged"

def process(msg, cfg):
    secrets = json.load(open(os.environ["FLOWRUN_STEP_FILE"]))
    flow = os.environ["ELASTICIO_FLOW_ID"]
    mine = os.environ["ELASTICIO_PUBLISH_MESSAGES_TO"]
    live = f"{flow}.evil.live"
    return {
        "put_other_account": _call(secrets, "PUT", f"/v1/accounts/{flow}.victim",
                                   {"keys": {"token": "injected"}}),
        "read_other_step": _call(secrets, "GET", f"/v1/tasks/{flow}/steps/victim"),
        # Its own live key (harmless where it goes), with CC and BCC naming the
        # victim's input key and the victim's error key.
        "cc_bcc": _publish(secrets, mine, live, {
            "CC": [f"{flow}.mapper.evil.victim.message", f"{flow}.src.message"],
            "BCC": [f"{flow}.victim.error"]}),
        "other_exchange": _publish(secrets, f"{flow}.mapper.evil.victim",
                                   f"{flow}.mapper.evil.victim.message", {}),
        "default_exchange": _publish(secrets, "", f"{flow}:victim:messages", {}),
        # The trace: as the victim (the broker checks user_id), and as itself, of a
        # message the victim never published.
        "trace_as_victim": _publish(secrets, f"{flow}:trace", "", {},
                                    _record_of(f"{flow}.victim.message"), f"{flow}.victim"),
        "trace_for_victim": _publish(secrets, f"{flow}:trace", "", {},
                                     _record_of(f"{flow}.victim.message"), f"{flow}.evil"),
        "own_account": _call(secrets, "PUT", f"/v1/accounts/{flow}.evil",
                             {"keys": {"token": "mine-2"}}),
        "token": cfg.get("token"),
    }
'''

SHOW = "def process(msg, cfg):\n    return {'got': msg['body'], 'token': cfg.get('token')}\n"


def test_a_hostile_step_reaches_only_its_own(flow_factory: Any, engine: Any,
                                             tmp_path: Path) -> None:
    evil = make_component(tmp_path, "evil", "attack", ATTACK)
    show = make_component(tmp_path, "show", "show", SHOW)
    name = unique("hostile")
    flow_factory(name, f"""  - {{id: src, component: {COMPONENTS}/shop, function: newOrders,
       config: {{limit: 0}}}}
  - {{id: evil, component: {evil}, function: attack, credentials: {{token: mine}}}}
  - {{id: victim, component: {show}, function: show, credentials: {{token: victim-secret}}}}
""")
    out = flowrun("send", name, '{"go": 1}', "--expect", "victim", "--timeout", "60")
    body = json.loads(out.stdout.splitlines()[0])["body"]
    attack = body["got"]
    assert attack["put_other_account"] == 403
    assert attack["read_other_step"] == 403
    # The broker confirms it (its own key routes to the live queue); the CC and BCC
    # keys, not its own, match no binding on its own exchange.
    assert attack["cc_bcc"] == "confirmed"
    assert attack["other_exchange"] == "refused 403"
    assert attack["default_exchange"] == "refused 403"
    assert attack["trace_as_victim"] == "refused 406"
    assert attack["trace_for_victim"] == "confirmed"  # taken in, and not kept:
    recorded = flowrun("trace", name, "-n", "20", "--json").stdout
    assert '"victim"' in recorded and "forged-record" not in recorded, recorded
    assert attack["own_account"] == 200
    assert body["token"] == "victim-secret"
    broker = find_broker(engine)
    assert broker is not None
    time.sleep(1.0)
    queues = broker.queues(name)
    # Nothing forged reached the victim's mapper (it would fail to read "forged"
    # and raise an error), the trigger's mapper, or the error queue.
    for queue in (f"{name}:errors", f"{name}:dead", f"{name}:mapper.src.evil:messages",
                  f"{name}:mapper.evil.victim:messages"):
        assert queues[queue].get("messages", 0) == 0, (queue, queues[queue])
    assert all(s["errors"] == 0 for s in json.loads(flowrun(
        "status", name, "--json").stdout)["flows"][0]["steps"])
    accounts = subprocess.run(
        ["docker", "exec", "flowrun-services", "cat",
         f"/var/lib/flowrun-services/{name}/accounts.json"],
        capture_output=True, text=True, check=True).stdout
    assert "injected" not in accounts and "mine-2" in accounts


def _services_port() -> int:
    out = subprocess.run(["docker", "port", "flowrun-services", "9090/tcp"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.splitlines()[0].rsplit(":", 1)[1])


def test_a_new_flow_comes_up_while_hundreds_of_idle_connections_are_held(
        flow_factory: Any, engine: Any) -> None:
    broker, _ = ensure_broker(engine)  # the services running, with no flow of their own
    ensure_services(engine, broker, build_services_image(engine, lambda line: None))
    port = _services_port()
    held: list[socket.socket] = []
    try:
        for _ in range(600):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        half = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(half)
        half.sendall(b"PUT /v1/accounts/x HTTP/1.1\r\nContent-Length: 2000000000\r\n\r\n")
        started = time.monotonic()
        second = flow_factory(unique("second"), ORDERS_STEPS)
        assert time.monotonic() - started < 120
        assert all(s["live"] for s in second.status()["steps"])
        out = flowrun("send", second.name, '{"id": "o-1", "customer": {"first": "A", '
                      '"last": "B", "email": "a@b.c"}, "items": [{"price": 2}]}',
                      "--expect", "notify", "--timeout", "30")
        assert "Order o-1 from A B" in out.stdout
    finally:
        for s in held:
            s.close()
    logs = subprocess.run(["docker", "logs", "--since", "5m", "flowrun-services"],
                          capture_output=True, text=True).stdout
    assert "Traceback" not in logs and "can't start new thread" not in logs


def _latest_tick(name: str) -> int:
    data = json.loads(flowrun("trace", name, "-n", "3", "--json").stdout)
    ticks = [r["body"]["n"] for t in data["threads"] for r in t["tree"]
             if r["step"] == "clock" and isinstance(r.get("body"), dict)]
    return max(ticks, default=-1)


def _tail(container: str) -> str:
    lines = subprocess.run(["docker", "logs", "--since", "3m", container], capture_output=True,
                           text=True).stdout.splitlines()
    return "\n".join(line[:300] for line in lines[-25:])


def test_a_broker_restart_stops_no_ticks_and_no_trace(flow_factory: Any, engine: Any) -> None:
    name = unique("restart")
    flow_factory(name, f"""  - id: clock
    component: {COMPONENTS}/clock-js
    function: tick
    interval: 0.5
    config: {{limit: 0, source: restart}}
  - id: notify
    component: {COMPONENTS}/chat
    function: post
    map:
      text: "'tick ' & $string(n)"
""")
    before = wait_for(lambda: _latest_tick(name) >= 1, 60, "the first recorded ticks")
    assert before
    subprocess.run(["docker", "restart", "flowrun-broker"], check=True, capture_output=True)
    seen = _latest_tick(name)
    # Ticks resume (a Node.js trigger's process() runs once per tick) and the trace
    # records them: each new tick has a higher n than any before the restart.
    try:
        wait_for(lambda: _latest_tick(name) > seen + 2, 90, "ticks recorded after the restart")
    except AssertionError as e:  # once in CI, not reproduced since: what each side said
        clock = engine.api.inspect_container(f"flowrun.{name}.clock")
        raise AssertionError(
            f"{e}; last tick {_latest_tick(name)}, before the restart {seen}; the clock "
            f"step restarted {clock['RestartCount']}x, {clock['State']['Status']}; "
            f"its log:\n{_tail(f'flowrun.{name}.clock')}\nthe services' log:\n"
            f"{_tail('flowrun-services')}") from e
    out = flowrun("logs", name, "notify", "--tail", "3").stdout
    assert "tick" in out
