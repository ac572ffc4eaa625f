"""Expansion: the visible steps of a flow file become the real steps that run.

Every visible step is a real step, and between each consecutive pair a mapper
step is injected (3 visible steps -> 5 real steps). `expand` is pure: it takes
the loaded flow, its components and their revisions, and returns the Plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import jsonata

from flowrun.contract import STEP_FILE, names
from flowrun.core.component import Component, FunctionType, Runtime, load_component
from flowrun.core.flowfile import LoadedFlow, StepSpec
from flowrun.core.masking import mask
from flowrun.errors import ComponentError, FlowFileError
from flowrun.settings import MAPPER_COMPONENT_DIR

DEFAULT_MEMORY = "256m"
DEFAULT_TRIGGER_INTERVAL = 1.0
# A rebound waits this long before it comes back (the platform's 15 s is long for a
# laptop). Node.js sailors double it on each further rebound, but the rebound queue's
# own TTL (broker.server.REBOUND_DELAY_MS, the same 1 s) caps every wait.
REBOUND_INITIAL_MS = 1000
# The platform's sailor's data outputs per 100 ms (its DATA_RATE_LIMIT; the platform
# has 10): high enough that a step's own pace is what limits it.
NODE_DATA_RATE_LIMIT = 1000
MASKED_COMPONENT = "***"  # a component whose path comes from ${VAR}


class StepKind(StrEnum):
    TRIGGER = "trigger"
    ACTION = "action"
    MAPPER = "mapper"


@dataclass(frozen=True)
class Routes:
    """Where a step reads and writes, in the hosted platform's sailor terms."""

    exchange: str  # the step's own: it publishes nowhere else
    input_queue: str | None  # None for the trigger: it has no input
    listens_to: str | None  # the previous step's data routing key
    listens_on: str | None  # ... on the previous step's exchange
    data: str
    error: str
    snapshot: str
    rebound: str
    rebound_queue: str | None  # holds a rebound message a while, then back to the input


@dataclass(frozen=True)
class RealStep:
    id: str
    kind: StepKind
    component: Component
    function: str
    config: Mapping[str, Any]
    routes: Routes
    memory: str
    interval: float | None
    revision: str
    visible_index: int | None = None  # index in the flow file; None for a mapper
    # The config as it may be printed: secret-looking keys and ${VAR} values masked.
    shown_config: Mapping[str, Any] = field(default_factory=dict)
    credentials: Mapping[str, Any] | None = None
    # Containers consuming the step's input queue as competing consumers. Not in
    # config_hash: scaling a step starts or stops replicas, it replaces none.
    replicas: int = 1
    # The component's path came from ${VAR}: printed as MASKED_COMPONENT, never as is.
    component_from_env: bool = False

    @property
    def image(self) -> str:
        if self.component_from_env:  # named by a digest of its path, not by the path
            digest = hashlib.sha256(str(self.component.path).encode()).hexdigest()[:8]
            return names.image(f"component-{digest}", self.revision)
        return names.image(self.component.name, self.revision)

    @property
    def runtime(self) -> Runtime:
        return self.component.runtime

    @property
    def webhook(self) -> bool:
        """A trigger called once per HTTP request to the flow (the gateway puts each
        into its input queue), never on a timer."""
        return self.kind is StepKind.TRIGGER and self.component.is_webhook

    @property
    def ticked(self) -> bool:
        """A Node.js trigger: the platform's sailor calls process() once per message
        on its input queue, so the platform services publish one per interval."""
        return self.kind is StepKind.TRIGGER and self.runtime is Runtime.NODE and not self.webhook

    def env(self, flow: str) -> dict[str, str]:
        """The container's environment: names and routes only. The config and the
        broker URI (secrets) reach the step in STEP_FILE, readable by its user alone."""
        r = self.routes
        env = {
            "ELASTICIO_FLOW_ID": flow,
            "ELASTICIO_STEP_ID": self.id,
            "ELASTICIO_FUNCTION": self.function,
            "ELASTICIO_PUBLISH_MESSAGES_TO": r.exchange,
            "ELASTICIO_DATA_ROUTING_KEY": r.data,
            "ELASTICIO_ERROR_ROUTING_KEY": r.error,
            "ELASTICIO_SNAPSHOT_ROUTING_KEY": r.snapshot,
            "ELASTICIO_REBOUND_ROUTING_KEY": r.rebound,
            "FLOWRUN_KIND": self.kind.value,
            "FLOWRUN_STEP_FILE": STEP_FILE,
        }
        if r.input_queue:
            env["ELASTICIO_LISTEN_MESSAGES_ON"] = r.input_queue
        if self.interval is not None:
            env["FLOWRUN_TRIGGER_INTERVAL"] = str(self.interval)
        if self.runtime is Runtime.NODE:
            # What the platform's sailor requires besides the secrets (settings.js:
            # an empty value counts as missing); ids it only logs are the step's own.
            env.update({
                "ELASTICIO_EXEC_ID": flow,
                "ELASTICIO_CONTAINER_ID": names.container(flow, self.id),
                "ELASTICIO_WORKSPACE_ID": flow,
                "ELASTICIO_USER_ID": flow,
                "ELASTICIO_COMP_ID": self.component.name,
                "ELASTICIO_FLOW_TYPE": "long_running",
                "ELASTICIO_AMQP_PERSISTENT_MESSAGES": "true",
                "ELASTICIO_REBOUND_INITIAL_EXPIRATION": str(REBOUND_INITIAL_MS),
                "ELASTICIO_RABBITMQ_PREFETCH_SAILOR": "10",
                # The sailor throttles a step's data outputs to DATA_RATE_LIMIT per
                # RATE_INTERVAL (10 per 100 ms: the hosted platform's guard on its
                # shared broker). At 100 msg/s a step sat exactly at that limit, and any
                # burst queued behind it (2 hops at 3.5x a bare round trip, p99 over
                # 100 ms): here the step's own pace is the limit. Errors and snapshots
                # keep the platform's limits.
                "ELASTICIO_DATA_RATE_LIMIT": str(NODE_DATA_RATE_LIMIT),
                "LOG_LEVEL": "info",
            })
            if self.kind is StepKind.TRIGGER:
                # As the platform does for a flow's first step: its start-up hook runs
                # (its data kept by the platform services), and at `down` its
                # shutdown hook runs once, with that data.
                env["ELASTICIO_STARTUP_REQUIRED"] = "1"
        return env

    def config_hash(self, flow: str) -> str:
        """Covers what changes the container apart from its image (compose's idea)."""
        material = {"env": self.env(flow), "memory": self.memory, "config": self.config,
                    "credentials": self.credentials}
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        shown = MASKED_COMPONENT if self.component_from_env else self.component.name
        return f"{shown}:{self.function}"

    @property
    def shown_component(self) -> str:
        return MASKED_COMPONENT if self.component_from_env else str(self.component.path)


@dataclass(frozen=True)
class Plan:
    flow: str
    source: Path
    steps: tuple[RealStep, ...]
    error_queue: str
    dead_letter_queue: str
    components: tuple[Component, ...] = field(default=())
    variables: Mapping[str, Any] = field(default_factory=dict)
    trace: bool = True
    passthrough: bool = False
    reply_timeout: float = 30.0

    @property
    def webhook(self) -> bool:
        """Called over HTTP: its trigger takes requests from the gateway."""
        return self.steps[0].webhook

    @property
    def replies(self) -> bool:
        """A step answers the request (the platform's `request-reply` service), so the
        gateway waits for that answer rather than answering at once."""
        return self.webhook and any(s.component.replies for s in self.steps)

    @property
    def snapshot_queue(self) -> str:
        return names.snapshot_queue(self.flow)

    @property
    def tapped_exchanges(self) -> list[str]:
        """With the trace on, the step exchanges the trace queue is bound to: those
        of the steps whose publisher sends no trace batches (contract/traced.py),
        the platform's Node.js sailor, left as the platform has it."""
        if not self.trace:
            return []
        return [names.step_exchange(self.flow, s.id) for s in self.steps
                if s.runtime is Runtime.NODE]

    def step(self, step_id: str) -> RealStep | None:
        return next((s for s in self.steps if s.id == step_id), None)

    def lines(self) -> list[str]:
        """One stable line per real step, for `flowrun plan` and golden tests."""
        out = []
        for i, s in enumerate(self.steps, 1):
            listens = s.routes.input_queue or "-"
            out.append(
                f"{i:>2} {s.id:<28} {s.kind.value:<7} {s.runtime.value:<6} "
                f"{s.describe():<28} in={listens} out={s.routes.data}"
                + (f" replicas={s.replicas}" if s.replicas > 1 else "")
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "source": str(self.source),
            "error_queue": self.error_queue,
            "dead_letter_queue": self.dead_letter_queue,
            "steps": [
                {
                    "id": s.id,
                    "kind": s.kind.value,
                    "runtime": s.runtime.value,
                    "component": s.shown_component,
                    "function": s.function,
                    "revision": s.revision,
                    "image": s.image,
                    "config": s.shown_config,
                    "credentials": ({k: "***" for k in s.credentials}
                                    if s.credentials is not None else None),
                    "input_queue": s.routes.input_queue,
                    "listens_to": s.routes.listens_to,
                    "data_routing_key": s.routes.data,
                    "memory": s.memory,
                    "replicas": s.replicas,
                    "config_hash": s.config_hash(self.flow),
                    "env": s.env(self.flow),
                }
                for s in self.steps
            ],
        }


def routes_for(flow: str, step_id: str, previous: str | None, fed: bool = False) -> Routes:
    """`fed`: a trigger whose process() runs once per message on an input queue of
    its own, bound to nothing: the platform services put ticks (a Node.js trigger) or
    HTTP requests (a webhook trigger) there."""
    return Routes(
        exchange=names.step_exchange(flow, step_id),
        input_queue=names.input_queue(flow, step_id) if previous or fed else None,
        listens_to=names.data_key(flow, previous) if previous else None,
        listens_on=names.step_exchange(flow, previous) if previous else None,
        data=names.data_key(flow, step_id),
        error=names.error_key(flow, step_id),
        snapshot=names.snapshot_key(flow, step_id),
        rebound=names.rebound_key(flow, step_id),
        rebound_queue=names.rebound_queue(flow, step_id) if previous else None,
    )


def check_mapping(mapping: dict[str, str] | str, where: str,
                  from_env: Collection[tuple[str | int, ...]] = ()) -> None:
    expressions = {"": mapping} if isinstance(mapping, str) else mapping
    for field_name, expression in expressions.items():
        try:
            jsonata.Jsonata(expression)
        except Exception as e:  # jsonata raises its own JException (a RuntimeError)
            target = f"map.{field_name}" if field_name else "map"
            if (() if not field_name else (field_name,)) in from_env:
                # Neither the expression nor jsonata's message (which quotes it) is shown.
                raise FlowFileError(
                    f"{where}: {target}: invalid JSONata (its value comes from ${{...}} and "
                    "is not shown); fix the variable's value"
                ) from None
            raise FlowFileError(
                f"{where}: {target}: invalid JSONata {expression!r} ({e}); fix the expression"
            ) from None


def load_components(flow: LoadedFlow) -> dict[int, Component]:
    """The component of each visible step (by index), checked against its function."""
    components: dict[int, Component] = {}
    cache: dict[Path, Component] = {}
    for i, step in enumerate(flow.spec.steps):
        where = f"{flow.step_where(i, 'component')}: step '{step.id}'"
        directory = (flow.directory / step.component).resolve()
        if directory not in cache:
            try:
                cache[directory] = load_component(directory, where)
            except ComponentError:
                if ("steps", i, "component") not in flow.interpolated:
                    raise
                # Its message would show the path, which came from a variable.
                raise ComponentError(
                    f"{where}: component: the directory from ${{...}} (not shown) is not a "
                    "component with a valid component.json; check the variable's value"
                ) from None
        components[i] = cache[directory]
    return components


def check_flow(flow: LoadedFlow, components: Mapping[int, Component]) -> None:
    """Everything about the flow that needs its components: ids, functions, maps."""
    steps = flow.spec.steps
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.id in seen:
            raise FlowFileError(
                f"{flow.step_where(i, 'id')}: step id '{step.id}' is used twice "
                f"(also step {seen[step.id] + 1}); give each step its own id"
            )
        seen[step.id] = i
    # Injected mapper ids (mapper.<before>.<after>) contain '.', which the id pattern
    # keeps out of visible ids: real step ids are unique once visible ones are.
    for i, step in enumerate(steps):
        _check_function(flow, i, step, components[i])
        if step.map is not None:
            if i == 0:
                raise FlowFileError(
                    f"{flow.step_where(i, 'map')}: step '{step.id}': the first step cannot have "
                    "'map' (nothing comes before it); remove it"
                )
            check_mapping(step.map, f"{flow.step_where(i, 'map')}: step '{step.id}'",
                          flow.from_env("steps", i, "map"))
        if step.replicas > 1 and i == 0:
            raise FlowFileError(
                f"{flow.step_where(i, 'replicas')}: step '{step.id}': a trigger runs as one "
                f"container (two would each produce the flow's messages); remove 'replicas' "
                "or set it to 1"
            )
        if step.interval is not None and i == 0 and components[i].is_webhook:
            raise FlowFileError(
                f"{flow.step_where(i, 'interval')}: step '{step.id}': a webhook trigger is "
                "called once per HTTP request, never on a timer; remove 'interval'"
            )
        if step.interval is not None and i != 0:
            raise FlowFileError(
                f"{flow.step_where(i, 'interval')}: step '{step.id}': 'interval' is for the "
                "trigger (first step) only; remove it"
            )


def _check_function(flow: LoadedFlow, i: int, step: StepSpec, component: Component) -> None:
    where = f"{flow.step_where(i, 'function')}: step '{step.id}'"
    kind = component.function_type(step.function)
    if kind is None:
        names = ", ".join(component.function_names())
        shown = ("the component from ${...}" if ("steps", i, "component") in flow.interpolated
                 else f"{component.path}/component.json")
        raise FlowFileError(
            f"{where}: function '{step.function}' is not in {shown}; "
            f"use one of: {names}"
        )
    if i == 0 and kind is not FunctionType.TRIGGER:
        raise FlowFileError(
            f"{where}: the first step must run a trigger, but '{step.function}' is an action; "
            "start the flow with a trigger"
        )
    if i > 0 and kind is FunctionType.TRIGGER:
        raise FlowFileError(
            f"{where}: '{step.function}' is a trigger, but only the first step runs a trigger; "
            "use an action here"
        )


def expand(flow: LoadedFlow, components: Mapping[int, Component], mapper: Component,
           revisions: Mapping[Path, str]) -> Plan:
    """Pure: the real steps of a checked flow, in order."""
    name = flow.spec.name
    default_memory = flow.spec.memory or DEFAULT_MEMORY
    real: list[RealStep] = []
    previous: str | None = None
    for i, step in enumerate(flow.spec.steps):
        if previous is not None:
            mid = names.mapper_id(previous, step.id)
            mapper_config = {"mapping": step.map} if step.map is not None else {}
            real.append(RealStep(
                id=mid, kind=StepKind.MAPPER, component=mapper, function="map",
                config=mapper_config,
                routes=routes_for(name, mid, previous), memory=default_memory,
                interval=None, revision=revisions[mapper.path], replicas=step.replicas,
                shown_config=mask(mapper_config, {("mapping", *p)
                                                  for p in flow.from_env("steps", i, "map")}),
            ))
            previous = mid
        component = components[i]
        is_trigger = i == 0
        webhook = is_trigger and component.is_webhook
        real.append(RealStep(
            id=step.id,
            kind=StepKind.TRIGGER if is_trigger else StepKind.ACTION,
            component=component, function=step.function, config=dict(step.config),
            routes=routes_for(name, step.id, previous, fed=is_trigger and (
                webhook or component.runtime is Runtime.NODE)),
            credentials=dict(step.credentials) if step.credentials is not None else None,
            memory=step.memory or default_memory,
            interval=((step.interval or DEFAULT_TRIGGER_INTERVAL)
                      if is_trigger and not webhook else None),
            revision=revisions[component.path], visible_index=i, replicas=step.replicas,
            shown_config=mask(dict(step.config), flow.from_env("steps", i, "config")),
            component_from_env=("steps", i, "component") in flow.interpolated,
        ))
        previous = step.id
    unique = tuple({s.component.path: s.component for s in real}.values())
    return Plan(
        flow=name, source=flow.path, steps=tuple(real),
        error_queue=names.error_queue(name), dead_letter_queue=names.dead_letter_queue(name),
        components=unique, variables=dict(flow.spec.variables), trace=flow.spec.trace,
        passthrough=flow.spec.passthrough, reply_timeout=flow.spec.reply_timeout,
    )


def load_mapper() -> Component:
    return load_component(MAPPER_COMPONENT_DIR, "flowrun's built-in mapper")
