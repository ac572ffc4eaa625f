"""A flow on a three-node Docker Swarm (Docker-in-Docker nodes on this machine): it
comes up across nodes, a replicated step shares a stream, a redeploy rolls while
the stream runs, and a worker node stopped mid-stream loses no message.

The broker is a RabbitMQ cluster of three nodes, one per swarm node, and a flow's
quorum queues have a member on each: the node stopped here holds one of them,
besides some of the flow's steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flowrun.broker.server import find_broker
from flowrun.contract import names
from tests.conftest import (
    ORDERS_STEPS,
    ROOT,
    make_component,
    unique,
    wait_for,
    write_flow,
)
from tests.engine.stream import Sink, Stream, replica_work, replicated_steps, roll_mid_stream
from tests.swarm.cluster import Cluster
from tests.swarm.conftest import on_swarm

WORK = replica_work(0.004)


def steps_of(swarm: Cluster, flow: str) -> dict[str, dict[str, Any]]:
    data = json.loads(on_swarm(swarm, "status", flow, "--json").stdout)
    return {s["step"]: s for s in data["flows"][0]["steps"]}


def nodes_of(step: dict[str, Any]) -> set[str]:
    return {e["node"] for e in step["each"]} if step["each"] else {step["node"]}


def flow_services(swarm: Cluster, flow: str) -> list[Any]:
    return swarm.client().services.list(filters={"label": f"io.flowrun.flow={flow}"})


def test_a_flow_comes_up_across_nodes_carries_messages_and_goes(
        swarm: Cluster, swarm_engine: Any, tmp_path: Path) -> None:
    name = unique("swarm")
    path = write_flow(tmp_path, name, ORDERS_STEPS)
    # No registry named: one line, exit 2, nothing started.
    bare = subprocess.run([sys.executable, "-m", "flowrun", "up", "-d", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in {**os.environ,
                                                 "DOCKER_HOST": swarm.manager_url}.items()
                               if k != "FLOWRUN_REGISTRY"})
    assert bare.returncode == 2 and "FLOWRUN_REGISTRY" in bare.stderr, bare.stderr
    assert len(bare.stderr.strip().splitlines()) == 1 and not flow_services(swarm, name)
    try:
        out = on_swarm(swarm, "up", "-d", "--timeout", "180", str(path)).stdout
        assert "5 real steps live" in out, out
        steps = steps_of(swarm, name)
        assert all(s["live"] for s in steps.values()), steps
        broker = find_broker(swarm_engine)
        assert broker is not None and broker.running_nodes() == 3
        queue = broker.queues(name)[names.input_queue(name, "enrich")]
        assert queue["type"] == "quorum" and len(queue["members"]) == 3, queue
        nodes = {s["node"] for s in steps.values()}
        assert len(nodes) >= 2 and nodes <= {"node-1", "node-2", "node-3"}, nodes
        # Same labels, non-root user, no capabilities, a memory limit, dnsrr.
        for service in flow_services(swarm, name):
            spec = service.attrs["Spec"]
            container = spec["TaskTemplate"]["ContainerSpec"]
            assert container["User"] == "1999999:1999999"
            assert container["CapabilityDrop"] == ["ALL"]
            assert spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] > 0
            assert spec["EndpointSpec"]["Mode"] == "dnsrr"
            assert "amqp" not in json.dumps(container.get("Env")), "secret in the env"
            assert spec["Labels"]["io.flowrun.flow"] == name

        sink = Sink(swarm_engine, name, "notify")
        sink.declare()
        stream = Stream(swarm_engine, name, "fetch", {
            "id": "o", "customer": {"first": "A", "last": "B", "email": "a@b.c"},
            "items": [{"price": 1}]}, 200)
        stream.start()
        stream.join(timeout=60)
        sink.drain_until(200, timeout=60)
        assert not sink.missing(200)
        logs = on_swarm(swarm, "logs", name, "notify", "--tail", "5").stdout
        assert "posted:" in logs, logs
        # `send` and its `--expect` (a tail) through the cluster, as from a laptop.
        sent = on_swarm(swarm, "send", name, json.dumps(
            {"id": "o-9", "customer": {"first": "Ada", "last": "L", "email": "a@x.org"},
             "items": [{"price": 3}]}), "--as", "fetch", "--expect", "notify").stdout
        assert "Ada L" in sent, sent
        assert "nothing to do" in on_swarm(swarm, "up", "--dry-run", str(path)).stdout
    finally:
        on_swarm(swarm, "down", "--grace", "2", "--purge", name, check=False)
    assert flow_services(swarm, name) == []


def test_replicas_share_a_stream_and_a_redeploy_rolls_without_loss(
        swarm: Cluster, swarm_engine: Any, tmp_path: Path) -> None:
    work = make_component(tmp_path, "work", "go", WORK)
    name = unique("swarm-rep")
    path = write_flow(tmp_path, name, replicated_steps(work, 3))
    count = 3000  # 30 s at 100 msg/s: a swarm redeploy took over 14 s in a slow hour
    try:
        on_swarm(swarm, "up", "-d", "--timeout", "180", str(path))
        work_status = steps_of(swarm, name)["work"]
        assert work_status["replicas"] == 3 and work_status["replicas_live"] == 3
        assert len({e["node"] for e in work_status["each"]}) >= 2, work_status

        def redeploy() -> None:
            (work / "go.py").write_text(WORK + "\nVERSION = 2\n")
            on_swarm(swarm, "up", "-d", "--timeout", "180", str(path))

        roll_mid_stream(swarm_engine, name, count, redeploy)
        revisions = {s.attrs["Spec"]["Labels"]["io.flowrun.revision"]
                     for s in flow_services(swarm, name)
                     if s.attrs["Spec"]["Labels"]["io.flowrun.step"] == "work"}
        assert len(revisions) == 1, revisions
    finally:
        on_swarm(swarm, "down", "--grace", "2", "--purge", name, check=False)


def test_a_worker_node_lost_mid_stream_loses_no_message(
        swarm: Cluster, swarm_engine: Any, tmp_path: Path) -> None:
    name = unique("swarm-loss")
    path = write_flow(tmp_path, name, ORDERS_STEPS.replace(
        "function: upsertContact", "function: upsertContact\n    replicas: 2"))
    count = 2500
    stopped: int | None = None
    follower: subprocess.Popen[str] | None = None
    try:
        on_swarm(swarm, "up", "-d", "--timeout", "180", str(path))
        steps = steps_of(swarm, name)
        # The worker node with most of the flow's tasks goes.
        load = {node: 0 for node in ("node-2", "node-3")}
        for s in steps.values():
            for node in nodes_of(s):
                if node in load:
                    load[node] += 1
        victim = max(load, key=lambda n: load[n])
        assert load[victim] > 0, steps
        broker_nodes = {swarm_engine.find(names.broker_node(i)).node for i in (1, 2, 3)}
        assert broker_nodes == {"node-1", "node-2", "node-3"}, broker_nodes
        sink = Sink(swarm_engine, name, "notify")
        sink.declare()
        stream = Stream(swarm_engine, name, "fetch", {
            "id": "o", "customer": {"first": "A", "last": "B", "email": "a@b.c"},
            "items": [{"price": 1}]}, count, rate=100)
        stream.start()
        time.sleep(2.0)
        before = stream.sent
        # `logs -f` of a step on that node: it must outlive the node and show the
        # step's task started elsewhere.
        followed = next(step for step, s in steps.items() if victim in nodes_of(s))
        follower = subprocess.Popen(
            [sys.executable, "-m", "flowrun", "logs", name, followed, "-f", "--tail", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "DOCKER_HOST": swarm.manager_url})
        lines: list[str] = []
        out = follower.stdout

        def read() -> None:
            try:
                lines.extend(out or [])
            except (ValueError, OSError):  # closed at the end of the test
                pass

        threading.Thread(target=read, daemon=True).start()
        stopped = int(victim.rsplit("-", 1)[1]) - 1
        swarm.stop_node(stopped)
        lost_at = time.monotonic()
        after = stream.sent
        # A bounded read while the node is gone: it returns.
        on_swarm(swarm, "logs", name, followed, "--tail", "3", timeout=60)
        # Swarm marks the node down and starts its tasks elsewhere; the stream ends.
        wait_for(lambda: all(s["live"] and victim not in nodes_of(s)
                             for s in steps_of(swarm, name).values()), 120,
                 f"every step live off {victim}")
        print(f"\nsteps live again {time.monotonic() - lost_at:.1f} s after {victim} stopped")
        # Only lines from now on (--tail 0): the live line is the new task's.
        wait_for(lambda: any("flowrun-sailor: live" in line for line in lines)
                 or follower.poll() is not None, 90, f"`logs -f {followed}` to show its new task")
        assert follower.poll() is None, f"logs -f ended: {lines[-5:]}"
        stream.join(timeout=120)
        assert stream.error is None, stream.error
        assert 0 < before <= after < count, (before, after)
        sink.drain_until(count, timeout=180)
        missing = sink.missing(count)
        print(f"{len(sink.seen)}/{count} delivered, {sink.duplicates()} duplicate(s)")
        assert not missing, f"lost {len(missing)}, first {missing[:10]}"
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(10)
            if follower.stdout is not None:
                follower.stdout.close()
        if stopped is not None:
            swarm.start_node(stopped)
        on_swarm(swarm, "down", "--grace", "2", "--purge", name, check=False)


def test_a_flow_called_over_http_on_the_swarm(swarm: Cluster, tmp_path: Path) -> None:
    """The gateway is published by the manager: a request goes in there, its answer
    comes back from a step on whichever node runs it."""
    from tests.conftest import COMPONENTS
    from tests.engine.test_http import Http

    name = unique("swarm-http")
    path = write_flow(tmp_path, name, f"""  - id: ingest
    component: {COMPONENTS}/hook-py
    function: receive
  - id: answer
    component: {COMPONENTS}/answer-py
    function: answer
""")
    try:
        out = on_swarm(swarm, "up", "-d", "--timeout", "180", str(path)).stdout
        status = json.loads(on_swarm(swarm, "status", name, "--json").stdout)["flows"][0]
        assert status["webhook"] and f"called over HTTP: {status['webhook']}" in out, out
        web = Http(status["webhook"])

        def one(i: int) -> tuple[int, Any]:
            code, _headers, body = web.call("POST", body={"n": i, "status": 201})
            return code, body["n"] if isinstance(body, dict) else body

        with ThreadPoolExecutor(max_workers=10) as pool:
            assert list(pool.map(one, range(20))) == [(201, i) for i in range(20)]
    finally:
        on_swarm(swarm, "down", "--grace", "2", "--purge", name, check=False)
