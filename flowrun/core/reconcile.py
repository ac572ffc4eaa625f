"""Reconcile: what should run (the Plan) against what runs (container labels).

Pure: no Docker here. Every action carries its cause, and a list of actions
prints as stable lines (`flowrun up --dry-run` and the golden tests read them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from flowrun.core import labels
from flowrun.core.observed import Observed
from flowrun.core.plan import Plan


class ActionType(StrEnum):
    CREATE = "create"
    RECREATE = "recreate"
    REMOVE = "remove"
    KEEP = "keep"


class Cause(StrEnum):
    MISSING = "missing"
    COMPONENT_CHANGED = "component changed"
    CONFIG_CHANGED = "config changed"
    CRASHED = "crashed"
    KILLED = "killed"
    STOPPED = "stopped"
    REMOVED = "removed"
    FORCED = "--recreate"
    ORPHAN = "no longer in the flow"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Action:
    type: ActionType
    step: str
    cause: Cause
    detail: str = ""

    def line(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.type.value:<9} {self.step:<28} {self.cause.value}{detail}"


def reconcile(plan: Plan, observed: Iterable[Observed], recreate: bool = False) -> list[Action]:
    by_step = {o.labels.get(labels.STEP, ""): o for o in observed}
    actions: list[Action] = []
    for step in plan.steps:
        current = by_step.pop(step.id, None)
        if current is None:
            actions.append(Action(ActionType.CREATE, step.id, Cause.MISSING))
            continue
        running_rev = current.labels.get(labels.REVISION, "")
        if recreate:
            actions.append(Action(ActionType.RECREATE, step.id, Cause.FORCED))
        elif running_rev != step.revision:
            actions.append(Action(ActionType.RECREATE, step.id, Cause.COMPONENT_CHANGED,
                                  f"{running_rev or '?'} -> {step.revision}"))
        elif current.labels.get(labels.CONFIG_HASH) != step.config_hash(plan.flow):
            actions.append(Action(ActionType.RECREATE, step.id, Cause.CONFIG_CHANGED))
        elif current.status in ("exited", "dead", "created"):
            cause = (Cause.STOPPED if current.exit_code in (0, 143) else
                     Cause.KILLED if current.exit_code == 137 and not current.oom_killed else
                     Cause.CRASHED)
            actions.append(Action(ActionType.RECREATE, step.id, cause,
                                  f"exit code {current.exit_code}"))
        else:
            actions.append(Action(ActionType.KEEP, step.id, Cause.UNCHANGED))
    for step_id in sorted(by_step):
        actions.append(Action(ActionType.REMOVE, step_id, Cause.ORPHAN))
    return actions


def changes(actions: Sequence[Action]) -> list[Action]:
    return [a for a in actions if a.type is not ActionType.KEEP]


def actions_text(actions: Sequence[Action]) -> str:
    if not changes(actions):
        return "nothing to do: every real step runs its current revision and config"
    return "\n".join(a.line() for a in actions)
