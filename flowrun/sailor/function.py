"""Loading a component's function and turning whatever it does into outputs."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import types
from collections.abc import Awaitable, Callable
from typing import Any

from ..contract.wire import new_id

# asyncio and inspect are loaded when a function first needs them, not at every
# step's start: together they are a fifth of a sailor's boot on two busy cores.

MESSAGE_KEYS = {"id", "body", "attachments", "headers", "metadata", "passthrough"}


class LoadError(Exception):
    pass


def load_function(component_dir: str, function: str) -> tuple[Any, dict[str, Any]]:
    """Import the module named by component.json for `function`; return (module, spec)."""
    with open(os.path.join(component_dir, "component.json")) as f:
        descriptor = json.load(f)
    for group in ("triggers", "actions"):
        spec = (descriptor.get(group) or {}).get(function)
        if spec:
            break
    else:
        raise LoadError(f"function '{function}' is not in component.json")
    path = os.path.join(component_dir, spec["main"])
    if component_dir not in sys.path:
        sys.path.insert(0, component_dir)
    module_spec = importlib.util.spec_from_file_location(f"flowrun_fn_{function}", path)
    if module_spec is None or module_spec.loader is None:
        raise LoadError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "process", None)):
        raise LoadError(f"{spec['main']} defines no process(msg, cfg, snapshot, ctx)")
    return module, spec


def call_flexibly(fn: Callable[..., Any], *args: Any) -> Any:
    """Call with as many leading arguments as `fn` declares (process may take fewer)."""
    arity = _arity(fn)
    return fn(*args) if arity is None else fn(*args[:arity])


@functools.lru_cache(maxsize=64)
def _arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments `fn` takes; None for any number. Cached: the
    signature is read once per function, not once per message."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(1 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


class Runner:
    """Runs sync and async functions alike on one long-lived event loop."""

    def __init__(self) -> None:
        self._loop: Any = None  # made for the first async function

    def _complete(self, awaitable: Any) -> Any:
        if self._loop is None:
            import asyncio

            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(awaitable)

    def run(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """Call and collect every value it returns or yields, in order."""
        result = call_flexibly(fn, *args)
        if isinstance(result, Awaitable):
            result = self._complete(result)
        if isinstance(result, types.AsyncGeneratorType):
            return list(self._complete(_drain_async(result)))
        if result is None:
            return []
        if isinstance(result, dict):
            return [result]
        if isinstance(result, (types.GeneratorType, list, tuple)):
            return [r for r in result if r is not None]
        return [result]

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()

    def call_hook(self, fn: Callable[..., Any], *args: Any) -> Any:
        result = call_flexibly(fn, *args)
        if isinstance(result, Awaitable):
            result = self._complete(result)
        return result


async def _drain_async(agen: Any) -> list[Any]:
    return [item async for item in agen if item is not None]


def as_message(value: Any, parent: dict[str, Any] | None) -> dict[str, Any]:
    """A returned value or an emitted payload as a full message.

    A dict whose keys are all message keys and that has `body` is taken as a
    message; anything else is the body of a new message. Headers and
    passthrough follow the input message, so a trace survives every step.
    """
    if isinstance(value, dict) and "body" in value and set(value) <= MESSAGE_KEYS:
        message = dict(value)
    else:
        message = {"body": value}
    message.setdefault("id", new_id())
    message.setdefault("attachments", {})
    message.setdefault("metadata", {})
    inherited = parent or {}
    message["headers"] = {**(inherited.get("headers") or {}), **(message.get("headers") or {})}
    message.setdefault("passthrough", inherited.get("passthrough") or {})
    return message
