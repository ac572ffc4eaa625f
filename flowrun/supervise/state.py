"""What the supervisor knows of a flow while `up` runs, and what renders it.

Apart from the supervisor so that renderers read the state without importing
the loop that changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from flowrun.contract import names
from flowrun.supervise.events import Event, Phase

LAST_LINES = 10


@dataclass
class StepState:
    """One real step. A replicated step is live when every replica is; until then its
    phase is that of the replica furthest behind, and its detail says how many are."""

    step: str
    kind: str
    phase: Phase = Phase.PENDING
    detail: str = ""
    since: float = 0.0
    live_at: float | None = None
    crashes: int = 0
    last_lines: list[str] = field(default_factory=list)
    replicas: int = 1
    replica_phases: dict[int, Phase] = field(default_factory=dict)

    def set_phase(self, replica: int, phase: Phase, detail: str, now: float) -> None:
        if replica > self.replicas:
            # A replica beyond the planned count is on its way out (scaled down): said
            # as it goes, no part of the step's own phase.
            self.replica_phases.pop(replica, None)
            return
        if phase is Phase.CRASHED:
            self.crashes += 1
        self.replica_phases[replica] = phase
        if self.replicas > 1:
            detail = self._summary(replica, phase, detail)
            phase = self._slowest()
        if phase is Phase.LIVE and self.live_at is None:
            self.live_at = now
        if phase is not Phase.LIVE:
            self.live_at = None
        self.phase, self.detail, self.since = phase, detail, now

    def replica_live(self, replica: int) -> bool:
        return self.replica_phases.get(replica) is Phase.LIVE

    def _slowest(self) -> Phase:
        phases = [self.replica_phases.get(r, Phase.PENDING) for r in range(1, self.replicas + 1)]
        for bad in (Phase.CRASHED, Phase.STOPPED, Phase.STOPPING):
            if bad in phases:
                return bad
        return min(phases, key=_ORDER.index)

    def _summary(self, replica: int, phase: Phase, detail: str) -> str:
        live = sum(self.replica_live(r) for r in range(1, self.replicas + 1))
        about = f"; #{replica} {phase.value}" + (f": {detail}" if detail else "")
        return f"{live}/{self.replicas} live" + ("" if live == self.replicas else about)


_ORDER = [Phase.PENDING, Phase.BUILDING, Phase.STARTING, Phase.WARMING, Phase.LIVE]


@dataclass
class FlowState:
    flow: str
    started: float
    steps: dict[str, StepState]
    webhook: str | None = None  # where the flow is called over HTTP

    def elapsed(self, now: float) -> float:
        return now - self.started

    def who(self, step: str, replica: int) -> str:
        """`enrich`, or `enrich#2` for one replica of a replicated step."""
        state = self.steps.get(step)
        return names.replica_label(step, replica, state is not None and state.replicas > 1)

    def pending(self) -> list[str]:
        return [s.step for s in self.steps.values() if s.phase is not Phase.LIVE]


class Renderer(Protocol):
    def begin(self, state: FlowState) -> None: ...
    def event(self, event: Event, state: FlowState, now: float) -> None: ...
    def close(self, state: FlowState) -> None: ...
