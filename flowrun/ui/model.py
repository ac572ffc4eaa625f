"""What the page shows, gathered from Docker, the broker and the platform services.

Plain data (dicts), so the server only serialises it and a test can read it.
"""

from __future__ import annotations

from typing import Any

from flowrun.broker.platform import Services, find_services
from flowrun.broker.server import Broker, find_broker
from flowrun.commands.status import StepStatus, flow_queues, flow_status, running_flows
from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.logline import readable
from flowrun.core.masking import mask
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import ServiceError

LOG_LINES = 60
STEP_MESSAGES = 20


def _rate(queue: dict[str, Any] | None, what: str) -> float:
    stats = (queue or {}).get("message_stats") or {}
    return round(float((stats.get(f"{what}_details") or {}).get("rate") or 0.0), 2)


def _step(s: StepStatus, queues: dict[str, dict[str, Any]], flow: str,
          next_queue: str) -> dict[str, Any]:
    own = queues.get(names.input_queue(flow, s.step))
    return {
        "id": s.step, "kind": s.kind, "component": s.component, "function": s.function,
        "state": s.state, "live": s.live, "restarts": s.restarts, "waiting": s.waiting,
        "in_flight": s.in_flight, "processed": s.processed, "errors": s.errors,
        # In: what the step took off its queue; out: what it put on the next one's.
        "in_rate": _rate(own, "ack"), "out_rate": _rate(queues.get(next_queue), "publish"),
        "why": s.why, "remedy": s.remedy,
    }


def flows_snapshot(engine: ContainerEngine) -> dict[str, Any]:
    broker = find_broker(engine)
    flows = []
    for flow in running_flows(engine):
        queues = flow_queues(broker, flow)  # read once: for the status and for the rates
        status = flow_status(engine, flow, queues)
        ids = [s.step for s in status.steps]
        nexts = [names.input_queue(flow, n) for n in ids[1:]] + [names.output_queue(flow)]
        steps = [_step(s, queues, flow, nq) for s, nq in zip(status.steps, nexts, strict=True)]
        flows.append({
            "flow": flow, "source": status.source, "steps": steps,
            "edges": [[a, b] for a, b in zip(ids, ids[1:], strict=False)],
            "errors_queued": status.errors_queued, "dead_letters": status.dead_letters,
        })
    return {"flows": flows}


def _services(engine: ContainerEngine) -> tuple[Broker | None, Services | None]:
    broker = find_broker(engine)
    return broker, (find_services(engine, broker) if broker is not None else None)


def step_detail(engine: ContainerEngine, flow: str, step: str) -> dict[str, Any]:
    """A step's latest messages (as the trace recorded them) and log lines."""
    _broker, services = _services(engine)
    messages: list[dict[str, Any]] = []
    if services is not None:
        try:
            threads = services.trace(flow, 200).get("threads") or []
        except ServiceError:
            threads = []
        records = [r for t in threads for r in t["records"] if r.get("step") == step]
        # Masked as `flowrun trace` masks them: the page is a terminal too.
        messages = [mask(r) for r in sorted(records, key=lambda r: r.get("seq", 0))[
            -STEP_MESSAGES:]]
    observed = engine.find(names.container(flow, step))
    lines = ([readable(line) for line in engine.logs(observed.name, tail=LOG_LINES)]
             if observed is not None and observed.labels.get(labels.FLOW) == flow else [])
    return {"flow": flow, "step": step, "messages": messages, "logs": lines}


def threads(engine: ContainerEngine, flow: str, limit: int = 20) -> dict[str, Any]:
    """Recent threads, each with the steps it went through (to follow on the graph)."""
    _broker, services = _services(engine)
    if services is None:
        return {"flow": flow, "threads": []}
    try:
        found = services.trace(flow, limit).get("threads") or []
    except ServiceError:
        found = []
    return {"flow": flow, "threads": [{
        "threadId": t["threadId"], "records": len(t["records"]),
        "steps": list(dict.fromkeys(str(r.get("step")) for r in t["records"])),
        "errors": sum(1 for r in t["records"] if r.get("kind") == "error"),
        "at": max(r.get("at", 0) for r in t["records"]),
    } for t in reversed(found)]}
