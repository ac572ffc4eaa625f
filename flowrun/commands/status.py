"""What runs, read from Docker labels, the sailors' state files and the broker's counters."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowrun.broker.platform import find_services
from flowrun.broker.server import Broker, find_broker
from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.component import Runtime
from flowrun.core.load import revision_at
from flowrun.core.observed import Observed, describe_exit
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import ServiceError
from flowrun.supervise.followers import sailor_state


@dataclass(frozen=True)
class StepStatus:
    step: str
    kind: str
    component: str
    function: str
    revision: str
    state: str
    live: bool
    uptime: float | None
    restarts: int
    last_exit: str | None
    waiting: int | None
    in_flight: int | None
    processed: int | None
    errors: int | None
    stale: str | None  # why the running code is not what is on disk, and how to fix it
    leak: str | None
    crash_looping: bool = False
    last_lines: tuple[str, ...] = ()
    # For a step that is not live: what happened, and what brings it back.
    why: str | None = None
    remedy: str | None = None
    node: str | None = None  # on a swarm: the node(s) its task(s) run on
    replicas: int = 1  # as planned
    replicas_live: int = 0
    # Each replica's container, for a replicated step: name, state, live, restarts.
    each: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Planned:
    """A real step as the flow's last `up` planned it (its record)."""

    step: str
    kind: str
    replicas: int = 1


@dataclass(frozen=True)
class FlowStatus:
    flow: str
    source: str
    steps: list[StepStatus]
    errors_queued: int | None
    dead_letters: int | None
    webhook: str | None = None  # where the flow is called over HTTP

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def running_flows(engine: ContainerEngine) -> list[str]:
    """Flows with containers, or with a record (every step of it removed by hand)."""
    observed = engine.observe({labels.ROLE: labels.ROLE_STEP})
    found = {o.labels[labels.FLOW] for o in observed if labels.FLOW in o.labels}
    found |= {r[labels.FLOW] for r in engine.records(f"{labels.ROLE}={labels.ROLE_RECORD}")
              if labels.FLOW in r}
    return sorted(found)


def flow_record(engine: ContainerEngine, flow: str,
                record: dict[str, str] | None = None) -> list[Planned] | None:
    """The flow's real steps as its last `up` planned them."""
    record = record or engine.get_record(names.record_volume(flow))
    if not record or labels.STEPS not in record:
        return None
    try:
        # [id, kind] from records written before replicas, [id, kind, replicas] since.
        return [Planned(str(entry[0]), str(entry[1]), int(entry[2]) if len(entry) > 2 else 1)
                for entry in json.loads(record[labels.STEPS])]
    except (ValueError, TypeError, IndexError):
        return None


def known_steps(engine: ContainerEngine, flow: str) -> list[str]:
    record = flow_record(engine, flow)
    if record is not None:
        return [planned.step for planned in record]
    return [o.labels.get(labels.STEP, o.name) for o in flow_containers(engine, flow)]


def flow_containers(engine: ContainerEngine, flow: str) -> list[Observed]:
    """A flow's step containers in flow order, a replicated step's by replica."""
    observed = engine.observe({labels.FLOW: flow, labels.ROLE: labels.ROLE_STEP})
    return sorted(observed, key=lambda o: (int(o.labels.get(labels.INDEX, "0")),
                                           labels.replica_of(o.labels)))


def _stale(o: Observed, current: dict[str, str | None]) -> str | None:
    path = o.labels.get(labels.COMPONENT, "")
    if path not in current:
        try:
            runtime = Runtime(o.labels.get(labels.RUNTIME, Runtime.PYTHON.value))
            current[path] = revision_at(Path(path), runtime)
        except OSError:
            current[path] = None
    now = current[path]
    running = o.labels.get(labels.REVISION)
    source = o.labels.get(labels.SOURCE, "FLOW")
    if now is None:
        return f"component {path} is gone from disk"
    if now != running:
        return (f"runs {running}, disk has {now}: redeploy with `flowrun up {source}` "
                "(or keep `flowrun up --watch` running)")
    return None


LAST_LINES = 5
# A sailor's loop writes its state file every fraction of a second; a file this
# old means the loop is stuck (in process(), most likely).
HUNG_AFTER = 30.0
CRASH_LOOP_RESTARTS = 3
HEALTHY_AFTER = 10.0  # seconds: Docker resets its restart backoff after this long up


def _crash_looping(o: Observed, now: datetime) -> bool:
    """Restarted several times and not up long enough since to count as healthy."""
    if o.restart_count < CRASH_LOOP_RESTARTS:
        return False
    if o.status != "running" or o.started_at is None:
        return True
    return (now - o.started_at).total_seconds() < HEALTHY_AFTER


def _last_exit(engine: ContainerEngine, o: Observed) -> str | None:
    """How the step's process last ended. Docker's inspect data keeps it only while
    the container stays down: a restart sets ExitCode back to 0 and OOMKilled to
    false, so for a restarted one it comes from Docker's events."""
    code, oom = o.exit_code, o.oom_killed
    if o.running:
        if o.restart_count == 0 or not engine.capabilities.watches_events:
            return None
        found = engine.last_exit(o.id, None)
        if found is None:
            return None
        code, oom = found
    return describe_exit(code, oom)


def _hung(o: Observed, state: dict[str, Any], now: float) -> str | None:
    beat = state.get("beat")
    if not o.running or not state.get("live") or not isinstance(beat, int | float):
        return None
    quiet = now - beat
    if quiet < float(os.environ.get("FLOWRUN_HUNG_AFTER", HUNG_AFTER)):
        return None
    in_call = state.get("in_call_since")
    where = (f"inside process() for {now - in_call:.0f} s" if isinstance(in_call, int | float)
             else "outside process()")
    return f"no progress for {quiet:.0f} s ({where})"


def _why_down(o: Observed, last_exit: str | None, hung: str | None,
              looping: bool) -> tuple[str | None, str | None]:
    source = o.labels.get(labels.SOURCE, "FLOW")
    if hung:
        return (f"hung: {hung}",
                f"find the blocking call with `flowrun logs {o.labels.get(labels.FLOW)} "
                f"{o.labels.get(labels.STEP)}`; `flowrun up --recreate {source}` restarts it")
    if o.running and not looping:
        return None, None
    if looping:
        return (f"crash-looping: {last_exit or 'exits again and again'}",
                "Docker restarts it with a growing delay; fix the component, then "
                "`flowrun up` (or keep `flowrun up --watch` running)")
    if o.status == "restarting":
        return last_exit, "Docker is restarting it (restart policy)"
    return (f"stopped: {last_exit or o.status}",
            f"`flowrun up {source}` starts it again (an attached `up` does it by itself)")


def _acked(queue: dict[str, Any]) -> int | None:
    """Messages a step acknowledged, as its input queue counts them (for steps whose
    sailor keeps no counters: the platform's Node.js sailor)."""
    stats = queue.get("message_stats") if queue else None
    return int(stats.get("ack", 0)) if isinstance(stats, dict) else None


def _error_tally(engine: ContainerEngine, broker: Broker | None, flow: str) -> dict[str, int]:
    """Errors per step, as the platform services counted them."""
    services = find_services(engine, broker) if broker is not None else None
    if services is None:
        return {}
    try:
        return dict(services.flow_state(flow).get("errors") or {})
    except ServiceError:
        return {}


def flow_queues(broker: Broker | None, flow: str) -> dict[str, dict[str, Any]]:
    """The flow's queues with their counters, by name; none when the broker is away."""
    if broker is None:
        return {}
    try:
        return broker.queues(flow)
    except ServiceError:
        return {}


def flow_status(engine: ContainerEngine, flow: str,
                queues: dict[str, dict[str, Any]] | None = None) -> FlowStatus:
    """`queues`: the flow's queues when the caller has read them already."""
    observed = flow_containers(engine, flow)
    broker = find_broker(engine)
    if queues is None:
        queues = flow_queues(broker, flow)

    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(lambda o: sailor_state(engine, o), observed))
    tallied = _error_tally(engine, broker, flow) if any(
        o.labels.get(labels.RUNTIME) == Runtime.NODE.value for o in observed) else {}
    current: dict[str, str | None] = {}
    now = datetime.now(UTC)
    looping = {o.name for o in observed if _crash_looping(o, now)}
    raw_record = engine.get_record(names.record_volume(flow)) or {}
    record = flow_record(engine, flow, raw_record) or []
    planned = {p.step: p.replicas for p in record}
    by_step: dict[str, list[StepStatus]] = {}
    for o, state in zip(observed, states, strict=True):
        step = o.labels.get(labels.STEP, o.name)
        queue = queues.get(names.input_queue(flow, step), {})
        last_exit = _last_exit(engine, o)
        hung = _hung(o, state, time.time())
        why, remedy = _why_down(o, last_exit, hung, o.name in looping)
        live = bool(state.get("live")) and o.running and not hung
        by_step.setdefault(step, []).append(StepStatus(
            step=step, kind=o.labels.get(labels.KIND, "?"),
            component=Path(o.labels.get(labels.COMPONENT, "?")).name,
            function=o.labels.get(labels.FUNCTION, "?"),
            revision=o.labels.get(labels.REVISION, "?"), state="hung" if hung else o.status,
            live=live,
            uptime=(now - o.started_at).total_seconds() if o.running and o.started_at else None,
            restarts=o.restart_count, last_exit=last_exit,
            waiting=queue.get("messages_ready") if queue else None,
            in_flight=queue.get("messages_unacknowledged") if queue else None,
            processed=state.get("processed"),
            errors=state.get("errors"),
            stale=_stale(o, current), leak=state.get("leak"),
            crash_looping=o.name in looping,
            last_lines=tuple(engine.logs(o.name, tail=LAST_LINES)) if o.name in looping else (),
            why=why, remedy=remedy, replicas_live=int(live), node=o.node or None,
            each=({"replica": labels.replica_of(o.labels), "container": o.name,
                   "state": "hung" if hung else o.status, "live": live,
                   "restarts": o.restart_count, "node": o.node or None},),
        ))
    source = (observed[0].labels.get(labels.SOURCE, "") if observed else
              raw_record.get(labels.SOURCE, ""))
    steps = []
    for step, parts in by_step.items():
        queue = queues.get(names.input_queue(flow, step), {})
        combined = _combine(parts, planned.get(step, len(parts)), source or flow)
        # Counters a sailor keeps add up over replicas; where none keeps them (the
        # platform's Node.js sailor), the step's input queue and the services count.
        if combined.processed is None:
            combined = replace(combined, processed=_acked(queue))
        if combined.errors is None:
            combined = replace(combined, errors=tallied.get(step))
        steps.append(combined)
    present = set(by_step)
    for index, entry in enumerate(record):
        if entry.step in present:
            continue
        queue = queues.get(names.input_queue(flow, entry.step), {})
        steps.insert(min(index, len(steps)), StepStatus(
            step=entry.step, kind=entry.kind, component="?", function="?", revision="?",
            state="missing", live=False, uptime=None, restarts=0, last_exit=None,
            waiting=queue.get("messages_ready") if queue else None,
            in_flight=queue.get("messages_unacknowledged") if queue else None,
            processed=None, errors=None, stale=None, leak=None,
            why="its container was removed (not by flowrun)" if entry.replicas == 1 else
                "its containers were removed (not by flowrun)",
            remedy=f"`flowrun up {source or flow}` recreates it (an attached `up` does it "
                   "by itself)",
            replicas=entry.replicas,
        ))
    errors_q = queues.get(names.error_queue(flow), {})
    dead_q = queues.get(names.dead_letter_queue(flow), {})
    webhook = None
    if raw_record.get(labels.WEBHOOK) == "1" and broker is not None:
        services = find_services(engine, broker)
        webhook = services.webhook_url(flow) if services is not None else None
    return FlowStatus(
        flow=flow, source=source, steps=steps,
        errors_queued=errors_q.get("messages") if errors_q else None,
        dead_letters=dead_q.get("messages") if dead_q else None, webhook=webhook,
    )


def _sum(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _combine(parts: list[StepStatus], replicas: int, source: str) -> StepStatus:
    """One row for a step from its replicas' rows: live when every planned replica is,
    its state the worst of theirs, counters added up."""
    first = parts[0]
    if replicas == 1 and len(parts) == 1:
        return replace(first, each=())
    live = sum(p.live for p in parts)
    worst = next((p for p in parts if not p.live), first)
    lost = replicas - len(parts)
    why, remedy = worst.why, worst.remedy
    if lost > 0 and why is None:
        why = (f"{lost} of its {replicas} replicas' containers were removed (not by "
               "flowrun)")
        remedy = (f"`flowrun up {source}` recreates them (an attached `up` does it by "
                  "itself)")
    ups = [p.uptime for p in parts if p.uptime is not None]
    return replace(
        worst if not worst.live else first,
        state=worst.state if lost <= 0 or not worst.live else "degraded",
        live=live >= replicas, uptime=min(ups) if ups else None,
        restarts=sum(p.restarts for p in parts),
        processed=_sum([p.processed for p in parts]), errors=_sum([p.errors for p in parts]),
        crash_looping=any(p.crash_looping for p in parts),
        stale=next((p.stale for p in parts if p.stale), None),
        leak=next((p.leak for p in parts if p.leak), None),
        why=why, remedy=remedy, replicas=replicas, replicas_live=live,
        node=",".join(dict.fromkeys(p.node for p in parts if p.node)) or None,
        each=tuple(e for p in parts for e in p.each),
    )
