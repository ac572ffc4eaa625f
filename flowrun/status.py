"""What runs, read from Docker labels, the sailors' state files and the broker's counters."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flowrun import labels
from flowrun.broker import find_broker
from flowrun.engine import Engine, Observed
from flowrun.images import base_image, dockerfile_path
from flowrun.revision import compute_revision
from flowrun.sailor import STATE_FILE


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


@dataclass(frozen=True)
class FlowStatus:
    flow: str
    source: str
    steps: list[StepStatus]
    errors_queued: int | None
    dead_letters: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def running_flows(engine: Engine) -> list[str]:
    observed = engine.observe({labels.ROLE: labels.ROLE_STEP})
    return sorted({o.labels[labels.FLOW] for o in observed if labels.FLOW in o.labels})


def flow_containers(engine: Engine, flow: str) -> list[Observed]:
    observed = engine.observe({labels.FLOW: flow, labels.ROLE: labels.ROLE_STEP})
    return sorted(observed, key=lambda o: int(o.labels.get(labels.INDEX, "0")))


def _stale(o: Observed, current: dict[str, str | None]) -> str | None:
    path = o.labels.get(labels.COMPONENT, "")
    if path not in current:
        try:
            current[path] = compute_revision(Path(path), dockerfile_path(), base_image())
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
CRASH_LOOP_RESTARTS = 3
HEALTHY_AFTER = 10.0  # seconds: Docker resets its restart backoff after this long up


def _crash_looping(o: Observed, now: datetime) -> bool:
    """Restarted several times and not up long enough since to count as healthy."""
    if o.restart_count < CRASH_LOOP_RESTARTS:
        return False
    if o.status != "running" or o.started_at is None:
        return True
    return (now - o.started_at).total_seconds() < HEALTHY_AFTER


def flow_status(engine: Engine, flow: str) -> FlowStatus:
    observed = flow_containers(engine, flow)
    broker = find_broker(engine)
    queues: dict[str, dict[str, Any]] = {}
    if broker is not None:
        try:
            queues = broker.queues(flow)
        except OSError:
            queues = {}

    def state_of(o: Observed) -> dict[str, Any]:
        if not o.running:
            return {}
        raw = engine.read_file(o.name, STATE_FILE)
        try:
            return dict(json.loads(raw)) if raw else {}
        except ValueError:
            return {}

    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(state_of, observed))
    current: dict[str, str | None] = {}
    now = datetime.now(UTC)
    looping = {o.name for o in observed if _crash_looping(o, now)}
    steps = []
    for o, state in zip(observed, states, strict=True):
        step = o.labels.get(labels.STEP, o.name)
        queue = queues.get(f"{flow}:{step}:messages", {})
        last_exit = None
        # Docker keeps the exit code of the last run only until the next start ends it.
        if not o.running or o.exit_code or o.oom_killed:
            last_exit = f"exit code {o.exit_code}" + (" (out of memory)" if o.oom_killed else "")
        steps.append(StepStatus(
            step=step, kind=o.labels.get(labels.KIND, "?"),
            component=Path(o.labels.get(labels.COMPONENT, "?")).name,
            function=o.labels.get(labels.FUNCTION, "?"),
            revision=o.labels.get(labels.REVISION, "?"), state=o.status,
            live=bool(state.get("live")) and o.running,
            uptime=(now - o.started_at).total_seconds() if o.running and o.started_at else None,
            restarts=o.restart_count, last_exit=last_exit,
            waiting=queue.get("messages_ready") if queue else None,
            in_flight=queue.get("messages_unacknowledged") if queue else None,
            processed=state.get("processed"), errors=state.get("errors"),
            stale=_stale(o, current), leak=state.get("leak"),
            crash_looping=o.name in looping,
            last_lines=tuple(engine.logs(o.name, tail=LAST_LINES)) if o.name in looping else (),
        ))
    source = observed[0].labels.get(labels.SOURCE, "") if observed else ""
    errors_q = queues.get(f"{flow}:errors", {})
    dead_q = queues.get(f"{flow}:dead", {})
    return FlowStatus(
        flow=flow, source=source, steps=steps,
        errors_queued=errors_q.get("messages") if errors_q else None,
        dead_letters=dead_q.get("messages") if dead_q else None,
    )
