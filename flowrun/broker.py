"""The broker: one RabbitMQ container per Docker host, a vhost and a user per flow.

Vhosts, users and counters go through the management HTTP API (one Erlang VM
start per `rabbitmqctl` call would cost seconds); queues and bindings go over
AMQP, where each declaration is one round trip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from flowrun import labels
from flowrun.engine import ContainerSpec, Engine
from flowrun.errors import FlowFailed
from flowrun.plan import Plan

BROKER_NAME = "flowrun-broker"
DEFAULT_BROKER_IMAGE = "flowrun/rabbitmq:bookworm"
ADMIN_USER = "flowrun-admin"
ADMIN_PASS_ENV = "FLOWRUN_BROKER_ADMIN_PASS"
# A message that crashes its step again and again is dead-lettered after this many
# deliveries (quorum queues count them for us, across consumer crashes).
DELIVERY_LIMIT = 5
REBOUND_DELAY_MS = 1000

# The same start command works for the Debian-built image and the official one:
# write the config from the environment, then exec the server itself as PID 1, as
# the rabbitmq user. (Debian's /usr/sbin/rabbitmq-server wraps it in `su`, which
# does not pass SIGTERM on: the broker would be SIGKILLed instead of stopping.)
_START = (
    'printf "%s\\n" '
    '"default_user = $FLOWRUN_BROKER_ADMIN_USER" '
    '"default_pass = $FLOWRUN_BROKER_ADMIN_PASS" '
    '"default_user_tags.administrator = true" '
    '"loopback_users = none" '
    '"management.tcp.port = 15672" > /etc/rabbitmq/rabbitmq.conf '
    '&& { echo "[rabbitmq_management]." > /etc/rabbitmq/enabled_plugins 2>/dev/null || true; } '
    "&& if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; "
    "then exec /usr/lib/rabbitmq/bin/rabbitmq-server; else exec rabbitmq-server; fi"
)


def broker_image() -> str:
    return os.environ.get("FLOWRUN_BROKER_IMAGE", DEFAULT_BROKER_IMAGE)


@dataclass(frozen=True)
class Broker:
    amqp_port: int
    http_port: int
    admin_pass: str
    host: str = "127.0.0.1"

    def flow_password(self, flow: str) -> str:
        """Stable per flow, so the same `up` twice gives the same container config."""
        return hmac.new(self.admin_pass.encode(), flow.encode(), hashlib.sha256).hexdigest()[:32]

    @staticmethod
    def flow_user(flow: str) -> str:
        return f"flow-{flow}"

    @staticmethod
    def vhost(flow: str) -> str:
        return f"flowrun-{flow}"

    def container_uri(self, flow: str) -> str:
        """As step containers reach the broker: by its alias on the flow's network."""
        user = self.flow_user(flow)
        vhost = urllib.parse.quote(self.vhost(flow), safe="")
        return f"amqp://{user}:{self.flow_password(flow)}@broker:5672/{vhost}"

    def host_parameters(self, flow: str) -> pika.ConnectionParameters:
        return pika.ConnectionParameters(
            host=self.host, port=self.amqp_port, virtual_host=self.vhost(flow),
            credentials=pika.PlainCredentials(ADMIN_USER, self.admin_pass),
            heartbeat=60, blocked_connection_timeout=60, connection_attempts=3, retry_delay=0.5,
        )

    def connect(self, flow: str) -> pika.BlockingConnection:
        return pika.BlockingConnection(self.host_parameters(flow))

    # ------------------------------------------------------------ management API

    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        url = f"http://{self.host}:{self.http_port}/api/{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        token = base64.b64encode(f"{ADMIN_USER}:{self.admin_pass}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def ready(self) -> bool:
        try:
            self.api("GET", "overview", timeout=2)
            pika.BlockingConnection(pika.ConnectionParameters(
                host=self.host, port=self.amqp_port,
                credentials=pika.PlainCredentials(ADMIN_USER, self.admin_pass),
                socket_timeout=2, connection_attempts=1)).close()
            return True
        except (OSError, urllib.error.URLError, pika.exceptions.AMQPError, ValueError):
            return False

    def queues(self, flow: str) -> dict[str, dict[str, Any]]:
        vhost = urllib.parse.quote(self.vhost(flow), safe="")
        try:
            return {q["name"]: q for q in self.api("GET", f"queues/{vhost}")}
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return {}
            raise

    def vhosts(self) -> list[str]:
        return [v["name"] for v in self.api("GET", "vhosts")]

    def ensure_flow(self, flow: str) -> None:
        vhost = urllib.parse.quote(self.vhost(flow), safe="")
        user = urllib.parse.quote(self.flow_user(flow), safe="")
        self.api("PUT", f"vhosts/{vhost}", {})
        self.api("PUT", f"users/{user}", {"password": self.flow_password(flow), "tags": ""})
        everything = {"configure": ".*", "write": ".*", "read": ".*"}
        self.api("PUT", f"permissions/{vhost}/{user}", everything)
        self.api("PUT", f"permissions/{vhost}/{ADMIN_USER}", everything)

    def purge_flow(self, flow: str) -> None:
        for path in (f"vhosts/{urllib.parse.quote(self.vhost(flow), safe='')}",
                     f"users/{urllib.parse.quote(self.flow_user(flow), safe='')}"):
            try:
                self.api("DELETE", path)
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise


def declare_topology(broker: Broker, plan: Plan) -> None:
    """Exchange, one durable input queue per real step, error and dead-letter queues."""
    connection = broker.connect(plan.flow)
    try:
        ch = connection.channel()
        ch.exchange_declare(plan.flow, exchange_type="topic", durable=True)
        ch.queue_declare(plan.error_queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_bind(plan.error_queue, plan.flow, routing_key=f"{plan.flow}.*.error")
        ch.queue_declare(plan.dead_letter_queue, durable=True,
                         arguments={"x-queue-type": "quorum"})
        for step in plan.steps:
            r = step.routes
            # Only the latest snapshot matters: a one-message queue that drops the older.
            ch.queue_declare(r.snapshot_queue, durable=True,
                             arguments={"x-max-length": 1, "x-overflow": "drop-head"})
            ch.queue_bind(r.snapshot_queue, plan.flow, routing_key=r.snapshot)
            if r.input_queue is None or r.listens_to is None:
                continue
            args = {
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": plan.dead_letter_queue,
            }
            ch.queue_declare(r.input_queue, durable=True, arguments=args)
            ch.queue_bind(r.input_queue, plan.flow, routing_key=r.listens_to)
            # A rebound waits here, then dead-letters back into the step's input.
            ch.queue_declare(f"{r.input_queue}:rebound", durable=True, arguments={
                "x-message-ttl": REBOUND_DELAY_MS,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": r.input_queue,
            })
    finally:
        connection.close()


def find_broker(engine: Engine) -> Broker | None:
    observed = engine.find(BROKER_NAME)
    if observed is None or not observed.running:
        return None
    return _from_observed(engine, observed.name)


def _from_observed(engine: Engine, name: str) -> Broker | None:
    observed = engine.inspect(name)
    amqp, http = observed.ports.get("5672/tcp"), observed.ports.get("15672/tcp")
    password = observed.env.get(ADMIN_PASS_ENV)
    if not (amqp and http and password):
        return None
    return Broker(amqp_port=amqp, http_port=http, admin_pass=password)


def ensure_broker(engine: Engine, timeout: float = 60) -> tuple[Broker, bool]:
    """The host's broker, started if absent; returns (broker, started_now)."""
    started = False
    observed = engine.find(BROKER_NAME)
    if observed is not None and not observed.running:
        engine.remove(BROKER_NAME)  # a stopped broker's published ports are gone; start anew
        observed = None
    if observed is None:
        image = broker_image()
        if not engine.image_exists(image):
            raise FlowFailed(
                f"the broker image {image} is missing; run `make images` "
                "(scripts/build-base-images) to build it without a registry"
            )
        engine.run(ContainerSpec(
            name=BROKER_NAME, image=image, hostname=BROKER_NAME,
            env={"FLOWRUN_BROKER_ADMIN_USER": ADMIN_USER, "HOME": "/var/lib/rabbitmq",
                 # Erlang's schedulers busy-wait for work by default: on a laptop or a
                 # 2-core CI machine that spin takes CPU from the steps themselves.
                 "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS":
                     "+sbwt none +sbwtdcpu none +sbwtdio none",
                 ADMIN_PASS_ENV: secrets.token_hex(16)},
            labels={labels.ROLE: labels.ROLE_BROKER},
            command=["sh", "-c", _START],
            user="rabbitmq",
            # Loopback only: the host reaches it, nothing else does.
            ports={"5672/tcp": ("127.0.0.1", None), "15672/tcp": ("127.0.0.1", None)},
            hardened=False,
        ))
        started = True
    broker = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        broker = broker or _from_observed(engine, BROKER_NAME)
        if broker is not None and broker.ready():
            return broker, started
        time.sleep(0.1)
    raise FlowFailed(
        f"the broker ({BROKER_NAME}) did not accept connections within {timeout:.0f} s; "
        f"see `docker logs {BROKER_NAME}`"
    )
