"""The platform services' container, from the host's side (the program itself is
`flowrun/services/`, which runs inside it).

One per host, beside the broker: started by the first `up`, kept across flows
and across `up`s, so Node.js triggers keep ticking and sailors keep getting
their step info after `up -d` has returned. It runs from the built-in mapper's
image (which has flowrun's in-container code and its dependencies), on the
broker's network (published on loopback for the host) and on each flow's
networks, where steps reach it as `platform`.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from flowrun.broker.http import JsonClient
from flowrun.broker.server import (
    ADMIN_USER,
    BROKER_NAME,
    Broker,
    trace_queue_arguments,
)
from flowrun.contract import (
    GATEWAY_PORT,
    SERVICES_CONFIG_FILE,
    SERVICES_DATA_DIR,
    SERVICES_PORT,
    names,
    wire,
)
from flowrun.contract.spec import (
    AmqpAccess,
    FlowSpec,
    ServicesConfig,
    StepEntry,
    TraceSpec,
    WebhookSpec,
)
from flowrun.contract.wire import admin_token, api_key
from flowrun.core import labels
from flowrun.core.plan import Plan
from flowrun.engine.protocol import ContainerEngine
from flowrun.engine.spec import ContainerSpec
from flowrun.errors import FlowFailed
from flowrun.settings import gateway_port
from flowrun.waiting import wait_for

IMAGE_LABEL = f"{labels.PREFIX}.services-image"
GATEWAY_LABEL = f"{labels.PREFIX}.gateway-port"  # the port asked for (0: any)


def api_uri() -> str:
    """How a step reaches the services, on its flow's networks."""
    return f"http://{names.SERVICES_ALIAS}:{SERVICES_PORT}"


def step_api_key(broker: Broker, flow: str, step: str) -> str:
    return api_key(broker.admin_pass, flow, step)


def message_keys(broker: Broker, flow: str) -> wire.Keys:
    """The flow's message password and IV, derived from the host's secret."""
    return wire.Keys.for_flow(broker.admin_pass, flow)


@dataclass(frozen=True)
class Services:
    port: int
    token: str
    host: str = "127.0.0.1"
    gateway_port: int | None = None  # where flows are called over HTTP, on loopback

    def webhook_url(self, flow: str) -> str | None:
        if self.gateway_port is None:
            return None
        return f"http://{self.host}:{self.gateway_port}/hook/{urllib.parse.quote(flow)}"

    @property
    def client(self) -> JsonClient:
        return JsonClient(f"http://{self.host}:{self.port}", f"Bearer {self.token}",
                          "the platform services")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        return self.client.call(method, path, body, timeout=timeout)

    def ready(self) -> bool:
        return self.client.answers("/healthz")

    def put_flow(self, plan: Plan) -> None:
        self.call("PUT", f"/admin/flows/{urllib.parse.quote(plan.flow, safe='')}",
                  flow_spec(plan).to_json())

    def forget_flow(self, flow: str, purge: bool) -> None:
        """`down`: its steps stop being served and ticked; `--purge` drops its snapshots,
        hook data and updated keys too."""
        self.call("DELETE", f"/admin/flows/{urllib.parse.quote(flow, safe='')}"
                            f"?purge={1 if purge else 0}")

    def trace(self, flow: str, limit: int, thread: str | None = None) -> dict[str, Any]:
        query = urllib.parse.urlencode({"limit": limit, **({"thread": thread} if thread else {})})
        return dict(self.call("GET", f"/admin/flows/{urllib.parse.quote(flow, safe='')}"
                                     f"/trace?{query}") or {})

    def flow_state(self, flow: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/admin/flows/{urllib.parse.quote(flow, safe='')}") or {})


def flow_spec(plan: Plan) -> FlowSpec:
    """What the services need to answer for a flow's steps (secrets included: it
    travels over loopback to a container that keeps it on its own volume)."""
    steps: dict[str, StepEntry] = {}
    for s in plan.steps:
        ticked = s.ticked and s.routes.input_queue is not None
        steps[s.id] = StepEntry(
            kind=s.kind.value, runtime=s.runtime.value, config=dict(s.config),
            credentials=dict(s.credentials) if s.credentials is not None else None,
            account=names.account_id(plan.flow, s.id) if s.credentials is not None else None,
            tick_interval=s.interval if ticked else None,
            input_queue=s.routes.input_queue if ticked else None,
            passthrough=plan.passthrough)
    webhook = None
    trigger = plan.steps[0]
    if plan.webhook and trigger.routes.input_queue is not None:
        webhook = WebhookSpec(
            trigger=trigger.id, input_queue=trigger.routes.input_queue,
            input_queues=[s.routes.input_queue for s in plan.steps
                          if s.routes.input_queue is not None],
            reply_queue=names.reply_queue(plan.flow) if plan.replies else None,
            reply_timeout=plan.reply_timeout)
    return FlowSpec(
        vhost=names.vhost(plan.flow), snapshot_queue=plan.snapshot_queue,
        error_tally_queue=names.error_tally_queue(plan.flow),
        dead_letter_queue=plan.dead_letter_queue, steps=steps,
        variables=dict(plan.variables),
        trace_queue=names.trace_queue(plan.flow) if plan.trace else None,
        # How the trace queue is made, for the services to make it again after a
        # broker restart (which loses it: it is not durable).
        trace=TraceSpec(arguments=trace_queue_arguments(),
                        exchange=names.trace_exchange(plan.flow),
                        tapped=plan.tapped_exchanges) if plan.trace else None,
        webhook=webhook)


def _from_container(engine: ContainerEngine, secret: str) -> Services | None:
    observed = engine.find(names.SERVICES_CONTAINER)
    if observed is None or not observed.running:
        return None
    port = observed.ports.get(f"{SERVICES_PORT}/tcp")
    return Services(port=port, token=admin_token(secret), host=observed.host,
                    gateway_port=observed.ports.get(f"{GATEWAY_PORT}/tcp")) if port else None


def find_services(engine: ContainerEngine, broker: Broker) -> Services | None:
    return _from_container(engine, broker.admin_pass)


def ensure_services(engine: ContainerEngine, broker: Broker, image: str,
                    timeout: float = 30) -> tuple[Services, bool]:
    """The host's platform services, started (or started anew on a new image) when
    needed; returns (services, started_now)."""
    observed = engine.find(names.SERVICES_CONTAINER)
    gateway = gateway_port()
    if observed is not None and (not observed.running
                                 or observed.labels.get(IMAGE_LABEL) != image
                                 or observed.labels.get(GATEWAY_LABEL) != str(gateway)):
        engine.stop(names.SERVICES_CONTAINER, 5)
        engine.remove(names.SERVICES_CONTAINER)
        observed = None
    started = False
    if observed is None:
        config = json.dumps(ServicesConfig(secret=broker.admin_pass, amqp=AmqpAccess(
            # On a swarm, any node of the broker's cluster.
            host=(names.BROKER_ALIAS if engine.capabilities.broker_cluster else BROKER_NAME),
            port=5672,
            user=ADMIN_USER,
            password=broker.admin_pass)).to_json()).encode()
        engine.run(ContainerSpec(
            name=names.SERVICES_CONTAINER, image=image, hostname=names.SERVICES_CONTAINER,
            env={"PYTHONUNBUFFERED": "1"},
            labels={labels.ROLE: labels.ROLE_SERVICES, IMAGE_LABEL: image,
                    GATEWAY_LABEL: str(gateway)},
            command=["python3", "-m", "flowrun.services"],
            # Root inside its own container: it owns the volume its state lives on.
            user="0:0",
            network=names.BROKER_NETWORK, aliases=(names.SERVICES_ALIAS,), memory="256m",
            ports={f"{SERVICES_PORT}/tcp": ("127.0.0.1", None),
                   f"{GATEWAY_PORT}/tcp": ("127.0.0.1", gateway or None)},
            volumes={names.SERVICES_DATA_VOLUME: SERVICES_DATA_DIR},
            files={SERVICES_CONFIG_FILE: (config, 0o400)},
            pids_limit=256,
        ))
        started = True
    def look() -> Services | None:
        services = _from_container(engine, broker.admin_pass)
        return services if services is not None and services.ready() else None

    return wait_for(look, timeout, "the platform services", every=0.05, on_timeout=lambda: (
        FlowFailed(f"the platform services ({names.SERVICES_CONTAINER}) did not answer "
                   f"within {timeout:.0f} s; see `docker logs {names.SERVICES_CONTAINER}`"))
    ), started


def forget_services(engine: ContainerEngine) -> None:
    """`down --all --purge`: the services' container and state go too."""
    if engine.find(names.SERVICES_CONTAINER) is not None:
        engine.stop(names.SERVICES_CONTAINER, 5)
        engine.remove(names.SERVICES_CONTAINER)
    engine.remove_volume(names.SERVICES_DATA_VOLUME)
