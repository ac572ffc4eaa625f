"""What the supervisor knows of a flow while `up` runs, and what renders it.

Apart from the supervisor so that renderers read the state without importing
the loop that changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from flowrun.supervise.events import Event, Phase

LAST_LINES = 10


@dataclass
class StepState:
    step: str
    kind: str
    phase: Phase = Phase.PENDING
    detail: str = ""
    since: float = 0.0
    live_at: float | None = None
    crashes: int = 0
    last_lines: list[str] = field(default_factory=list)


@dataclass
class FlowState:
    flow: str
    started: float
    steps: dict[str, StepState]

    def elapsed(self, now: float) -> float:
        return now - self.started

    def pending(self) -> list[str]:
        return [s.step for s in self.steps.values() if s.phase is not Phase.LIVE]


class Renderer(Protocol):
    def begin(self, state: FlowState) -> None: ...
    def event(self, event: Event, state: FlowState, now: float) -> None: ...
    def close(self, state: FlowState) -> None: ...
