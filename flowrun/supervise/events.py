"""Small frozen events. Builders, followers and watchers only put these on one queue;
the supervisor's loop is the only reader, and the only code that changes state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Phase(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    STARTING = "starting"
    WARMING = "warming"
    LIVE = "live"
    CRASHED = "crashed"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StepPhase:
    step: str
    phase: Phase
    detail: str = ""
    replica: int = 1  # which of a replicated step's containers


@dataclass(frozen=True)
class BuildOutput:
    component: str
    line: str


@dataclass(frozen=True)
class StepLog:
    step: str
    line: str
    replica: int = 1


@dataclass(frozen=True)
class Notice:
    text: str
    level: Literal["info", "warning", "error"] = "info"


@dataclass(frozen=True)
class Webhook(Notice):
    """The flow is called over HTTP at `url` (said as a notice, kept for the summary)."""

    url: str = ""


@dataclass(frozen=True)
class ApplyDone:
    """The executor finished a batch of actions (or failed, with `error`)."""

    error: str | None = None


@dataclass(frozen=True)
class ComponentsChanged:
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Interrupted:
    count: int


@dataclass(frozen=True)
class ContainerGone:
    """Docker says a step's container died or was removed (by anyone, us included):
    the supervisor looks again once its backoff allows, and heals what differs."""

    step: str
    how: Literal["died", "removed"]


@dataclass(frozen=True)
class BrokerGone:
    """The broker's container died or was removed."""


@dataclass(frozen=True)
class Stopped:
    """Taking the flow down (after an interrupt) has ended."""


Event = (StepPhase | BuildOutput | StepLog | Notice | Webhook | ApplyDone | ComponentsChanged
         | Interrupted | ContainerGone | BrokerGone | Stopped)
