"""Which flow and which step a command means: a flow file, a flow's name, or the
only flow running; a step the flow has. A name nothing on this host has is bad
input (exit 2), not an empty answer."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from flowrun.broker.server import Broker, find_broker
from flowrun.commands.status import flow_record, known_steps, running_flows
from flowrun.core.flowfile import NAME_PATTERN, load_flow
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import BadInput, FlowFailed
from flowrun.waiting import wait_for


def connect_engine(environ: Mapping[str, str] = os.environ) -> ContainerEngine:
    """The engine DOCKER_HOST names; on a swarm manager FLOWRUN_REGISTRY names the
    registry its nodes pull flowrun's images from."""
    from flowrun.engine.swarm import connect_engine as connect

    return connect(environ.get("FLOWRUN_REGISTRY") or None)


def resolve_flow(engine: ContainerEngine, flow: str | None, must_run: bool = True,
                 queues_count: bool = False) -> str:
    """A flow name from a name, a flow file, or the only running flow. `queues_count`:
    a flow whose queues are still on the broker counts as known (`down --purge`)."""
    if flow and Path(flow).is_file():
        name = load_flow(flow, os.environ).spec.name
        if must_run and name not in running_flows(engine):
            raise BadInput(f"flow {name} ({flow}) is not running; start it with "
                           f"`flowrun up {flow}`")
        return name
    running = running_flows(engine)
    if flow:
        if not re.match(NAME_PATTERN, flow):
            raise BadInput(f"{flow!r} is neither a flow file nor a flow name")
        if flow not in running and not (queues_count and _has_queues(engine, flow)):
            shown = ", ".join(running) if running else "none"
            raise BadInput(f"no flow named {flow} on this host (running: {shown}); "
                           "check the name, or give the flow file")
        return flow
    if len(running) == 1:
        return running[0]
    if not running:
        raise BadInput("no flow is running; start one with `flowrun up FLOW`")
    raise BadInput(f"several flows run ({', '.join(running)}); name one")


def flow_and_step(engine: ContainerEngine, args: tuple[str, ...]) -> tuple[str, str | None]:
    """`[FLOW] [STEP]`: one word is a flow when it is a flow file or a running flow's
    name, and otherwise a step of the only running flow."""
    flow_arg, step = (args + (None, None))[:2]
    if len(args) == 1 and not Path(args[0]).is_file() and args[0] not in running_flows(engine):
        flow_arg, step = None, args[0]
    return resolve_flow(engine, flow_arg), step


def _has_queues(engine: ContainerEngine, flow: str) -> bool:
    broker = find_broker(engine)
    return broker is not None and broker.has_flow(flow)


def check_step(engine: ContainerEngine, flow: str, step: str, option: str) -> None:
    steps = known_steps(engine, flow)
    if step not in steps:
        raise BadInput(f"{option}: flow {flow} has no step '{step}'; its steps: "
                       f"{', '.join(steps)}")


def trigger_of(engine: ContainerEngine, flow: str) -> str:
    for planned in flow_record(engine, flow) or []:
        if planned.kind == "trigger":
            return planned.step
    raise BadInput(f"flow {flow} is not running; start it with `flowrun up`")


def running_broker(engine: ContainerEngine, timeout: float = 30.0) -> Broker:
    """The running broker, once it accepts connections (it may be restarting)."""
    def look() -> Broker | None:
        broker = find_broker(engine)
        return broker if broker is not None and broker.ready() else None

    return wait_for(look, timeout, "the broker", on_timeout=lambda: FlowFailed(
        "the broker is not running; start a flow with `flowrun up FLOW`"
        if find_broker(engine) is None else
        f"the broker did not accept connections within {timeout:g} s"))
