"""Reconcile: what should run (the Plan) against what runs (container labels).

Pure: no Docker here. Every action carries its cause, and a list of actions
prints as stable lines (`flowrun up --dry-run` and the golden tests read them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.observed import Observed
from flowrun.core.plan import Plan, RealStep


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
    SCALED_DOWN = "scaled down"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Action:
    """What to do about one container: one replica of one real step."""

    type: ActionType
    step: str
    cause: Cause
    detail: str = ""
    replica: int = 1
    replicated: bool = False  # the step runs (or ran) as several replicas

    @property
    def who(self) -> str:
        return names.replica_label(self.step, self.replica, self.replicated)

    def line(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.type.value:<9} {self.who:<28} {self.cause.value}{detail}"


def _decide(plan: Plan, step: RealStep, current: Observed | None,
            recreate: bool) -> tuple[ActionType, Cause, str]:
    if current is None:
        return ActionType.CREATE, Cause.MISSING, ""
    running_rev = current.labels.get(labels.REVISION, "")
    if recreate:
        return ActionType.RECREATE, Cause.FORCED, ""
    if running_rev != step.revision:
        return (ActionType.RECREATE, Cause.COMPONENT_CHANGED,
                f"{running_rev or '?'} -> {step.revision}")
    if current.labels.get(labels.CONFIG_HASH) != step.config_hash(plan.flow):
        return ActionType.RECREATE, Cause.CONFIG_CHANGED, ""
    if current.status in ("exited", "dead", "created"):
        cause = (Cause.STOPPED if current.exit_code in (0, 143) else
                 Cause.KILLED if current.exit_code == 137 and not current.oom_killed else
                 Cause.CRASHED)
        return ActionType.RECREATE, cause, f"exit code {current.exit_code}"
    return ActionType.KEEP, Cause.UNCHANGED, ""


def reconcile(plan: Plan, observed: Iterable[Observed], recreate: bool = False) -> list[Action]:
    """One action per planned replica of each step, then one per container left over."""
    by_replica = {(o.labels.get(labels.STEP, ""), labels.replica_of(o.labels)): o
                  for o in observed}
    actions: list[Action] = []
    for step in plan.steps:
        for replica in range(1, step.replicas + 1):
            current = by_replica.pop((step.id, replica), None)
            kind, cause, detail = _decide(plan, step, current, recreate)
            actions.append(Action(kind, step.id, cause, detail, replica, step.replicas > 1))
    left = sorted(by_replica)
    for step_id, replica in left:
        planned = plan.step(step_id)
        several = planned is not None or any(s == step_id and r > 1 for s, r in left)
        actions.append(Action(ActionType.REMOVE, step_id,
                              Cause.SCALED_DOWN if planned else Cause.ORPHAN,
                              replica=replica, replicated=several))
    return actions


def changes(actions: Sequence[Action]) -> list[Action]:
    return [a for a in actions if a.type is not ActionType.KEEP]


def actions_text(actions: Sequence[Action]) -> str:
    if not changes(actions):
        return "nothing to do: every real step runs its current revision and config"
    return "\n".join(a.line() for a in actions)
