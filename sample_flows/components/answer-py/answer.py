"""Answers the HTTP request the message came from (the platform's `httpReply` event):
status `status` (default 200), the message's body (less `status`) as JSON."""


def process(msg, cfg, snapshot, ctx):
    body = dict(msg["body"])
    status = body.pop("status", 200)
    ctx.emit("httpReply", {"statusCode": status, "headers": {"x-answered-by": ctx.step_id},
                           "body": body})
    return body
