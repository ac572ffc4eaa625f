"""The mapper step: JSONata on msg.body (jsonata-python), compiled once per process.

Compiled with the first message, not at the step's start: half of a flow's real
steps are mappers, and importing jsonata is a third of a sailor's boot. (The
expressions were checked already, when the flow file was planned.)
"""

from __future__ import annotations

from typing import Any

_compiled: dict[str, Any] = {}


def _expression(key: str, text: str) -> Any:
    compiled = _compiled.get(key)
    if compiled is None:
        import jsonata

        compiled = _compiled[key] = jsonata.Jsonata(text)
    return compiled


def process(msg: dict[str, Any], cfg: dict[str, Any], snapshot: Any, ctx: Any) -> None:
    body = msg.get("body")
    mapping = cfg.get("mapping")
    if mapping is None:
        result = body
    elif isinstance(mapping, str):
        result = _expression("", mapping).evaluate(body)
    else:
        result = {}
        for field, expression in mapping.items():
            value = _expression(field, expression).evaluate(body)
            if value is not None:  # JSONata's "undefined": leave the field out
                result[field] = value
    ctx.emit("data", {"body": result})
