"""`flowrun trace`: what happened to the latest messages of a flow, step by step."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from flowrun.broker.platform import Services, find_services
from flowrun.broker.server import find_broker
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import FlowFailed
from flowrun.render.trace import print_threads, threads_json


def _services(engine: ContainerEngine) -> Services:
    broker = find_broker(engine)
    services = find_services(engine, broker) if broker is not None else None
    if services is None:
        raise FlowFailed("the platform services are not running (they record the trace); "
                         "`flowrun up FLOW` starts them")
    return services


def show_trace(engine: ContainerEngine, flow: str, *, count: int, thread: str | None, follow: bool,
               full: bool, as_json: bool) -> None:
    services = _services(engine)
    answer = services.trace(flow, count, thread)
    if not answer.get("recording"):
        sys.stderr.write(f"flow {flow} is not recorded (`trace: false` in its flow file, "
                         "or it is not up)\n")
    threads = answer.get("threads") or []
    if not follow:
        if as_json:
            print(json.dumps({"flow": flow, "threads": threads_json(threads)}, indent=2))
        else:
            if not threads:
                print(f"no message recorded for {flow} yet")
            print_threads(threads, sys.stdout, full)
        return
    # Followed: a thread is shown once it has been quiet for a second (its tree is
    # then complete), and again if more of it comes later.
    shown: dict[str, int] = {t["threadId"]: len(t["records"]) for t in threads}
    try:
        while True:
            time.sleep(1.0)
            latest = services.trace(flow, 50, thread).get("threads") or []
            now_ms = time.time() * 1000
            for t in latest:
                records = t["records"]
                if shown.get(t["threadId"]) == len(records):
                    continue
                if now_ms - max(r.get("at", 0) for r in records) < 1000:
                    continue  # still moving
                shown[t["threadId"]] = len(records)
                _emit(t, full, as_json)
    except KeyboardInterrupt:
        return


def _emit(thread: dict[str, Any], full: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps(threads_json([thread])[0]), flush=True)
    else:
        print_threads([thread], sys.stdout, full)
