"""Called once per HTTP request to the flow: `msg` is the gateway's message."""


def process(msg):
    body = msg["body"] if isinstance(msg.get("body"), dict) else {"value": msg.get("body")}
    return {**body, "_method": msg.get("method"), "_query": msg.get("query") or {},
            "_additionalUrlPath": msg.get("additionalUrlPath") or ""}
