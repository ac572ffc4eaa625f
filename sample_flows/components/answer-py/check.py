"""Passes a request on, or fails it: `fail: <text>` raises (the caller gets a 502
naming this step), `silent: true` emits nothing (the caller waits, then gets a 504)."""


def process(msg):
    body = msg["body"]
    if body.get("fail"):
        raise ValueError(f"refused: {body['fail']}")
    if body.get("silent"):
        return None
    return {**body, "checked": True}
