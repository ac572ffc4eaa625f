"""Reconcile against hand-written observations: no Docker."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from flowrun.core import labels
from flowrun.core.observed import Observed
from flowrun.core.reconcile import ActionType, Cause, actions_text, reconcile
from tests.unit.test_plan import plan_of

ROOT = Path(__file__).parent.parent.parent
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
