"""Every name flowrun gives to something outside itself: containers, networks,
volumes, vhosts, users, exchanges, queues and routing keys. Nowhere else composes one.

Names must be unambiguous across flows and steps. Flow names are lowercase
letters, digits and '-'; visible step ids add '_'. Neither contains '.' or ':',
so those two are the separators, and joining parts with them can never make
two different (flow, step) pairs into one name (with '-', flow `p` + step
`x-y` and flow `p-x` + step `y` were both `flowrun-p-x-y`). Mapper step ids are
`mapper.<before>.<after>`: they contain '.', which no visible id can, so an
injected id never equals a visible one, and two different pairs never give
the same mapper id.

RabbitMQ topic routing keys are dot-separated words and a mapper id has three
of them, so a pattern that matches "any step" uses '#' (any number of words), not
'*' (exactly one).
"""

from __future__ import annotations

import re

PREFIX = "flowrun"

# ------------------------------------------------------------------ host-wide

BROKER_CONTAINER = "flowrun-broker"
# On a swarm, the broker is a RabbitMQ cluster: one service per broker node, each on
# a different swarm node (`flowrun-broker-1`...), all reached as BROKER_ALIAS.
BROKER_CLUSTER_SIZE = 3


def broker_node(index: int) -> str:
    return f"{BROKER_CONTAINER}-{index}"


# The broker's own network: it publishes the broker's ports on loopback. Written
# with '-' so it can never equal a flow's network (`flowrun.<flow>`).
BROKER_NETWORK = "flowrun-broker"
BROKER_ALIAS = "broker"  # how steps reach the broker on their flow's networks
# The broker's data (queues, messages, vhosts, users) outlives its container, and so
# does its admin secret: a broker started anew is the same broker to every step.
BROKER_DATA_VOLUME = "flowrun-broker-data"
BROKER_SECRET_RECORD = "flowrun-broker-secret"
LOCK_DIR_NAME = "flowrun-locks"
# The platform services (step-info, hook data, snapshots, trigger ticks): one
# container per host beside the broker, on its network and on each flow's.
SERVICES_CONTAINER = "flowrun-services"
SERVICES_ALIAS = "platform"  # how steps reach it on their flow's networks
SERVICES_DATA_VOLUME = "flowrun-services-data"


def mapper_id(before: str, after: str) -> str:
    return f"mapper.{before}.{after}"


def is_mapper_id(step: str) -> bool:
    return step.startswith("mapper.") and step.count(".") == 2


# ------------------------------------------------------------------ Docker

def container(flow: str, step: str, replica: int = 1) -> str:
    """A step's container; a replicated step's further replicas add `.<n>` (a visible
    id has no '.', a mapper id two: `<step>.<n>` is never another step's id)."""
    return f"{PREFIX}.{flow}.{step}" if replica == 1 else f"{PREFIX}.{flow}.{step}.{replica}"


def replica_label(step: str, replica: int, replicated: bool) -> str:
    """How people read one replica of a step: `enrich` alone, `enrich#2` of several."""
    return f"{step}#{replica}" if replicated or replica > 1 else step


def hook_container(flow: str, step: str) -> str:
    """A one-shot run of a step's shutdown hook, at `down` (no step id has a '.'
    after a visible id, and mapper ids have two: no clash with a step's container)."""
    return f"{PREFIX}.{flow}.{step}.shutdown"


def network(flow: str) -> str:
    """The flow's network: component steps and the broker; leads out of the host."""
    return f"{PREFIX}.{flow}"


def internal_network(flow: str) -> str:
    """Mapper steps and the broker only; Docker gives it no way out."""
    return f"{PREFIX}.{flow}.internal"


def record_volume(flow: str) -> str:
    """An empty volume whose labels record the flow's real steps (see `record`)."""
    return f"{PREFIX}.{flow}.record"


def image(component: str, revision: str) -> str:
    return f"{PREFIX}-{component}:{revision}"


# ------------------------------------------------------------------ broker

def vhost(flow: str) -> str:
    return f"{PREFIX}.{flow}"


def step_user(flow: str, step: str) -> str:
    """Each step logs in as itself: it may read its own queues, publish as itself."""
    return f"{flow}.{step}"


def step_exchange(flow: str, step: str) -> str:
    """Where a step publishes: an exchange of its own, bound only to the queues its own
    routing keys lead to. RabbitMQ routes a publish by its routing key and by the keys
    its `CC` and `BCC` headers name, and checks only the first against a user's topic
    permissions: on an exchange shared by the flow's steps, a step could CC its way
    into any queue of the flow. On its own exchange, a key not its own matches nothing."""
    return f"{flow}.{step}"


def of_exchange(flow: str, exchange: str) -> str | None:
    """The step of a step exchange of the flow (`<flow>.<step>`), or None."""
    prefix = f"{flow}."
    step = exchange[len(prefix):] if exchange.startswith(prefix) else ""
    return step or None


def legacy_exchange(flow: str) -> str:
    """The one exchange every step of a flow published to before they had their own;
    taken away when a flow made before is brought up again."""
    return flow


def input_queue(flow: str, step: str) -> str:
    return f"{flow}:{step}:messages"


def snapshot_queue(flow: str) -> str:
    """Every step's snapshot messages, drained by the platform services into one
    snapshot per step (`snapshot` replaces, `updateSnapshot` merges)."""
    return f"{flow}:snapshots"


def rebound_queue(flow: str, step: str) -> str:
    return f"{flow}:{step}:rebound"


def error_queue(flow: str) -> str:
    return f"{flow}:errors"


def error_tally_queue(flow: str) -> str:
    """A copy of every error, drained by the platform services to count errors per
    step (the error queue itself is left for people to read)."""
    return f"{flow}:error-tally"


def trace_queue(flow: str) -> str:
    """A record of every message the flow's steps publish, for `flowrun trace`:
    bounded, not durable (a record need not cost a disk write), drained by the
    platform services. Fed by the flow's trace exchange (flowrun's publishers say
    what they published: contract/traced.py) and by a binding on each Node.js
    step's exchange (TAP_KEY: the platform's sailor sends no batches)."""
    return f"{flow}:trace"


def trace_exchange(flow: str) -> str:
    """Where flowrun's own publishers send their trace batches (a fanout to the
    trace queue; with the trace off, to nothing). Named like a queue, not like a
    step exchange: no step's exchange pattern (`<flow>.<step>`) takes it in."""
    return f"{flow}:trace"


# The trace queue's binding on a Node.js step's exchange: every publish to it, as
# published. (Such a binding is a route: a publish that reaches no other queue is
# not returned. The platform's sailor handles no returns: to it nothing changes.)
TAP_KEY = "#"

# RabbitMQ's firehose, which recorded the Node.js steps' publishes before their
# exchanges were tapped (it copied every publish and delivery of the vhost, and
# cost the broker ~1 ms per message through a flow of two Node.js steps): its old
# bindings are taken away at `up`.
FIREHOSE_EXCHANGE = "amq.rabbitmq.trace"


def dead_letter_queue(flow: str) -> str:
    return f"{flow}:dead"


def output_queue(flow: str) -> str:
    """The last step's outputs, bounded: what a flow produced, for `tail` and people."""
    return f"{flow}:output"


def live_queue(flow: str) -> str:
    """Sailors' live announcements; bounded and short-lived."""
    return f"{flow}:live"


def data_key(flow: str, step: str) -> str:
    return f"{flow}.{step}.message"


def error_key(flow: str, step: str) -> str:
    return f"{flow}.{step}.error"


def snapshot_key(flow: str, step: str) -> str:
    return f"{flow}.{step}.snapshot"


def rebound_key(flow: str, step: str) -> str:
    return f"{flow}.{step}.rebound"


def api_user(flow: str, step: str) -> str:
    """A step's user for the platform services (the platform's API_USERNAME)."""
    return f"{flow}.{step}"


def account_id(flow: str, step: str) -> str:
    """The id of a step's credential (`cfg._account`, the target of `updateKeys`)."""
    return f"{flow}.{step}"


def live_key(flow: str, step: str) -> str:
    return f"{flow}.{step}.live"


def of_key(flow: str, key: str) -> tuple[str, str] | None:
    """(step, kind) of a routing key `<flow>.<step>.<kind>` (kind: message, error,
    snapshot, rebound, live), or None for a key that is not one of the flow's."""
    prefix = f"{flow}."
    if not key.startswith(prefix):
        return None
    step, _, kind = key[len(prefix):].rpartition(".")
    return (step, kind) if step and kind else None


def step_of_queue(flow: str, queue: str) -> str | None:
    """The step of one of its queues (`<flow>:<step>:<kind>`), or None."""
    prefix = f"{flow}:"
    if not queue.startswith(prefix) or queue.count(":") < 2:
        return None
    return queue[len(prefix):].rsplit(":", 1)[0] or None


def step_key_pattern(flow: str, step: str) -> str:
    """A regular expression for every routing key a step may publish with: its own
    keys, and the reply keys of its own flow (any step may answer a request; none may
    answer another flow's)."""
    return (rf"^{re.escape(flow)}\.{re.escape(step)}\.[a-z]+$"
            rf"|^{re.escape(flow)}:reply\.[0-9a-f]{{32}}$")


# ------------------------------------------------------------------ HTTP requests
#
# A flow called over HTTP (`/hook/<flow>`): the gateway in the platform services puts
# each request into the trigger's input with a `reply_to` header naming a reply key of
# the flow, and waits on the flow's reply queue for a message with that routing key.
# A reply key has ':' after the flow's name, which no key of a step has: it can never
# be a step's data, error or other key, whatever the step is called.

def reply_key(flow: str, request_id: str) -> str:
    """The routing key one request's answer is published with (its `reply_to`)."""
    return f"{flow}:reply.{request_id}"


def reply_binding(flow: str) -> str:
    """Binds every step exchange of the flow to its reply queue: any reply key."""
    return f"{flow}:reply.*"


def is_reply_key(flow: str, key: str) -> bool:
    """A reply key of this flow, as the gateway makes them (a step checks a `reply_to`
    it was handed before it publishes with it)."""
    return re.fullmatch(rf"{re.escape(flow)}:reply\.[0-9a-f]{{32}}", key) is not None


def reply_queue(flow: str) -> str:
    """Where every answer of the flow arrives, for the gateway to hand to its waiting
    request; short-lived messages (an answer nobody waits for any more is dropped)."""
    return f"{flow}:answers"


def step_read_pattern(flow: str, step: str) -> str:
    """A regular expression for the queues a step may read: its input."""
    return rf"^{re.escape(flow)}:{re.escape(step)}:messages$"


def is_declared_queue(flow: str, queue: str) -> bool:
    """A queue flowrun declares for the flow (a person's or a test's tap is not)."""
    if queue in (error_queue(flow), output_queue(flow), live_queue(flow),
                 snapshot_queue(flow), error_tally_queue(flow), trace_queue(flow),
                 reply_queue(flow)):
        return True
    head, _, kind = queue.rpartition(":")
    return head.startswith(f"{flow}:") and kind in ("messages", "snapshot", "rebound")
