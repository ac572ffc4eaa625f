"""Where a message's CPU goes, by container: each real step, the broker and the
platform services, through 5 real steps, with trace recording on and off.

    python bench/profile.py [--messages N]

Pushes N messages as fast as they go through `bench-e2e` (recorded) and
`bench-notrace` (the same flow, unrecorded), twice each (on, off, off, on), and
reads each container's CPU time
(its cgroup's, from Docker) before and after: CPU microseconds per message per
container. The difference between the two runs is what recording costs (the
broker queueing the sailors' trace batches, the services reading them; with the
trace off the batches are sent all the same, to an exchange bound to nothing).
Prints a table and writes bench/results/profile.json. A tool for issue 22's work,
not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import COMPONENTS, RESULTS, chain_flow, flowrun, render, through  # noqa: E402
from flowrun.broker.server import BROKER_NAME, ensure_broker  # noqa: E402
from flowrun.contract import names  # noqa: E402
from flowrun.engine.adapter import Engine  # noqa: E402


def cpu_ns(engine: Engine, container: str) -> int:
    stats = engine.client.api.stats(container, stream=False)
    return int(stats["cpu_stats"]["cpu_usage"]["total_usage"])


def measure(engine: Engine, flow: str, steps: list[str], count: int) -> dict[str, Any]:
    containers = {s: names.container(flow, s) for s in steps}
    containers["broker"] = BROKER_NAME
    containers["services"] = names.SERVICES_CONTAINER
    through(flow, steps[-1], 200, None)  # warm: every step has loaded what it needs
    before = {k: cpu_ns(engine, c) for k, c in containers.items()}
    got, elapsed = through(flow, steps[-1], count, None)
    after = {k: cpu_ns(engine, c) for k, c in containers.items()}
    per_message = {k: (after[k] - before[k]) / 1000 / max(len(got), 1) for k in containers}
    return {"rate": len(got) / elapsed, "delivered": len(got), "sent": count,
            "cpu_us_per_message": per_message}


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Two measures of one flow as one: rates and CPU per message averaged."""
    keys = runs[0]["cpu_us_per_message"]
    return {"rate": sum(r["rate"] for r in runs) / len(runs),
            "delivered": sum(r["delivered"] for r in runs),
            "sent": sum(r["sent"] for r in runs),
            "cpu_us_per_message": {k: sum(r["cpu_us_per_message"][k] for r in runs) / len(runs)
                                   for k in keys},
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    args = parser.parse_args()
    engine = Engine()
    ensure_broker(engine)
    steps = ["s0", "mapper.s0.s1", "s1", "mapper.s1.s2", "s2"]
    with tempfile.TemporaryDirectory(prefix="flowrun-profile-") as tmp:
        t = Path(tmp)
        crm = t / "crm"
        shutil.copytree(COMPONENTS / "crm", crm)
        recorded = chain_flow(t, "bench-e2e", 5, crm)
        quiet = chain_flow(t, "bench-notrace", 5, crm, trace=False)
        flowrun("up", "-d", str(recorded))
        flowrun("up", "-d", str(quiet))
        try:
            # Each flow measured twice, in the order on, off, off, on: the flow measured
            # second came out about 20% slower in most runs (whichever it was), an
            # effect of the order larger than what recording costs.
            runs: dict[str, list[dict[str, Any]]] = {"recorded": [], "unrecorded": []}
            for which in ("recorded", "unrecorded", "unrecorded", "recorded"):
                flow = "bench-e2e" if which == "recorded" else "bench-notrace"
                runs[which].append(measure(engine, flow, steps, args.messages))
            found = {k: _mean(v) for k, v in runs.items()}
        finally:
            flowrun("down", "bench-e2e", "--purge", "--grace", "0")
            flowrun("down", "bench-notrace", "--purge", "--grace", "0")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "profile.json").write_text(json.dumps(found, indent=2))
    on, off = found["recorded"], found["unrecorded"]
    rows = [("container", "CPU us/message, trace on", "trace off", "on - off", "")]
    for key in on["cpu_us_per_message"]:
        a, b = on["cpu_us_per_message"][key], off["cpu_us_per_message"][key]
        rows.append((key, f"{a:.0f}", f"{b:.0f}", f"{a - b:+.0f}", ""))
    rows.append(("messages per second", f"{on['rate']:.0f}", f"{off['rate']:.0f}", "", ""))
    print(render(rows))


if __name__ == "__main__":
    main()
