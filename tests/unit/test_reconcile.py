"""Reconcile against hand-written observations: no Docker."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from flowrun.core import labels
from flowrun.core.observed import Observed
from flowrun.core.reconcile import ActionType, Cause, actions_text, reconcile
from tests.conftest import ROOT, plan_of

PLAN = plan_of(ROOT / "sample_flows" / "orders.yaml")


def observed(step_id: str, status: str = "running", exit_code: int = 0,
             **overrides: str) -> Observed:
    step = PLAN.step(step_id)
    assert step is not None
    lab = {labels.FLOW: "orders", labels.STEP: step_id, labels.REVISION: step.revision,
           labels.CONFIG_HASH: step.config_hash("orders"), **overrides}
    return Observed(id=step_id, name=f"flowrun.orders.{step_id}", labels=lab, status=status,
                    started_at=None, finished_at=None, restart_count=0, exit_code=exit_code,
                    oom_killed=False, error="", env={}, ports={})


def everything_running() -> list[Observed]:
    return [observed(s.id) for s in PLAN.steps]


def test_nothing_running_creates_every_step() -> None:
    actions = reconcile(PLAN, [])
    assert [(a.type, a.cause) for a in actions] == [(ActionType.CREATE, Cause.MISSING)] * 5


def test_unchanged_flow_keeps_everything() -> None:
    actions = reconcile(PLAN, everything_running())
    assert {a.type for a in actions} == {ActionType.KEEP}
    assert actions_text(actions).startswith("nothing to do")


def test_changed_component_recreates_only_its_steps() -> None:
    running = everything_running()
    running[2] = observed("enrich", **{labels.REVISION: "old"})
    actions = {a.step: a for a in reconcile(PLAN, running)}
    assert actions["enrich"].type is ActionType.RECREATE
    assert actions["enrich"].cause is Cause.COMPONENT_CHANGED
    assert "old -> " in actions["enrich"].detail
    assert [s for s, a in actions.items() if a.type is not ActionType.KEEP] == ["enrich"]


def test_changed_config_and_crash_and_orphan() -> None:
    running = everything_running()
    running[0] = observed("fetch", **{labels.CONFIG_HASH: "different"})
    running[4] = observed("notify", status="exited", exit_code=1)
    running.append(replace(observed("notify"), labels={labels.STEP: "gone"}))
    lines = actions_text(reconcile(PLAN, running)).splitlines()
    assert "recreate  fetch                        config changed" in lines
    assert "recreate  notify                       crashed (exit code 1)" in lines
    assert "remove    gone                         no longer in the flow" in lines


def test_forced_recreate() -> None:
    actions = reconcile(PLAN, everything_running(), recreate=True)
    assert {(a.type, a.cause) for a in actions} == {(ActionType.RECREATE, Cause.FORCED)}


def scaled(replicas: int) -> Any:
    """The orders plan with its action `enrich` (and the mapper before it) scaled."""
    steps = tuple(replace(s, replicas=replicas) if s.id in ("enrich", "mapper.fetch.enrich")
                  else s for s in PLAN.steps)
    return replace(PLAN, steps=steps)


def replica(step_id: str, n: int, **overrides: str) -> Observed:
    o = observed(step_id, **overrides)
    return replace(o, name=f"{o.name}.{n}", labels={**o.labels, labels.REPLICA: str(n)})


def test_scaling_up_creates_only_the_new_replicas() -> None:
    actions = reconcile(scaled(3), everything_running())
    changed = [(a.type, a.who, a.cause) for a in actions if a.type is not ActionType.KEEP]
    assert changed == [
        (ActionType.CREATE, "mapper.fetch.enrich#2", Cause.MISSING),
        (ActionType.CREATE, "mapper.fetch.enrich#3", Cause.MISSING),
        (ActionType.CREATE, "enrich#2", Cause.MISSING),
        (ActionType.CREATE, "enrich#3", Cause.MISSING),
    ]
    kept = [a.who for a in actions if a.type is ActionType.KEEP]
    assert "enrich#1" in kept and "fetch" in kept


def test_scaling_down_removes_the_highest_replicas_and_keeps_the_first() -> None:
    running = everything_running() + [replica("enrich", 2), replica("enrich", 3)]
    actions = reconcile(PLAN, running)
    assert [(a.type, a.who, a.cause) for a in actions if a.type is not ActionType.KEEP] == [
        (ActionType.REMOVE, "enrich#2", Cause.SCALED_DOWN),
        (ActionType.REMOVE, "enrich#3", Cause.SCALED_DOWN),
    ]
    assert "remove    enrich#2                     scaled down" in actions_text(actions)


def test_a_new_revision_recreates_every_replica_and_a_dead_one_alone() -> None:
    plan = scaled(2)
    running = everything_running()
    running[2] = observed("enrich", **{labels.REVISION: "old"})
    running += [replica("enrich", 2, **{labels.REVISION: "old"}),
                replica("mapper.fetch.enrich", 2)]
    running[1] = replace(running[1], status="exited", exit_code=137)
    changed = [(a.type, a.who, a.cause) for a in reconcile(plan, running)
               if a.type is not ActionType.KEEP]
    assert changed == [
        (ActionType.RECREATE, "mapper.fetch.enrich#1", Cause.KILLED),
        (ActionType.RECREATE, "enrich#1", Cause.COMPONENT_CHANGED),
        (ActionType.RECREATE, "enrich#2", Cause.COMPONENT_CHANGED),
    ]


def test_replicas_are_not_part_of_a_steps_config() -> None:
    enrich, wider = PLAN.step("enrich"), scaled(4).step("enrich")
    assert enrich is not None and wider is not None and wider.replicas == 4
    assert enrich.config_hash("orders") == wider.config_hash("orders")
