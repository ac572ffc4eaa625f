"""The swarm figures of `make bench`, on a three-node test swarm built for the run
(tests/swarm/cluster.py): each beside a baseline from the same run.

- warm-up of a 5-real-step flow, against the same services (images from the
  registry, overlay network, dnsrr, memory limit, user) created directly with the
  Docker SDK, until every task runs;
- throughput of one step doing 20 ms of I/O-bound work per message (a call to an
  API, say), with 1 and with 3 replicas (the baseline is the 1-replica figure);
- a node's loss mid-stream: when swarm marks the node down (its own floor) and when
  messages reach the end of the flow again, with nothing lost.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402
from docker.types import EndpointSpec, NetworkAttachmentConfig, Resources  # noqa: E402

from flowrun.engine.swarm import SwarmEngine  # noqa: E402
from flowrun.settings import base_image, broker_image, node_base_image  # noqa: E402
from tests.conftest import ORDERS_STEPS  # noqa: E402
from tests.engine.stream import Sink, Stream, replica_work, replicated_steps  # noqa: E402
from tests.swarm.cluster import Cluster, remove_cluster, start_cluster  # noqa: E402
from tests.swarm.conftest import on_swarm  # noqa: E402

COMPONENTS = ROOT / "sample_flows" / "components"
WORK = replica_work(0.02)
ORDER = {"id": "o", "customer": {"first": "A", "last": "B", "email": "a@b.c"},
         "items": [{"price": 1}]}


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": len(values)}


def _baseline_services(cluster: Cluster, images: list[str], tag: str) -> float:
    """The same services created directly with the Docker SDK, until every task runs."""
    client = cluster.client()
    network = client.networks.create(f"bench-{tag}", driver="overlay", attachable=True)
    started = time.perf_counter()

    def create(i_image: tuple[int, str]) -> Any:
        i, image = i_image
        return client.services.create(
            f"{cluster.registry}/{image}", name=f"bench-{tag}-{i}",
            command=["python3", "-c", "import time; time.sleep(600)"],
            user="1999999:1999999", networks=[NetworkAttachmentConfig(network.id)],
            resources=Resources(mem_limit=256 * 1024 * 1024),
            endpoint_spec=EndpointSpec(mode="dnsrr"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        services = list(pool.map(create, enumerate(images)))
    while not all(any(t["Status"]["State"] == "running" for t in s.tasks())
                  for s in services):
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    for service in services:
        service.remove()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            network.remove()
            break
        except docker.errors.APIError:
            time.sleep(0.5)
    return elapsed


def warmup(cluster: Cluster, tmp: Path, runs: int) -> dict[str, Any]:
    name = "bench-swarm-w5"
    path = tmp / f"{name}.yaml"
    path.write_text(f"""version: 1
name: {name}
steps:
  - {{id: s0, component: {COMPONENTS}/shop, function: newOrders, config: {{limit: 0}}}}
  - {{id: s1, component: {COMPONENTS}/chat, function: post}}
  - {{id: s2, component: {COMPONENTS}/chat, function: post}}
""")
    on_swarm(cluster, "up", "-d", str(path))  # builds and pushes once
    on_swarm(cluster, "down", name, "--grace", "0")
    plan = json.loads(on_swarm(cluster, "plan", "--json", str(path)).stdout)
    images = [s["image"] for s in plan["steps"]]
    ours, base = [], []
    for run in range(runs):
        started = time.perf_counter()
        on_swarm(cluster, "up", "-d", str(path))
        ours.append(time.perf_counter() - started)
        on_swarm(cluster, "down", name, "--grace", "0")
        base.append(_baseline_services(cluster, images, f"w{run}"))
    on_swarm(cluster, "down", name, "--purge", "--grace", "0")
    return {"flowrun": _summary(ours), "baseline": _summary(base),
            "ratio": statistics.median(ours) / statistics.median(base)}


def _throughput(cluster: Cluster, engine: SwarmEngine, name: str, count: int) -> float:
    sink = Sink(engine, name, "work")
    sink.declare()
    started = time.perf_counter()
    stream = Stream(engine, name, "src", {"n": 1}, count)
    stream.start()
    sink.drain_until(count, timeout=300)
    elapsed = time.perf_counter() - started
    stream.join(timeout=60)
    if sink.missing(count):
        raise SystemExit(f"throughput run lost {len(sink.missing(count))} messages")
    return count / elapsed


def replicas(cluster: Cluster, engine: SwarmEngine, tmp: Path, count: int) -> dict[str, Any]:
    work = tmp / "work"
    work.mkdir(exist_ok=True)
    (work / "component.json").write_text('{"title": "work", "actions": {"go": {"main": '
                                         '"go.py"}}}')
    (work / "go.py").write_text(WORK)
    name = "bench-swarm-rep"
    path = tmp / f"{name}.yaml"
    text = f"version: 1\nname: {name}\ntrace: false\nsteps:\n{replicated_steps(work, 1)}"
    path.write_text(text)
    on_swarm(cluster, "up", "-d", str(path))
    one = _throughput(cluster, engine, name, count)
    path.write_text(text.replace("replicas: 1", "replicas: 3"))
    on_swarm(cluster, "up", "-d", str(path))
    three = _throughput(cluster, engine, name, count)
    on_swarm(cluster, "down", name, "--purge", "--grace", "0")
    return {"one_msg_s": one, "three_msg_s": three, "ratio": three / one}


def node_loss(cluster: Cluster, engine: SwarmEngine, tmp: Path) -> dict[str, Any]:
    name = "bench-swarm-loss"
    path = tmp / f"{name}.yaml"
    path.write_text(f"version: 1\nname: {name}\nsteps:\n{ORDERS_STEPS}")
    on_swarm(cluster, "up", "-d", str(path))
    # The worker with the most of the flow's steps goes.
    load = {"node-2": 0, "node-3": 0}
    for o in engine.observe({"io.flowrun.flow": name}):
        if o.node in load:
            load[o.node] += 1
    victim = max(load, key=lambda n: load[n])
    arrivals: list[float] = []
    sink = Sink(engine, name, "notify")
    sink.declare()
    count, rate = 3000, 100.0
    stream = Stream(engine, name, "fetch", ORDER, count, rate=rate)
    stream.start()

    def drain() -> None:
        seen = 0
        while seen < count:
            sink.drain_until(min(seen + 50, count), timeout=200)
            now = time.monotonic()
            arrivals.extend([now] * (len(sink.seen) - seen))
            seen = len(sink.seen)
            if time.monotonic() - started > 200:
                return

    started = time.monotonic()
    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    time.sleep(3.0)
    index = int(victim.rsplit("-", 1)[1]) - 1
    lost_at = time.monotonic()
    cluster.stop_node(index)
    down_after = None
    client = cluster.client()
    while down_after is None and time.monotonic() - lost_at < 60:
        for node in client.nodes.list():
            if (node.attrs["Description"]["Hostname"] == victim
                    and node.attrs["Status"]["State"] == "down"):
                down_after = time.monotonic() - lost_at
        time.sleep(0.2)
    stream.join(timeout=200)
    drainer.join(timeout=200)
    after = [t for t in arrivals if t > lost_at]
    # The longest pause in arrivals after the loss ends when the stream flows again.
    gaps = [(b - a, b) for a, b in zip([lost_at, *after], after, strict=False)]
    longest = max(gaps, default=(0.0, lost_at))
    missing = sink.missing(count)
    found = {"victim": victim, "node_down_after_s": down_after,
             "flowing_again_after_s": longest[1] - lost_at, "longest_pause_s": longest[0],
             "lost": len(missing), "duplicates": sink.duplicates(), "messages": count}
    on_swarm(cluster, "down", name, "--purge", "--grace", "0", check=False)
    cluster.start_node(index)
    return found


def run(host_engine: Any, tmp: Path, quick: bool) -> dict[str, Any]:
    cluster = start_cluster(host_engine.client, [base_image(), broker_image(),
                                                 node_base_image()])
    try:
        os.environ["DOCKER_HOST"] = cluster.manager_url
        try:
            engine = SwarmEngine(None, cluster.registry)
        finally:
            del os.environ["DOCKER_HOST"]
        results: dict[str, Any] = {}
        print("swarm: warm-up...", file=sys.stderr)
        results["swarm_warmup_5"] = warmup(cluster, tmp, 1 if quick else 3)
        print("swarm: replicas...", file=sys.stderr)
        results["swarm_replicas"] = replicas(cluster, engine, tmp, 300 if quick else 900)
        print("swarm: node loss...", file=sys.stderr)
        results["swarm_node_loss"] = node_loss(cluster, engine, tmp)
        return results
    finally:
        cluster.close()
        remove_cluster(host_engine.client)


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    w, p, n = r["swarm_warmup_5"], r["swarm_replicas"], r["swarm_node_loss"]

    def span(s: dict[str, float]) -> str:
        return f"{s['median']:.2f} s ({s['min']:.2f}-{s['max']:.2f})"

    return [
        ("swarm: warm-up, 5 real steps (3 nodes)", span(w["flowrun"]),
         span(w["baseline"]) + " (SDK services)", f"{w['ratio']:.2f}x", "report"),
        ("swarm: one step (20 ms of I/O per message), 3 replicas",
         f"{p['three_msg_s']:.0f} msg/s", f"{p['one_msg_s']:.0f} msg/s (1 replica)",
         f"{p['ratio']:.2f}x", "report"),
        ("swarm: node lost mid-stream: flowing again after",
         f"{n['flowing_again_after_s']:.1f} s",
         f"{n['node_down_after_s'] or float('nan'):.1f} s (swarm marks it down)",
         f"lost {n['lost']} of {n['messages']}", "0 lost"),
    ]

