"""The executor only executes: each action becomes exactly one call of the kind it
names (a replicated step's new revision one rolling replacement), and the flow's
topology and users are made alongside, every time."""

from __future__ import annotations

import queue
from dataclasses import replace
from typing import Any

from flowrun.core.reconcile import Action, ActionType, Cause
from flowrun.supervise.events import Event
from flowrun.supervise.executor import Executor
from tests.conftest import ROOT, plan_of

PLAN = plan_of(ROOT / "sample_flows" / "orders.yaml", revision="rev1")


def _dispatched(plan: Any, actions: list[Action]) -> list[tuple[Any, ...]]:
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    executor = Executor(engine=None, events=events)  # type: ignore[arg-type]
    calls: list[tuple[Any, ...]] = []
    executor._prepare_flow = lambda p: calls.append(("topology", p.flow))  # type: ignore
    executor._replace = lambda p, s, i, g, replica=1, missing=False, creating=None: (  # type: ignore
        calls.append(
        ("replace", s.id, replica, missing)))
    executor._roll = lambda p, s, i, g, replicas: calls.append(  # type: ignore
        ("roll", s.id, tuple(replicas)))
    executor._remove = lambda f, s, r, g: calls.append(("remove", s, r))  # type: ignore
    starts = [a for a in actions if a.type in (ActionType.CREATE, ActionType.RECREATE)]
    removals = [a for a in actions if a.type is ActionType.REMOVE]
    executor._start_steps(plan, starts, removals, grace=1.0)
    return sorted(calls, key=str)


def test_each_action_is_one_call_of_its_kind() -> None:
    actions = [Action(ActionType.CREATE, "fetch", Cause.MISSING),
               Action(ActionType.RECREATE, "enrich", Cause.CONFIG_CHANGED),
               Action(ActionType.KEEP, "notify", Cause.UNCHANGED),
               Action(ActionType.REMOVE, "gone", Cause.ORPHAN)]
    assert _dispatched(PLAN, actions) == sorted([
        ("topology", "orders"), ("replace", "fetch", 1, True),
        ("replace", "enrich", 1, False), ("remove", "gone", 1)], key=str)


def test_a_replicated_steps_new_revision_rolls_and_a_new_replica_starts() -> None:
    steps = tuple(replace(s, replicas=3) if s.id == "enrich" else s for s in PLAN.steps)
    plan = replace(PLAN, steps=steps)
    actions = [Action(ActionType.RECREATE, "enrich", Cause.COMPONENT_CHANGED, replica=r,
                      replicated=True) for r in (1, 2)]
    actions.append(Action(ActionType.CREATE, "enrich", Cause.MISSING, replica=3,
                          replicated=True))
    assert _dispatched(plan, actions) == sorted([
        ("topology", "orders"), ("roll", "enrich", (1, 2)),
        ("replace", "enrich", 3, True)], key=str)


def test_nothing_to_start_still_makes_the_topology() -> None:
    assert _dispatched(PLAN, []) == [("topology", "orders")]
