"""`flowrun logs`: one step's output, or every step's interleaved with prefixes."""

from __future__ import annotations

import queue
import sys
import threading
from collections import Counter
from datetime import datetime

from flowrun.commands.status import flow_containers
from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.logline import readable
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import BadInput
from flowrun.render.renderers import prefix
from flowrun.supervise.events import StepLog
from flowrun.supervise.followers import Follower


def show_logs(engine: ContainerEngine, flow: str, step: str | None, *, follow: bool,
              tail: int | str, since: datetime | None, timestamps: bool,
              raw: bool = False) -> None:
    """`raw`: the platform sailor's JSON lines as they are, not as LEVEL message."""
    shown = (lambda line: line) if raw else readable
    observed = flow_containers(engine, flow)
    steps = list(dict.fromkeys(o.labels.get(labels.STEP, o.name) for o in observed))
    if step is not None and step not in steps:
        raise BadInput(f"flow {flow} has no step '{step}'; its steps: {', '.join(steps)}")
    # One source per container: a replicated step's replicas are read as `step#n`.
    counts = Counter(o.labels.get(labels.STEP, o.name) for o in observed)
    chosen = [(o.name, o.labels.get(labels.STEP, o.name), labels.replica_of(o.labels))
              for o in observed if step is None or o.labels.get(labels.STEP) == step]
    many = len(chosen) > 1

    def who(s: str, replica: int) -> str:
        return names.replica_label(s, replica, counts[s] > 1)

    out = sys.stdout
    if not follow:
        for name, s, replica in chosen:
            for line in engine.logs(name, tail=tail, since=since, timestamps=timestamps):
                out.write((prefix(who(s, replica)) if many else "") + shown(line) + "\n")
        out.flush()
        return
    # Followed: one follower per container re-attaches after every restart; one loop
    # prints.
    lines: queue.Queue[object] = queue.Queue()
    stop = threading.Event()
    for name, s, replica in chosen:
        if tail != "all" or since is not None:
            for line in engine.logs(name, tail=tail, since=since, timestamps=timestamps):
                out.write((prefix(who(s, replica)) if many else "") + shown(line) + "\n")
        Follower(engine, name, s, lines.put, stop,
                 from_now=tail != "all" or since is not None, timestamps=timestamps,
                 outlive=True, replica=replica).start()
    try:
        while True:
            event = lines.get()
            if isinstance(event, StepLog):
                out.write((prefix(who(event.step, event.replica)) if many else "")
                          + shown(event.line) + "\n")
                out.flush()
    except KeyboardInterrupt:
        stop.set()
