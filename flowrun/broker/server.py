"""The broker: one RabbitMQ container per Docker host, a vhost per flow, a user per step.

Vhosts, users and counters go through the management HTTP API (one Erlang VM
start per `rabbitmqctl` call would cost seconds); queues and bindings go over
AMQP, where each declaration is one round trip.

Isolation: the broker sits only on networks flowrun made (its own, whose
ports are published on loopback, and each flow's), never on Docker's default
bridge. Each step logs in as its own user, who may read its own input and
snapshot queues, publish to its own exchange (bound only where its own keys
lead) with its own routing keys only, and configure (declare, purge, delete) nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import re
import secrets
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flowrun.broker.http import JsonClient
from flowrun.contract import BROKER_MANAGEMENT_PORT, names
from flowrun.contract.http import basic
from flowrun.core import labels
from flowrun.core.observed import Observed
from flowrun.engine.protocol import ContainerEngine
from flowrun.engine.spec import ContainerSpec
from flowrun.errors import FlowFailed, ServiceError
from flowrun.settings import broker_image
from flowrun.waiting import wait_for

if TYPE_CHECKING:
    import pika

BROKER_NAME = names.BROKER_CONTAINER
ADMIN_USER = "flowrun-admin"
ADMIN_PASS_ENV = "FLOWRUN_BROKER_ADMIN_PASS"
SECRET_LABEL = "io.flowrun.broker-secret"
# A message that crashes its step again and again is dead-lettered after this many
# deliveries (quorum queues count them for us, across consumer crashes).
DELIVERY_LIMIT = 5
REBOUND_DELAY_MS = 1000
# The broker's container limit, and the share of it at which RabbitMQ stops
# accepting publishes (its memory alarm) rather than being killed by the kernel.
BROKER_MEMORY = "1g"
BROKER_MEMORY_WATERMARK = "600MB"
# What the broker accepts in one message; `flowrun send` checks against it first.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
OUTPUT_KEEP = 1000  # the last step's latest outputs kept in `<flow>:output`
TRACE_KEEP = 20_000  # copies waiting for the platform services to record them
LIVE_TTL_MS = 60_000
# Answers to HTTP requests: kept no longer than the longest a request may wait
# (flowfile.MAX_REPLY_TIMEOUT), and at most this many waiting at once.
REPLY_TTL_MS = 3_600_000
REPLY_KEEP = 10_000


def reply_queue_arguments() -> dict[str, object]:
    return {"x-message-ttl": REPLY_TTL_MS, "x-max-length": REPLY_KEEP,
            "x-overflow": "drop-head"}


def trace_queue_arguments() -> dict[str, Any]:
    """A flow's trace queue: bounded, its oldest copies dropped first."""
    return {"x-max-length": TRACE_KEEP, "x-overflow": "drop-head"}

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
    f'"max_message_size = {MAX_MESSAGE_BYTES}" '
    f'"vm_memory_high_watermark.absolute = {BROKER_MEMORY_WATERMARK}" '
    f'"management.tcp.port = {BROKER_MANAGEMENT_PORT}" > /etc/rabbitmq/rabbitmq.conf '
    # Classic queues (a flow's output, trace, rebound and error queues) in their second
    # version: a persistent message into a durable v1 queue costs the broker ~700 us,
    # into v2 ~120 (bench/README). 3.10 to 3.13 have both and default to v1; 4.x has
    # only v2. Debian's 3.10 is what runs here; other images keep their default.
    '&& if ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-3.1[0-3]* >/dev/null 2>&1; then '
    'echo "classic_queue.default_version = 2" >> /etc/rabbitmq/rabbitmq.conf; fi '
    # A cluster's node (on a swarm): its peers, and the cookie they share.
    '&& if [ -n "$FLOWRUN_BROKER_PEERS" ]; then { '
    'echo "cluster_formation.peer_discovery_backend = classic_config"; '
    'echo "cluster_partition_handling = pause_minority"; i=0; '
    'for peer in $FLOWRUN_BROKER_PEERS; do i=$((i+1)); '
    'echo "cluster_formation.classic_config.nodes.$i = $peer"; done; '
    '} >> /etc/rabbitmq/rabbitmq.conf; '
    'rm -f "$HOME/.erlang.cookie"; printf %s "$FLOWRUN_BROKER_COOKIE" > "$HOME/.erlang.cookie"; '
    'chmod 400 "$HOME/.erlang.cookie"; fi '
    '&& { echo "[rabbitmq_management]." > /etc/rabbitmq/enabled_plugins 2>/dev/null || true; } '
    "&& if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; "
    "then exec /usr/lib/rabbitmq/bin/rabbitmq-server; else exec rabbitmq-server; fi"
)


def amqp_client() -> ModuleType:
    """pika, loaded at its first use rather than at the CLI's start: `up` loads it
    while Docker makes the flow's networks (supervise/executor.py), where its 30-40
    ms are no longer part of the time before the first step starts."""
    importlib.import_module("pika.exceptions")  # a submodule the callers name
    return importlib.import_module("pika")


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass(frozen=True)
class Broker:
    amqp_port: int
    http_port: int
    admin_pass: str
    host: str = "127.0.0.1"

    def step_password(self, flow: str, step: str) -> str:
        """Stable per step, so the same `up` twice gives the same container config."""
        material = f"{flow}\0{step}".encode()
        return hmac.new(self.admin_pass.encode(), material, hashlib.sha256).hexdigest()[:32]

    def step_uri(self, flow: str, step: str) -> str:
        """As a step container reaches the broker: by its alias on the flow's network."""
        user = _q(names.step_user(flow, step))
        return (f"amqp://{user}:{self.step_password(flow, step)}@{names.BROKER_ALIAS}:5672/"
                f"{_q(names.vhost(flow))}")

    def host_parameters(self, flow: str) -> pika.ConnectionParameters:
        pika = amqp_client()
        return pika.ConnectionParameters(
            host=self.host, port=self.amqp_port, virtual_host=names.vhost(flow),
            credentials=pika.PlainCredentials(ADMIN_USER, self.admin_pass),
            heartbeat=60, blocked_connection_timeout=60, connection_attempts=3, retry_delay=0.5,
            socket_timeout=5, stack_timeout=15,
        )

    def connect(self, flow: str) -> pika.BlockingConnection:
        return amqp_client().BlockingConnection(self.host_parameters(flow))

    # ------------------------------------------------------------ management API

    @property
    def management(self) -> JsonClient:
        return JsonClient(f"http://{self.host}:{self.http_port}/api",
                          basic(ADMIN_USER, self.admin_pass), "the broker's management API")

    def running_nodes(self) -> int:
        """RabbitMQ nodes of its cluster that run (1 for a lone broker)."""
        try:
            nodes = self.management.call("GET", "nodes", timeout=5) or []
        except ServiceError:
            return 0
        return sum(1 for node in nodes if node.get("running"))

    def ready(self) -> bool:
        if not self.management.answers("overview"):
            return False
        pika = amqp_client()
        try:
            pika.BlockingConnection(pika.ConnectionParameters(
                host=self.host, port=self.amqp_port,
                credentials=pika.PlainCredentials(ADMIN_USER, self.admin_pass),
                socket_timeout=2, connection_attempts=1)).close()
            return True
        except (OSError, pika.exceptions.AMQPError):
            return False

    def queues(self, flow: str) -> dict[str, dict[str, Any]]:
        found = self.management.call("GET", f"queues/{_q(names.vhost(flow))}",
                                     missing_ok=True)
        return {q["name"]: q for q in found or []}

    def has_flow(self, flow: str) -> bool:
        return self.management.call("GET", f"vhosts/{_q(names.vhost(flow))}",
                                    missing_ok=True) is not None

    def ensure_vhost(self, flow: str) -> None:
        """The flow's vhost, with RabbitMQ's firehose off: it copied every publish and
        delivery of the vhost (the trace is fed by batches and by taps instead:
        topology.py); a vhost an older flowrun made has it switched off here."""
        vhost = _q(names.vhost(flow))
        self.management.call("PUT", f"vhosts/{vhost}", {"tracing": False})
        self.management.call("PUT", f"permissions/{vhost}/{ADMIN_USER}",
                 {"configure": ".*", "write": ".*", "read": ".*"})

    def ensure_users(self, flow: str, steps: Iterable[str]) -> None:
        """For each step a user who may do what that step does, and nothing more.

        What is missing or differs goes in one import of definitions (three
        management calls per step were a tenth of a 21-step warm-up's CPU); what the
        broker has already, as it should be, is left alone (the import of 21 users
        cost the broker 70 ms of CPU on every `up`). An updated user keeps its
        connections."""
        vhost = names.vhost(flow)
        wanted_users, wanted_permissions, wanted_topics = [], [], []
        for step in steps:
            user = names.step_user(flow, step)
            exchange = names.step_exchange(flow, step)
            wanted_users.append((user, self.step_password(flow, step)))
            # It writes to its own exchange only, which leads only where its own keys
            # do (CC and BCC keys included: see names.step_exchange), and to the flow's
            # trace exchange, which leads to the trace queue alone.
            writes = f"{re.escape(exchange)}|{re.escape(names.trace_exchange(flow))}"
            wanted_permissions.append({"user": user, "vhost": vhost, "configure": "^$",
                                       "write": f"^(?:{writes})$",
                                       "read": names.step_read_pattern(flow, step)})
            # Topic authorisation: there, only its own routing keys.
            wanted_topics.append({"user": user, "vhost": vhost, "exchange": exchange,
                                  "write": names.step_key_pattern(flow, step), "read": "^$"})
        known = {u["name"]: u for u in self._get_list("users")}
        permissions = _keyed(self._get_list(f"vhosts/{_q(vhost)}/permissions"),
                             _PERMISSION_FIELDS)
        topics = _keyed(self._get_list(f"vhosts/{_q(vhost)}/topic-permissions"),
                        _TOPIC_FIELDS)
        definitions = {
            "users": [{"name": user, "tags": "",
                       "hashing_algorithm": "rabbit_password_hashing_sha256",
                       "password_hash": password_hash(password)}
                      for user, password in wanted_users
                      if not _user_as_wanted(known.get(user), password)],
            "permissions": [p for p in wanted_permissions
                            if _key(p, _PERMISSION_FIELDS) not in permissions],
            "topic_permissions": [t for t in wanted_topics
                                  if _key(t, _TOPIC_FIELDS) not in topics],
        }
        if any(definitions.values()):
            self.management.call("POST", "definitions", definitions, timeout=60)

    def _get_list(self, path: str) -> list[dict[str, Any]]:
        return list(self.management.call("GET", path, missing_ok=True) or [])

    def bindings(self, flow: str) -> list[dict[str, Any]]:
        return self._get_list(f"bindings/{_q(names.vhost(flow))}")

    def purge_flow(self, flow: str) -> None:
        for user in self._get_list("users"):
            if str(user.get("name", "")).startswith(f"{flow}."):
                self._delete(f"users/{_q(user['name'])}")
        # Deleting a vhost deletes its quorum queues on every member: on a cluster
        # whose node is rejoining, that takes a while.
        self._delete(f"vhosts/{_q(names.vhost(flow))}", timeout=90)

    def _delete(self, path: str, timeout: float = 10) -> None:
        self.management.call("DELETE", path, timeout=timeout, missing_ok=True)


# What makes a permission the same one (the broker's listing has these fields too).
_PERMISSION_FIELDS = ("user", "configure", "write", "read")
_TOPIC_FIELDS = ("user", "exchange", "write", "read")


def _key(entry: dict[str, Any], fields: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(entry.get(f) for f in fields)


def _keyed(entries: list[dict[str, Any]], fields: tuple[str, ...]) -> set[tuple[Any, ...]]:
    return {_key(e, fields) for e in entries}


def _user_as_wanted(user: dict[str, Any] | None, password: str) -> bool:
    """The broker's user has this password (its stored hash checked with its salt)
    and no tags."""
    if user is None or user.get("tags") not in ("", [], None) or user.get(
            "hashing_algorithm") != "rabbit_password_hashing_sha256":
        return False
    try:
        stored = base64.b64decode(user.get("password_hash") or "")
    except ValueError:
        return False
    salt, digest = stored[:4], stored[4:]
    return hmac.compare_digest(digest, hashlib.sha256(salt + password.encode()).digest())


def password_hash(password: str) -> str:
    """As RabbitMQ stores a password (rabbit_password_hashing_sha256): base64 of a
    4-byte salt followed by SHA-256 of the salt and the password."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def find_broker(engine: ContainerEngine) -> Broker | None:
    """The broker the host talks to: on a swarm, the first running node of its
    cluster (the manager's, while it runs)."""
    for name in _broker_names(engine):
        observed = engine.find(name)
        if observed is not None and observed.running:
            broker = _from_observed(observed)
            if broker is not None:
                return broker
    return None


def _broker_names(engine: ContainerEngine) -> list[str]:
    if not engine.capabilities.broker_cluster:
        return [BROKER_NAME]
    return [names.broker_node(i) for i in range(1, names.BROKER_CLUSTER_SIZE + 1)]


def _from_observed(observed: Observed) -> Broker | None:
    amqp, http = observed.ports.get("5672/tcp"), observed.ports.get("15672/tcp")
    password = observed.env.get(ADMIN_PASS_ENV)
    if not (amqp and http and password):
        return None
    return Broker(amqp_port=amqp, http_port=http, admin_pass=password, host=observed.host)


def _admin_secret(engine: ContainerEngine) -> str:
    """The broker's admin password, kept in a record of its own so that a broker
    started anew (its container removed) has the one its data volume knows, and the
    steps' passwords (derived from it) stay valid."""
    record = engine.get_record(names.BROKER_SECRET_RECORD) or {}
    secret = record.get(SECRET_LABEL)
    if not secret:
        secret = secrets.token_hex(16)
        engine.put_record(names.BROKER_SECRET_RECORD, {SECRET_LABEL: secret,
                                                        labels.ROLE: labels.ROLE_BROKER})
    return secret


def forget_broker(engine: ContainerEngine) -> None:
    """`down --all --purge`: the broker's data and secret go too."""
    engine.remove_volume(names.BROKER_DATA_VOLUME)
    engine.remove_volume(names.BROKER_SECRET_RECORD)


def _broker_spec(engine: ContainerEngine, name: str, peers: list[str] | None = None,
                 node: str | None = None) -> ContainerSpec:
    secret = _admin_secret(engine)
    env = {"FLOWRUN_BROKER_ADMIN_USER": ADMIN_USER, "HOME": "/var/lib/rabbitmq",
           # Erlang's schedulers busy-wait for work by default: on a laptop or a
           # 2-core CI machine that spin takes CPU from the steps themselves.
           "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+sbwt none +sbwtdcpu none +sbwtdio none",
           ADMIN_PASS_ENV: secret}
    if peers:
        env["FLOWRUN_BROKER_PEERS"] = " ".join(f"rabbit@{peer}" for peer in peers)
        env["FLOWRUN_BROKER_COOKIE"] = hmac.new(secret.encode(), b"erlang-cookie",
                                                hashlib.sha256).hexdigest()[:32].upper()
    return ContainerSpec(
        name=name, image=broker_image(), hostname=name, env=env,
        labels={labels.ROLE: labels.ROLE_BROKER},
        command=["sh", "-c", _START],
        user="rabbitmq",
        network=names.BROKER_NETWORK, aliases=(names.BROKER_ALIAS, name),
        memory=BROKER_MEMORY,
        # Loopback only: the host reaches it, nothing else does. (On a swarm: published
        # on the node that runs it.)
        ports={"5672/tcp": ("127.0.0.1", None), "15672/tcp": ("127.0.0.1", None)},
        volumes={names.BROKER_DATA_VOLUME: "/var/lib/rabbitmq"},
        hardened=False, node=node,
    )


def ensure_broker(engine: ContainerEngine, timeout: float = 60) -> tuple[Broker, bool]:
    """The host's broker (a swarm's broker cluster), started if absent; returns
    (broker, started_now)."""
    image = broker_image()
    if not engine.image_exists(image):
        raise FlowFailed(
            f"the broker image {image} is missing; run `make images` "
            "(scripts/build-base-images) to build it without a registry"
        )
    # Its own network, never Docker's default bridge: on that, any container
    # could reach the broker's ports directly.
    engine.ensure_network(names.BROKER_NETWORK, {labels.ROLE: labels.ROLE_BROKER})
    if engine.capabilities.broker_cluster:
        return _ensure_cluster(engine, timeout)
    started = False
    observed = engine.find(BROKER_NAME)
    if observed is not None and not observed.running:
        engine.remove(BROKER_NAME)  # a stopped broker's published ports are gone; start anew
        observed = None
    if observed is None:
        engine.run(_broker_spec(engine, BROKER_NAME))
        started = True
    return _wait_ready(engine, started, timeout), started


def _wait_ready(engine: ContainerEngine, started: bool, timeout: float,
                nodes: int = 1) -> Broker:
    def look() -> Broker | None:
        broker = find_broker(engine)
        if broker is not None and broker.ready() and (
                nodes == 1 or broker.running_nodes() >= nodes):
            return broker
        return None

    return wait_for(look, timeout, "the broker", every=0.1 if nodes == 1 else 0.5,
                    on_timeout=lambda: FlowFailed(
        f"the broker ({', '.join(_broker_names(engine))}) did not accept connections"
        f"{f' as a cluster of {nodes}' if nodes > 1 else ''} within {timeout:.0f} s; "
        f"see `docker {'service ' if engine.capabilities.broker_cluster else ''}logs "
        f"{_broker_names(engine)[0]}`"))


def _ensure_cluster(engine: Any, timeout: float) -> tuple[Broker, bool]:
    """A RabbitMQ cluster of up to three nodes, each a service pinned to a different
    swarm node with its data on that node: a flow's quorum queues are replicated on
    all of them, so losing one swarm node loses no message."""
    placed = engine.ready_nodes()[:names.BROKER_CLUSTER_SIZE]
    peers = [names.broker_node(i) for i in range(1, len(placed) + 1)]
    started = False
    for name, node in zip(peers, placed, strict=True):
        if engine.find(name) is None:
            engine.run(_broker_spec(engine, name, peers, node))
            started = True
    # A new cluster is waited for whole: quorum queues declared before every node has
    # joined would have fewer members. One that lost a node meanwhile is used as it is.
    return _wait_ready(engine, started, timeout * 2 if started else timeout,
                       len(peers) if started else 1), started


def broker_services(engine: ContainerEngine) -> list[str]:
    """The broker's containers (services on a swarm) that exist."""
    return [name for name in _broker_names(engine) if engine.find(name) is not None]
