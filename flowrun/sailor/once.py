"""`python3 -m flowrun.sailor.once`: a step's function called once, alone (`flowrun exec`).

Reads `{function, msg, cfg, snapshot, variables, flow, step}` as JSON on standard
input, runs the function's hooks and its `process` once, as the sailor would, and
writes each event it emitted (data, error, snapshot, rebound, httpReply, ...) as
one line `flowrun-exec: {"event": ..., "payload": ...}` on standard output. Anything
else the function prints is its log. No broker, no network: the container has none.
Exit 1 when process() raised.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from ..contract import wire
from .function import LoadError, Runner, as_message, load_function

MARKER = "flowrun-exec: "


class _Context:
    """`ctx` as a function sees it (sailor/runtime.py's), collecting its events."""

    def __init__(self, step: str, flow: str, variables: dict[str, Any]) -> None:
        self.step_id, self.flow_id, self.variables = step, flow, variables
        self.logger = self
        self.events: list[tuple[str, Any]] = []

    def info(self, text: str, *args: Any) -> None:
        print(str(text) % args if args else str(text), file=sys.stderr)

    warn = warning = debug = error = info

    def emit(self, event: str, payload: Any = None) -> None:
        self.events.append((event, payload))


def _error(e: BaseException) -> dict[str, Any]:
    return {"name": type(e).__name__, "message": str(e),
            "stack": "".join(traceback.format_exception(e))}


def main() -> int:
    given = json.loads(sys.stdin.read() or "{}")
    directory = os.environ.get("FLOWRUN_COMPONENT_DIR", "/app")
    msg = wire.data_message(given.get("body"))
    msg.update({k: v for k, v in (given.get("msg") or {}).items() if k in msg})
    cfg, snapshot = dict(given.get("cfg") or {}), given.get("snapshot") or {}
    ctx = _Context(str(given.get("step", "")), str(given.get("flow", "")),
                   dict(given.get("variables") or {}))
    real_stdout, sys.stdout = sys.stdout, sys.stderr  # its prints are its log
    runner = Runner()
    failed = False
    try:
        module, _spec = load_function(directory, str(given["function"]))
        for hook in ("init", "startup"):
            fn = getattr(module, hook, None)
            if callable(fn):
                runner.call_hook(fn, cfg)
        try:
            results = runner.run(module.process, msg, cfg, snapshot, ctx)
            ctx.events.extend(("data", r) for r in results)
        except Exception as e:  # the function's own failure: an error event
            ctx.events.append(("error", e))
            failed = True
    except LoadError as e:
        ctx.events.append(("error", e))
        failed = True
    finally:
        sys.stdout = real_stdout
        runner.close()
    for event, payload in ctx.events:
        if event == "data":
            payload = as_message(payload, msg)
        elif isinstance(payload, BaseException):
            payload = _error(payload)
            failed = True
        sys.stdout.write(MARKER + json.dumps({"event": event, "payload": payload},
                                             default=str) + "\n")
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
