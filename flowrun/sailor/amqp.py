"""pika, imported without its asyncio adapter.

pika's package imports every adapter it ships, and with the asyncio one asyncio
itself: 12 ms of the 75 ms from a sailor's start to live, and every step of a
flow starts at once on two cores. The sailor uses the blocking adapter only, so
that one module is held back while pika is imported. It stays importable: a
component that wants it gets the real module (`pika.adapters.AsyncioConnection`
loads it on first use).
"""

from __future__ import annotations

import sys
import types
from typing import Any

_HELD_BACK = "pika.adapters.asyncio_connection"


def _import_pika() -> Any:
    if "pika" in sys.modules:  # imported already (the platform services, a test)
        return sys.modules["pika"]
    placeholder = types.ModuleType(_HELD_BACK)
    placeholder.AsyncioConnection = None  # type: ignore[attr-defined]
    sys.modules[_HELD_BACK] = placeholder
    try:
        import pika.adapters
    finally:
        del sys.modules[_HELD_BACK]
    del pika.adapters.AsyncioConnection

    def load_on_use(name: str) -> Any:
        if name == "AsyncioConnection":
            from pika.adapters.asyncio_connection import AsyncioConnection

            return AsyncioConnection
        raise AttributeError(f"module 'pika.adapters' has no attribute {name!r}")

    pika.adapters.__getattr__ = load_on_use
    return pika


pika = _import_pika()
