"""A real-time trigger: process() is called again and again in the same process.

Module state (the counter) survives between calls, which is how a real-time
trigger keeps track of what it has already emitted.
"""

NAMES = [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing"), ("Edsger", "Dijkstra")]
emitted = 0


def process(msg, cfg, snapshot, ctx):
    global emitted
    limit = int(cfg.get("limit", 5))
    if emitted >= limit:
        return None
    first, last = NAMES[emitted % len(NAMES)]
    emitted += 1
    ctx.logger.info("new order %s", emitted)
    return {
        "id": f"order-{emitted}",
        "customer": {"first": first, "last": last, "email": f"{first.lower()}@example.org"},
        "items": [{"sku": "book", "price": 12.5}, {"sku": "pen", "price": 2.5}],
    }
