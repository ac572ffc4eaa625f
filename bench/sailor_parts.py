"""The Python sailor's CPU per message, by part, without a broker: what one message
costs a step between its delivery and its publish (decrypt and JSON, the function,
the output message and its headers, encrypt, the AMQP frames and header table).

    python bench/sailor_parts.py [--messages N]

Each part is run N times on a realistic message (the orders sample's), timed alone.
The AMQP part is the sailor's own client's (flowrun/contract/amqp.py): one publish's
frames (method, header and body) as its publish writes them before the socket write,
and a delivery's properties decoded; pika's, which the sailor used until issue 22,
beside it for comparison (not in the total). The broker's side and the confirm's
round trip are bench/profile.py's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
import pika.frame  # noqa: E402
import pika.spec  # noqa: E402

from bench.run import render  # noqa: E402
from flowrun.contract import amqp, wire  # noqa: E402
from flowrun.sailor.function import Runner, as_message  # noqa: E402

BODY = {"id": "o-1", "customer": {"first": "Ada", "last": "Lovelace",
                                  "email": "ada@example.org"},
        "items": [{"sku": f"s-{i}", "price": 3 + i} for i in range(3)], "total": 12}


def process(msg: dict[str, Any]) -> dict[str, Any]:
    return {**msg["body"], "contactId": "c-1234"}


def timed(label: str, fn: Callable[[], Any], n: int) -> tuple[str, float]:
    for _ in range(min(n, 200)):
        fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return label, (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    n = parser.parse_args().messages
    keys = wire.Keys.for_flow("secret", "orders")
    message = wire.data_message(BODY)
    raw = keys.encrypt(message)
    parent = wire.outgoing_headers({}, "fetch", "orders", message_id=message["id"])
    msg = wire.decode_data(keys, raw, parent)
    runner = Runner()
    out = as_message(process(msg), msg)
    headers = wire.outgoing_headers(parent, "enrich", "orders", message_id=out["id"],
                                    function="upsertContact", compId="enrich", start=1)
    body = keys.encrypt(out)
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json",
                                      content_encoding="utf8", message_id=out["id"],
                                      headers=headers)

    def frames() -> None:
        method = pika.spec.Basic.Publish(exchange="orders.enrich",
                                         routing_key="orders.enrich.message", mandatory=True)
        pika.frame.Method(1, method).marshal()
        pika.frame.Header(1, len(body), properties).marshal()
        pika.frame.Body(1, body).marshal()

    # A content header frame: type, channel, size, then class, weight, body size (12
    # bytes) and the properties; the frame end octet last.
    header_payload = pika.frame.Header(1, len(body), properties).marshal()[7:-1]

    def received() -> None:
        pika.spec.BasicProperties().decode(header_payload, 12)

    ours = amqp.Properties(delivery_mode=2, content_type="application/json",
                           content_encoding="utf8", message_id=out["id"], headers=headers)

    def our_frames() -> None:
        amqp.encode_publish(bytearray(), 1, "orders.enrich", "orders.enrich.message", body,
                            amqp.Properties(delivery_mode=2, content_type="application/json",
                                            content_encoding="utf8", message_id=out["id"],
                                            headers=headers), True)

    def our_received() -> None:
        amqp.Properties.decode(header_payload, 12)

    parts = [
        timed("decrypt + JSON of the input", lambda: wire.decode_data(keys, raw, parent), n),
        timed("the function (a dict in, a dict out)",
              lambda: runner.run(process, msg), n),
        timed("the output message (as_message)", lambda: as_message(process(msg), msg), n),
        timed("the output's headers (outgoing_headers)", lambda: wire.outgoing_headers(
            parent, "enrich", "orders", message_id=out["id"], function="upsertContact",
            compId="enrich", start=1), n),
        timed("JSON + encrypt of the output", lambda: keys.encrypt(out), n),
        timed("AMQP: one publish's frames (properties made, 3 frames)", our_frames, n),
        timed("AMQP: a delivery's properties and header table decoded", our_received, n),
    ]
    assert amqp.Properties.decode(header_payload, 12).headers == ours.headers
    reference = [
        timed("pika (until issue 22): one publish's frames", frames, n),
        timed("pika (until issue 22): a delivery's properties decoded", received, n),
    ]
    total = sum(us for _l, us in parts)
    rows = [("part", "us per message", "share", "", "")]
    rows += [(label, f"{us:.1f}", f"{us / total:.0%}", "", "") for label, us in parts]
    rows += [(label, f"{us:.1f}", "(not in total)", "", "") for label, us in reference]
    rows.append(("total (CPU in the sailor, no I/O)", f"{total:.1f}", "100%", "", ""))
    rows.append(("message sizes", f"body {len(raw)} B in, {len(body)} B out",
                 f"{len(headers)} headers", "", ""))
    print(render(rows))


if __name__ == "__main__":
    main()
