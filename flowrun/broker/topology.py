"""A flow's exchange, queues and bindings on the broker: declared before any step
can publish, and kept exactly as the plan says (stale bindings are taken away)."""

from __future__ import annotations

from flowrun.broker.server import (
    DELIVERY_LIMIT,
    LIVE_TTL_MS,
    OUTPUT_KEEP,
    REBOUND_DELAY_MS,
    Broker,
    reply_queue_arguments,
    trace_queue_arguments,
)
from flowrun.contract import names
from flowrun.core.plan import Plan


def declare_topology(broker: Broker, plan: Plan) -> None:
    """Every exchange, queue and binding of the flow, before any of its steps can publish.

    A message published to a routing key no queue is bound to is confirmed by the
    broker and dropped; so the whole topology exists first (and the sailors publish
    with `mandatory`, so a message that still finds no queue comes back and is
    retried rather than acked upstream). Each real step publishes to an exchange of
    its own (names.step_exchange), bound with its own keys only: a key it names in a
    CC or BCC header that is not its own reaches nothing. Bindings the plan does not
    have (a removed step's input) are taken away, and so are the exchanges of steps
    that left the flow, so nothing keeps filling a queue nobody reads.
    """
    flow = plan.flow
    wanted: set[tuple[str, str, str]] = set()
    exchanges = {names.step_exchange(flow, s.id) for s in plan.steps}
    connection = broker.connect(flow)
    try:
        ch = connection.channel()

        def bind(queue: str, exchange: str, key: str) -> None:
            ch.queue_bind(queue, exchange, routing_key=key)
            wanted.add((exchange, queue, key))

        for exchange in sorted(exchanges):
            ch.exchange_declare(exchange, exchange_type="topic", durable=True)
        ch.queue_declare(plan.error_queue, durable=True, arguments={"x-queue-type": "quorum"})
        ch.queue_declare(names.error_tally_queue(flow), durable=True,
                         arguments={"x-queue-type": "quorum"})
        ch.queue_declare(plan.dead_letter_queue, durable=True,
                         arguments={"x-queue-type": "quorum"})
        ch.queue_declare(names.live_queue(flow), durable=True, arguments={
            "x-max-length": OUTPUT_KEEP, "x-overflow": "drop-head",
            "x-message-ttl": LIVE_TTL_MS})
        # Trace batches (contract/traced.py) go here whether or not the flow records
        # them: with the trace off nothing is bound, and the broker drops them.
        trace_exchange, trace_queue = names.trace_exchange(flow), names.trace_queue(flow)
        ch.exchange_declare(trace_exchange, exchange_type="fanout", durable=True)
        if plan.trace:
            # Not durable: its records of persistent messages are never written to disk.
            # Fed by the trace exchange and by a tap on each Node.js step's exchange,
            # never on a Python step's: a binding counts as a route for every publish,
            # and would hide from flowrun's sailor one that reaches no queue (it
            # sends it again when it comes back). The platform's sailor handles no
            # returns.
            ch.queue_declare(trace_queue, durable=False, arguments=trace_queue_arguments())
            ch.queue_bind(trace_queue, trace_exchange)
            for exchange in plan.tapped_exchanges:
                bind(trace_queue, exchange, names.TAP_KEY)
        else:
            ch.queue_delete(trace_queue)
        if plan.replies:
            # Answers to HTTP requests, from any step (a reply step's answer, any
            # step's error). Durable, with its bindings: a broker restart must not leave
            # the gateway a flow it can no longer hear answers from (its messages stay
            # short-lived: TTL, bounded).
            ch.queue_declare(names.reply_queue(flow), durable=True,
                             arguments=reply_queue_arguments())
            for step in plan.steps:
                bind(names.reply_queue(flow), step.routes.exchange, names.reply_binding(flow))
        else:
            ch.queue_delete(names.reply_queue(flow))
        # The last step's outputs have no next step: they are kept, bounded, here.
        ch.queue_declare(names.output_queue(flow), durable=True, arguments={
            "x-max-length": OUTPUT_KEEP, "x-overflow": "drop-head"})
        last = plan.steps[-1]
        bind(names.output_queue(flow), last.routes.exchange, last.routes.data)
        # Every step's snapshots, in order: the platform services fold them into one
        # snapshot per step (`updateSnapshot` merges, so none may be dropped).
        ch.queue_declare(plan.snapshot_queue, durable=True,
                         arguments={"x-queue-type": "quorum"})
        for step in plan.steps:
            r = step.routes
            bind(plan.error_queue, r.exchange, r.error)
            bind(names.error_tally_queue(flow), r.exchange, r.error)
            bind(plan.snapshot_queue, r.exchange, r.snapshot)
            bind(names.live_queue(flow), r.exchange, names.live_key(flow, step.id))
            if r.input_queue is None:
                continue
            ch.queue_declare(r.input_queue, durable=True, arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": DELIVERY_LIMIT,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": plan.dead_letter_queue,
            })
            if r.listens_to is None or r.listens_on is None or r.rebound_queue is None:
                continue  # a ticked trigger's input: the platform services fill it
            bind(r.input_queue, r.listens_on, r.listens_to)
            # A rebound waits here, then dead-letters back into the step's input.
            ch.queue_declare(r.rebound_queue, durable=True, arguments={
                "x-message-ttl": REBOUND_DELAY_MS,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": r.input_queue,
            })
            bind(r.rebound_queue, r.exchange, r.rebound)
        gone: set[str] = set()
        for b in broker.bindings(flow):
            source = b.get("source") or ""
            if source == names.FIREHOSE_EXCHANGE and b.get("destination") == trace_queue:
                # Made by an older flowrun: the trace no longer reads the firehose.
                ch.queue_unbind(b["destination"], source, routing_key=b["routing_key"])
                continue
            if b.get("destination_type") != "queue" or not _of_flow(flow, source):
                continue
            if source not in exchanges:
                gone.add(source)  # a step that left the flow, or the flow's old exchange
                continue
            queue, key = b["destination"], b["routing_key"]
            if (source, queue, key) not in wanted and names.is_declared_queue(flow, queue):
                ch.queue_unbind(queue, source, routing_key=key)
        for exchange in sorted(gone):
            ch.exchange_delete(exchange)
    finally:
        connection.close()


def _of_flow(flow: str, exchange: str) -> bool:
    """A step exchange of the flow, or the one exchange of a flow made before."""
    return exchange == names.legacy_exchange(flow) or names.of_exchange(flow, exchange) is not None
