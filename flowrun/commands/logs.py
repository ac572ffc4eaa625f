"""`flowrun logs`: one step's output, or every step's interleaved with prefixes."""

from __future__ import annotations

import queue
import sys
import threading
from datetime import datetime

from flowrun.commands.status import flow_containers
from flowrun.core import labels, names
from flowrun.core.logline import readable
from flowrun.engine.adapter import Engine
from flowrun.errors import BadInput
from flowrun.render.renderers import prefix
from flowrun.supervise.events import StepLog
from flowrun.supervise.followers import Follower


def show_logs(engine: Engine, flow: str, step: str | None, *, follow: bool,
              tail: int | str, since: datetime | None, timestamps: bool,
              raw: bool = False) -> None:
    """`raw`: the platform sailor's JSON lines as they are, not as LEVEL message."""
    shown = (lambda line: line) if raw else readable
    observed = flow_containers(engine, flow)
    steps = [o.labels.get(labels.STEP, o.name) for o in observed]
    if step is not None and step not in steps:
        raise BadInput(f"flow {flow} has no step '{step}'; its steps: {', '.join(steps)}")
    chosen = [step] if step else steps
    many = len(chosen) > 1
    out = sys.stdout
    if not follow:
        for s in chosen:
            for line in engine.logs(names.container(flow, s), tail=tail, since=since,
                                    timestamps=timestamps):
                out.write((prefix(s) if many else "") + shown(line) + "\n")
        out.flush()
        return
    # Followed: one follower per step re-attaches after every restart; one loop prints.
    lines: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    for s in chosen:
        if tail != "all" or since is not None:
            for line in engine.logs(names.container(flow, s), tail=tail, since=since,
                                    timestamps=timestamps):
                out.write((prefix(s) if many else "") + shown(line) + "\n")
        Follower(engine, names.container(flow, s), s, lines.put, stop,
                 from_now=tail != "all" or since is not None, timestamps=timestamps,
                 outlive=True).start()
    try:
        while True:
            event = lines.get()
            if isinstance(event, StepLog):
                out.write((prefix(event.step) if many else "") + shown(event.line) + "\n")
                out.flush()
    except KeyboardInterrupt:
        stop.set()
