"""The mapper step: JSONata on msg.body (jsonata-python), compiled once per process."""

from __future__ import annotations

from typing import Any

import jsonata

_compiled: dict[str, Any] = {}


def init(cfg: dict[str, Any]) -> None:
    mapping = cfg.get("mapping")
    if isinstance(mapping, str):
        _compiled[""] = jsonata.Jsonata(mapping)
    elif isinstance(mapping, dict):
        for field, expression in mapping.items():
            _compiled[field] = jsonata.Jsonata(expression)


def process(msg: dict[str, Any], cfg: dict[str, Any], snapshot: Any, ctx: Any) -> None:
    body = msg.get("body")
    mapping = cfg.get("mapping")
    if mapping is None:
        result = body
    elif isinstance(mapping, str):
        result = _compiled[""].evaluate(body)
    else:
        result = {}
        for field in mapping:
            value = _compiled[field].evaluate(body)
            if value is not None:  # JSONata's "undefined": leave the field out
                result[field] = value
    ctx.emit("data", {"body": result})
