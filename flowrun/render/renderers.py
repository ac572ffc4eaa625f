"""Rendering: the only module that prints progress. TTY (rich), plain, and JSON."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from flowrun.contract import names
from flowrun.core.logline import readable
from flowrun.supervise.events import (
    ApplyDone,
    BuildOutput,
    ComponentsChanged,
    Event,
    Interrupted,
    Notice,
    Phase,
    StepLog,
    StepPhase,
)
from flowrun.supervise.state import FlowState

PREFIX_WIDTH = 24


def prefix(step: str, width: int = PREFIX_WIDTH) -> str:
    return f"{step[:width]:<{width}} | "


class PlainRenderer:
    """One line per change; for pipes, files and CI logs."""

    def __init__(self, out: TextIO | None = None, build_output: bool = True) -> None:
        self.out = out or sys.stdout
        self.build_output = build_output

    def begin(self, state: FlowState) -> None:
        self._print(f"flowrun: {state.flow}: {len(state.steps)} real steps")

    def event(self, event: Event, state: FlowState, now: float) -> None:
        t = f"[{state.elapsed(now):6.1f}s]"
        if isinstance(event, StepPhase):
            detail = f" ({event.detail})" if event.detail else ""
            who = state.who(event.step, event.replica)
            self._print(f"{t} {who:<28} {event.phase.value}{detail}")
        elif isinstance(event, StepLog):
            self._print(prefix(state.who(event.step, event.replica)) + readable(event.line))
        elif isinstance(event, BuildOutput):
            if self.build_output:
                self._print(prefix(f"build {event.component}") + event.line)
        elif isinstance(event, Notice):
            mark = {"info": "", "warning": "warning: ", "error": "error: "}[event.level]
            self._print(f"{t} {mark}{event.text}")
        elif isinstance(event, ComponentsChanged):
            self._print(f"{t} changed: {', '.join(event.paths)}")

    def close(self, state: FlowState) -> None:
        self.out.flush()

    def _print(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


class JsonRenderer:
    """One JSON object per line, for machines (`--progress json`)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def begin(self, state: FlowState) -> None:
        self._emit({"event": "begin", "flow": state.flow, "steps": list(state.steps)})

    def event(self, event: Event, state: FlowState, now: float) -> None:
        record: dict[str, Any] = {"elapsed": round(state.elapsed(now), 3)}
        if isinstance(event, StepPhase):
            record |= {"event": "phase", "step": event.step, "replica": event.replica,
                       "phase": event.phase.value, "detail": event.detail}
        elif isinstance(event, StepLog):
            record |= {"event": "log", "step": event.step, "replica": event.replica,
                       "line": event.line}
        elif isinstance(event, BuildOutput):
            record |= {"event": "build", "component": event.component, "line": event.line}
        elif isinstance(event, Notice):
            record |= {"event": "notice", "level": event.level, "text": event.text}
        elif isinstance(event, ApplyDone):
            record |= {"event": "applied", "error": event.error}
        elif isinstance(event, ComponentsChanged):
            record |= {"event": "changed", "paths": list(event.paths)}
        elif isinstance(event, Interrupted):
            record |= {"event": "interrupted", "count": event.count}
        self._emit(record)

    def close(self, state: FlowState) -> None:
        self.out.flush()

    def _emit(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()


_PHASE_STYLE = {
    Phase.PENDING: "dim", Phase.BUILDING: "yellow", Phase.STARTING: "cyan",
    Phase.WARMING: "cyan", Phase.LIVE: "bold green", Phase.CRASHED: "bold red",
    Phase.STOPPING: "magenta", Phase.STOPPED: "dim",
}


class RichRenderer:
    """A live table of steps while warming up; then logs, prefixed by step."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console()
        self.live: Any = None
        self.state: FlowState | None = None
        self.last_build: dict[str, str] = {}

    def begin(self, state: FlowState) -> None:
        from rich.live import Live

        self.state = state
        # Rendered on each refresh, not only on events, so the clocks keep running.
        self.live = Live(console=self.console, refresh_per_second=4, transient=False,
                         get_renderable=lambda: self._table(state, time.monotonic()))
        self.live.start()

    def _table(self, state: FlowState, now: float) -> Any:
        from rich.table import Table

        table = Table(title=f"flowrun · {state.flow}", title_justify="left", expand=False)
        table.add_column("step")
        table.add_column("kind", style="dim")
        table.add_column("phase")
        table.add_column("for", justify="right")
        table.add_column("detail", overflow="ellipsis", max_width=60)
        for step in state.steps.values():
            style = _PHASE_STYLE.get(step.phase, "")
            detail = step.detail
            if step.phase is Phase.BUILDING:
                detail = self.last_build.get(step.detail, detail)
            shown = step.step + (f" ×{step.replicas}" if step.replicas > 1 else "")
            table.add_row(shown, step.kind, f"[{style}]{step.phase.value}[/]",
                          f"{max(now - step.since, 0):.1f}s", detail)
        table.caption = f"elapsed {state.elapsed(now):.1f}s"
        return table

    def event(self, event: Event, state: FlowState, now: float) -> None:
        if isinstance(event, BuildOutput):
            self.last_build[event.component] = event.line.strip()
        elif isinstance(event, StepLog):
            who = state.who(event.step, event.replica)
            self.console.print(f"[dim]{prefix(who)}[/]{_escape(readable(event.line))}",
                               highlight=False)
        elif isinstance(event, Notice):
            style = {"info": "bold", "warning": "yellow", "error": "bold red"}[event.level]
            self.console.print(f"[{style}]{_escape(event.text)}[/]")
        if self.live is not None:
            self.live.refresh()

    def close(self, state: FlowState) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def choose(progress: str, is_tty: bool, ci: bool) -> PlainRenderer | JsonRenderer | RichRenderer:
    if progress == "json":
        return JsonRenderer()
    if progress == "plain" or not is_tty or ci:
        return PlainRenderer()
    return RichRenderer()


# ---------------------------------------------------------------- plan and status

def print_plan(plan: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    out.write(f"flow {plan.flow} ({plan.source}): {len(plan.steps)} real steps\n")
    header = (f"{'#':>2} {'step':<28} {'kind':<7} {'runtime':<6} {'component:function':<28} "
              "input -> output")
    out.write(header + "\n")
    for line in plan.lines():
        out.write(line + "\n")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def print_status(status: Any, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    replicated = any(s.replicas > 1 for s in status.steps)
    on_nodes = any(s.node for s in status.steps)  # a swarm
    rows = [("step", "kind", "component", "rev", "state", "live",
             *(("replicas",) if replicated else ()), *(("node",) if on_nodes else ()),
             "up", "restarts", "waiting", "processed", "errors")]
    for s in status.steps:
        rows.append((s.step, s.kind, f"{s.component}:{s.function}", s.revision,
                     s.state, "yes" if s.live else "no",
                     *((f"{s.replicas_live}/{s.replicas} live",) if replicated else ()),
                     *((s.node or "-",) if on_nodes else ()),
                     _age(s.uptime), str(s.restarts),
                     _n(s.waiting), _n(s.processed), _n(s.errors)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out.write(f"flow {status.flow}  ({status.source})\n")
    if status.webhook:
        out.write(f"  called over HTTP: POST or GET {status.webhook}\n")
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                  + "\n")
    notes = []
    for s in status.steps:
        if s.crash_looping:
            last = f", last {s.last_exit}" if s.last_exit else ""
            notes.append(f"{s.step}: CRASH-LOOPING: restarted {s.restarts}x{last}; "
                         f"its last lines:")
            notes.extend(f"    {readable(line)}" for line in s.last_lines)
        elif s.restarts:
            last = f", last {s.last_exit}" if s.last_exit else ""
            notes.append(f"{s.step}: restarted {s.restarts}x{last}")
        elif s.last_exit and not s.why:
            notes.append(f"{s.step}: {s.state}, {s.last_exit}")
        if s.why and not s.crash_looping:
            notes.append(f"{s.step}: {s.state.upper()}: {s.why}")
        if s.remedy:
            notes.append(f"{s.step}: to bring it back: {s.remedy}")
        for each in s.each:
            if not each["live"]:
                notes.append(f"{s.step}#{each['replica']}: {each['state']}, not live "
                             f"({each['container']})")
        if s.stale:
            notes.append(f"{s.step}: STALE: {s.stale}")
        if s.leak:
            notes.append(f"{s.step}: LEAK: {s.leak}; create the listener once, not per call")
    if status.errors_queued:
        notes.append(f"{status.errors_queued} error event(s) in {names.error_queue(status.flow)}")
    if status.dead_letters:
        dead = names.dead_letter_queue(status.flow)
        notes.append(f"{status.dead_letters} dead-lettered message(s) in {dead}")
    for note in notes:
        out.write(f"  ! {note}\n")
    out.flush()
