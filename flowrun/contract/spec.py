"""What the host hands the platform services, typed, and checked on both sides.

`FlowSpec`: a flow as the services serve it (its steps' config and credentials,
which queues to drain, what to tick, how its trace queue is made). The host
builds it from its plan and sends `to_json()`; the services read it back with
`from_json`, which refuses anything else with the field it found wrong, so a
mistake on either side is a 400 naming the field, not a KeyError later.
`ServicesConfig`: the services' own config (the host's secret, how to reach the
broker), written to their private file at their first start.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class SpecError(ValueError):
    """A spec that does not have the contract's shape; the message names the field."""


def _field(data: Any, key: str, kind: type | tuple[type, ...], where: str,
           optional: bool = False) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object")
    value = data.get(key)
    if value is None and optional:
        return None
    if value is None or not isinstance(value, kind) or (
            isinstance(value, bool) and kind in (int, float, (int, float))):
        raise SpecError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, "
                        f"got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TraceSpec:
    """How the trace queue is made (the services make it again after a broker
    restart, which loses it): bound to the flow's trace exchange, and to the
    exchanges of the steps that send no trace batches (`tapped`, names.TAP_KEY)."""

    arguments: dict[str, Any]
    exchange: str
    tapped: list[str]

    @classmethod
    def from_json(cls, data: Any, where: str) -> TraceSpec:
        # A flow handed over before (`firehose_keys`) has none until its next `up`.
        tapped = _field(data, "tapped", list, where, optional=True) or []
        if not all(isinstance(t, str) for t in tapped):
            raise SpecError(f"{where}.tapped: expected a list of strings")
        return cls(arguments=_field(data, "arguments", dict, where),
                   exchange=_field(data, "exchange", str, where), tapped=tapped)


@dataclass(frozen=True)
class WebhookSpec:
    """A flow called over HTTP: where the gateway puts a request, whether (and how
    long) it waits for an answer, and which queues must be consumed for the flow to
    take requests at all."""

    trigger: str  # the first step's id
    input_queue: str  # its input: the gateway publishes each request here
    input_queues: list[str]  # every real step's input: all consumed = the flow is live
    reply_queue: str | None = None  # None: no step replies; a request is answered at once
    reply_timeout: float = 30.0

    @classmethod
    def from_json(cls, data: Any, where: str) -> WebhookSpec:
        queues = _field(data, "input_queues", list, where)
        if not all(isinstance(q, str) for q in queues):
            raise SpecError(f"{where}.input_queues: expected a list of str")
        timeout = float(_field(data, "reply_timeout", (int, float), where))
        if not 0 < timeout <= 3600:
            raise SpecError(f"{where}.reply_timeout: expected 0 < seconds <= 3600")
        return cls(trigger=_field(data, "trigger", str, where),
                   input_queue=_field(data, "input_queue", str, where),
                   input_queues=list(queues),
                   reply_queue=_field(data, "reply_queue", str, where, optional=True),
                   reply_timeout=timeout)


@dataclass(frozen=True)
class StepEntry:
    kind: str
    runtime: str
    config: dict[str, Any] = field(default_factory=dict)
    credentials: dict[str, Any] | None = None
    account: str | None = None  # the step's own account: the only one it may update
    tick_interval: float | None = None  # a ticked trigger: seconds between ticks ...
    input_queue: str | None = None  # ... published here
    passthrough: bool = False

    @classmethod
    def from_json(cls, data: Any, where: str) -> StepEntry:
        return cls(
            kind=_field(data, "kind", str, where),
            runtime=_field(data, "runtime", str, where),
            config=_field(data, "config", dict, where),
            credentials=_field(data, "credentials", dict, where, optional=True),
            account=_field(data, "account", str, where, optional=True),
            tick_interval=_field(data, "tick_interval", (int, float), where, optional=True),
            input_queue=_field(data, "input_queue", str, where, optional=True),
            passthrough=bool(_field(data, "passthrough", bool, where, optional=True)))


@dataclass(frozen=True)
class FlowSpec:
    vhost: str
    snapshot_queue: str
    error_tally_queue: str
    dead_letter_queue: str
    steps: dict[str, StepEntry]
    variables: dict[str, Any] = field(default_factory=dict)
    trace_queue: str | None = None  # None: the flow records no trace
    trace: TraceSpec | None = None
    webhook: WebhookSpec | None = None  # None: the flow is not called over HTTP

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> FlowSpec:
        where = "flow"
        steps = _field(data, "steps", dict, where)
        trace = _field(data, "trace", dict, where, optional=True)
        webhook = _field(data, "webhook", dict, where, optional=True)
        return cls(
            vhost=_field(data, "vhost", str, where),
            snapshot_queue=_field(data, "snapshot_queue", str, where),
            error_tally_queue=_field(data, "error_tally_queue", str, where),
            dead_letter_queue=_field(data, "dead_letter_queue", str, where),
            steps={str(k): StepEntry.from_json(v, f"steps.{k}") for k, v in steps.items()},
            variables=_field(data, "variables", dict, where, optional=True) or {},
            trace_queue=_field(data, "trace_queue", str, where, optional=True),
            trace=TraceSpec.from_json(trace, "trace") if trace is not None else None,
            webhook=WebhookSpec.from_json(webhook, "webhook") if webhook is not None else None)

    def account_of(self, step: str) -> str | None:
        entry = self.steps.get(step)
        return entry.account if entry is not None else None


@dataclass(frozen=True)
class AmqpAccess:
    """How the services reach the broker, as its admin."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_json(cls, data: Any) -> AmqpAccess:
        where = "amqp"
        return cls(host=_field(data, "host", str, where), port=_field(data, "port", int, where),
                   user=_field(data, "user", str, where),
                   password=_field(data, "password", str, where))


@dataclass(frozen=True)
class ServicesConfig:
    secret: str
    amqp: AmqpAccess

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ServicesConfig:
        return cls(secret=_field(data, "secret", str, "config"),
                   amqp=AmqpAccess.from_json(_field(data, "amqp", dict, "config")))
