"""Renderers fed a scripted event history, compared with what they print."""

from __future__ import annotations

import io
import json

from flowrun.commands.status import FlowStatus, StepStatus
from flowrun.render.renderers import JsonRenderer, PlainRenderer, print_status
from flowrun.supervise.events import BuildOutput, Notice, Phase, StepLog, StepPhase
from flowrun.supervise.state import FlowState, StepState

HISTORY = [
    (0.0, StepPhase("fetch", Phase.BUILDING, "shop")),
    (0.5, BuildOutput("shop", "Step 1/9 : FROM base")),
    (1.0, StepPhase("fetch", Phase.STARTING)),
    (1.2, StepLog("fetch", "flowrun-sailor: live step=fetch")),
    (1.2, StepPhase("fetch", Phase.LIVE)),
    (1.3, Notice("1 real steps live in 1.3 s")),
]


def feed(renderer: PlainRenderer | JsonRenderer) -> None:
    s = FlowState("orders", 0.0, {"fetch": StepState("fetch", "trigger")})
    renderer.begin(s)
    for t, event in HISTORY:
        renderer.event(event, s, t)


def test_plain_renderer_prints_one_line_per_change() -> None:
    out = io.StringIO()
    feed(PlainRenderer(out))
    assert out.getvalue().splitlines() == [
        "flowrun: orders: 1 real steps",
        "[   0.0s] fetch                        building (shop)",
        "build shop               | Step 1/9 : FROM base",
        "[   1.0s] fetch                        starting",
        "fetch                    | flowrun-sailor: live step=fetch",
        "[   1.2s] fetch                        live",
        "[   1.3s] 1 real steps live in 1.3 s",
    ]


def test_json_renderer_emits_one_object_per_event() -> None:
    out = io.StringIO()
    feed(JsonRenderer(out))
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0] == {"event": "begin", "flow": "orders", "steps": ["fetch"]}
    assert [r["event"] for r in records[1:]] == ["phase", "build", "phase", "log", "phase",
                                                 "notice"]
    assert records[5] == {"elapsed": 1.2, "event": "phase", "step": "fetch", "replica": 1,
                          "phase": "live", "detail": ""}


def test_status_table_flags_stale_leaking_and_crash_looping_steps() -> None:
    step = StepStatus(step="enrich", kind="action", component="crm", function="upsert",
                      revision="abc", state="running", live=False, uptime=3.0, restarts=4,
                      last_exit="exit code 1", waiting=2, in_flight=0, processed=10, errors=1,
                      stale="runs abc, disk has def: redeploy with `flowrun up f.yaml`",
                      leak=None, crash_looping=True, last_lines=("boom",))
    out = io.StringIO()
    print_status(FlowStatus("orders", "f.yaml", [step], errors_queued=1, dead_letters=2), out)
    text = out.getvalue()
    assert "enrich  action  crm:upsert  abc  running  no    3s  4" in text
    assert "CRASH-LOOPING: restarted 4x, last exit code 1" in text
    assert "    boom" in text
    assert "STALE: runs abc, disk has def" in text
    assert "2 dead-lettered message(s) in orders:dead" in text
