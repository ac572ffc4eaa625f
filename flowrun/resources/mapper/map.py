"""The mapper step: JSONata on msg.body (jsonata-python), compiled once per process.

Compiled with the first message, not at the step's start: half of a flow's real
steps are mappers, and importing jsonata is a third of a sailor's boot. (The
expressions were checked already, when the flow file was planned.)

As the platform's JSONata helper does, an expression may call `$getPassthrough()`
(what the steps before kept in `msg.passthrough`, when the flow has passthrough
on) and `$getFlowVariables()`.
"""

from __future__ import annotations

from typing import Any

_compiled: dict[str, Any] = {}
# The message being mapped and the flow's variables, for the functions above: a
# mapper maps one message at a time, on the sailor's main thread.
_current: dict[str, Any] = {"passthrough": {}, "variables": {}}


def _expression(key: str, text: str) -> Any:
    compiled = _compiled.get(key)
    if compiled is None:
        import jsonata

        compiled = _compiled[key] = jsonata.Jsonata(text)
        compiled.register_lambda("getPassthrough", lambda: _current["passthrough"])
        compiled.register_lambda("getFlowVariables", lambda: _current["variables"])
    return compiled


def process(msg: dict[str, Any], cfg: dict[str, Any], snapshot: Any, ctx: Any) -> None:
    body = msg.get("body")
    mapping = cfg.get("mapping")
    _current["passthrough"] = msg.get("passthrough") or {}
    _current["variables"] = getattr(ctx, "variables", None) or {}
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
