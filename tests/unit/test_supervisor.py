"""The supervisor's loop, fed scripted event histories with a fake engine and a fake
executor: warm-up, timeout, interrupts, redeploys one at a time, and healing."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from flowrun.core.observed import Observed
from flowrun.core.plan import Plan
from flowrun.core.reconcile import Action, ActionType
from flowrun.errors import FlowFailed
from flowrun.supervise.events import (
    ApplyDone,
    ComponentsChanged,
    ContainerGone,
    Event,
    Interrupted,
    Notice,
    Phase,
    StepPhase,
)
from flowrun.supervise.state import FlowState
from flowrun.supervise.supervisor import HEAL_FIRST, Supervisor, UpOptions
from tests.conftest import ROOT, plan_of, python_child

PLAN: Plan = plan_of(ROOT / "sample_flows" / "orders.yaml", revision="rev1")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """Docker as a dict of step id -> Observed; tests change it as Docker would."""

    def __init__(self) -> None:
        self.containers: dict[str, Observed] = {}
        self.taken_down = False  # `flowrun down` from another terminal removed the record

    def run(self, plan: Plan, step: str, status: str = "running", exit_code: int = 0,
            replica: int = 1) -> None:
        s = plan.step(step)
        assert s is not None
        key = step if replica == 1 else f"{step}.{replica}"
        self.containers[key] = Observed(
            id=f"id-{key}", name=f"flowrun.{plan.flow}.{key}",
            labels={"io.flowrun.step": step, "io.flowrun.revision": s.revision,
                    "io.flowrun.config-hash": s.config_hash(plan.flow),
                    "io.flowrun.replica": str(replica)},
            status=status, started_at=datetime.now(UTC), finished_at=None, restart_count=0,
            exit_code=exit_code, oom_killed=False, error="", env={}, ports={})

    def observe(self, label_filter: Any) -> list[Observed]:
        return list(self.containers.values())

    def get_record(self, name: str) -> dict[str, str] | None:
        return None if self.taken_down else {"io.flowrun.flow": "orders"}

    def logs(self, name: str, *, tail: int | str = "all") -> list[str]:
        return [f"last line of {name}"]


class FakeExecutor:
    """Records what it is asked; `script` says what each apply reports back."""

    def __init__(self, engine: FakeEngine, events: Any) -> None:
        self.engine, self.events = engine, events
        self.cancelled = threading.Event()
        self.stop_following = threading.Event()
        self.applied: list[list[Action]] = []
        self.downs: list[tuple[str, float]] = []
        self.live_on_apply = True
        self.finish_apply = True

    def apply_async(self, plan: Plan, actions: Sequence[Action], grace: float,
                    heal: bool = False) -> threading.Thread:
        self.applied.append(list(actions))
        for a in actions:
            if a.type in (ActionType.CREATE, ActionType.RECREATE):
                self.engine.run(plan, a.step, replica=a.replica)
                if self.live_on_apply:
                    self.events.put(StepPhase(a.step, Phase.LIVE, replica=a.replica))
            elif a.type is ActionType.KEEP and self.live_on_apply:
                self.events.put(StepPhase(a.step, Phase.LIVE, replica=a.replica))
        if self.finish_apply:
            self.events.put(ApplyDone())
        thread = threading.Thread(target=lambda: None)
        thread.start()
        return thread

    def down(self, flow: str, grace: float, purge: bool = False, lock: bool = True) -> list[str]:
        self.downs.append((flow, grace))
        self.engine.containers.clear()
        return []

    def watch_engine(self, flow: str) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    def begin(self, state: FlowState) -> None:
        pass

    def event(self, event: Event, state: FlowState, now: float) -> None:
        self.seen.append(event)

    def close(self, state: FlowState) -> None:
        pass

    def notices(self) -> list[str]:
        return [e.text for e in self.seen if isinstance(e, Notice)]


def make(**kwargs: Any) -> tuple[Supervisor, FakeEngine, FakeExecutor, Recorder, Clock]:
    engine, recorder, clock = FakeEngine(), Recorder(), Clock()
    supervisor = Supervisor(engine, recorder, clock=clock)
    executor = FakeExecutor(engine, supervisor.events)
    for key, value in kwargs.items():
        setattr(executor, key, value)
    supervisor.executor = executor
    return supervisor, engine, executor, recorder, clock


def started(supervisor: Supervisor, options: UpOptions, **kwargs: Any) -> Any:
    """Start an `up` and pump it until warm (attached: it stays running)."""
    run = supervisor.start(PLAN, options, **kwargs)
    supervisor.pump(run)
    return run


def until_stopped(supervisor: Supervisor, run: Any) -> tuple[int, str]:
    for _ in range(500):  # the take-down thread posts Stopped when it ends
        supervisor.pump(run)
        if run.result is not None:
            return run.result  # type: ignore[no-any-return]
        threading.Event().wait(0.01)
    raise AssertionError("never stopped")


def test_detached_up_returns_once_every_step_is_live() -> None:
    supervisor, _engine, executor, recorder, _clock = make()
    code, summary = supervisor.up(PLAN, UpOptions(detach=True))
    assert code == 0 and summary.startswith("5 real steps live")
    assert [a.type for a in executor.applied[0]] == [ActionType.CREATE] * 5


def test_warm_up_timeout_names_the_steps_not_live_with_their_last_lines() -> None:
    supervisor, _engine, _executor, _recorder, clock = make(live_on_apply=False)
    run = supervisor.start(PLAN, UpOptions(detach=True, timeout=30))
    supervisor.events.put(StepPhase("fetch", Phase.LIVE))
    supervisor.pump(run)
    clock.now += 31
    with pytest.raises(FlowFailed) as raised:
        supervisor.pump(run)
    text = str(raised.value)
    assert text.startswith("not live after 30 s: mapper.fetch.enrich, enrich, "
                           "mapper.enrich.notify, notify\n")
    assert "  fetch:" not in text
    assert "last line of flowrun.orders.enrich" in text


def test_an_interrupt_during_warm_up_stops_and_exits_130() -> None:
    supervisor, _engine, executor, _recorder, _clock = make(live_on_apply=False,
                                                            finish_apply=False)
    run = supervisor.start(PLAN, UpOptions())
    supervisor.events.put(Interrupted(1))
    assert until_stopped(supervisor, run) == (130, "stopped")
    assert executor.cancelled.is_set()
    assert executor.downs == [("orders", 10.0)]


def test_an_interrupt_once_running_stops_with_0_and_a_second_forces() -> None:
    supervisor, _engine, executor, recorder, _clock = make()
    run = started(supervisor, UpOptions(grace=7))
    assert any("Ctrl-C stops the flow" in n for n in recorder.notices())
    supervisor.events.put(Interrupted(1))
    supervisor.events.put(Interrupted(2))
    assert until_stopped(supervisor, run)[0] == 0
    supervisor.finish(run)
    assert ("orders", 7.0) in executor.downs and ("orders", 0.0) in executor.downs
    assert any("now (forced)" in n for n in recorder.notices())


def test_a_removed_step_is_brought_back_with_its_cause_after_a_backoff() -> None:
    supervisor, engine, executor, recorder, clock = make()
    run = started(supervisor, UpOptions())
    del engine.containers["enrich"]  # `docker rm -f`
    supervisor.events.put(ContainerGone("enrich", "removed"))
    supervisor.pump(run)
    assert len(executor.applied) == 1  # not before the backoff
    clock.now += HEAL_FIRST + 0.01
    supervisor.pump(run)
    supervisor.pump(run)
    (action,) = executor.applied[1]
    assert (action.type, action.step, action.cause.value) == (ActionType.CREATE, "enrich",
                                                               "removed")
    assert any(n.startswith("heal enrich: removed") for n in recorder.notices())


def test_a_killed_step_keeps_coming_back_with_a_growing_backoff() -> None:
    supervisor, engine, executor, _recorder, clock = make()
    run = started(supervisor, UpOptions())
    delays = []
    for _ in range(4):
        engine.run(PLAN, "notify", status="exited", exit_code=137)  # `docker kill`
        supervisor.events.put(ContainerGone("notify", "died"))
        before, start = len(executor.applied), clock.now
        supervisor.pump(run)
        while len(executor.applied) == before:
            clock.now += 0.25
            supervisor.pump(run)
        delays.append(clock.now - start)
        assert [(a.step, a.cause.value) for a in executor.applied[-1]] == [("notify",
                                                                            "killed")]
    assert delays == [0.5, 1.0, 2.0, 4.0], delays
    # Live long enough, it counts as healthy again: the next backoff starts afresh.
    clock.now += 31
    supervisor.pump(run)
    engine.run(PLAN, "notify", status="exited", exit_code=137)
    supervisor.events.put(ContainerGone("notify", "died"))
    supervisor.pump(run)
    clock.now += 0.5
    supervisor.pump(run)
    assert len(executor.applied) == 6


def test_a_step_docker_restarted_by_itself_is_left_alone() -> None:
    supervisor, _engine, executor, recorder, clock = make()
    run = started(supervisor, UpOptions())
    supervisor.events.put(ContainerGone("enrich", "died"))  # crashed; Docker restarted it
    supervisor.pump(run)
    clock.now += 5
    supervisor.pump(run)
    assert len(executor.applied) == 1
    assert not any(n.startswith("heal") for n in recorder.notices())


def test_saves_during_a_redeploy_give_one_more_redeploy_after_it() -> None:
    supervisor, engine, executor, _recorder, _clock = make()
    run = started(supervisor, UpOptions(), replan=lambda: PLAN)
    executor.finish_apply = False
    engine.containers["enrich"] = _with_revision(engine.containers["enrich"], "old")
    supervisor.events.put(ComponentsChanged(("crm",)))
    supervisor.pump(run)
    assert [(a.step, a.cause.value) for a in executor.applied[1]] == [
        ("enrich", "component changed")]
    engine.containers["enrich"] = _with_revision(engine.containers["enrich"], "old")
    for _ in range(3):  # a burst of saves while the redeploy runs
        supervisor.events.put(ComponentsChanged(("crm",)))
    supervisor.pump(run)
    assert len(executor.applied) == 2  # waits for the one in progress
    supervisor.events.put(ApplyDone())
    supervisor.pump(run)
    supervisor.pump(run)
    assert len(executor.applied) == 3  # the burst gave one redeploy, not three


def _with_revision(o: Observed, revision: str) -> Observed:
    import dataclasses

    return dataclasses.replace(o, labels={**o.labels, "io.flowrun.revision": revision})


def test_a_flow_taken_down_from_elsewhere_is_not_brought_back() -> None:
    supervisor, engine, executor, recorder, clock = make()
    run = started(supervisor, UpOptions())
    engine.taken_down = True  # `flowrun down` in another terminal: record first
    engine.containers.clear()
    for step in ("fetch", "enrich"):
        supervisor.events.put(ContainerGone(step, "removed"))
    supervisor.pump(run)
    clock.now += HEAL_FIRST + 0.01
    assert until_stopped(supervisor, run) == (0, "stopped")
    supervisor.finish(run)
    assert len(executor.applied) == 1  # nothing healed
    assert any("taken down" in n for n in recorder.notices())


def test_a_replicated_step_is_live_once_every_replica_is_and_heals_the_one_gone() -> None:
    plan = dataclasses.replace(PLAN, steps=tuple(
        dataclasses.replace(s, replicas=3) if s.id == "enrich" else s for s in PLAN.steps))
    supervisor, engine, executor, recorder, clock = make(live_on_apply=False)
    run = supervisor.start(plan, UpOptions())
    supervisor.pump(run)
    assert [a.who for a in executor.applied[0] if a.step == "enrich"] == [
        "enrich#1", "enrich#2", "enrich#3"]
    for step in plan.steps:
        for n in range(1, step.replicas + 1):
            if (step.id, n) != ("enrich", 3):
                supervisor.events.put(StepPhase(step.id, Phase.LIVE, replica=n))
    supervisor.pump(run)
    enrich = run.state.steps["enrich"]
    assert not run.warmed and enrich.phase is Phase.PENDING
    assert enrich.detail.startswith("2/3 live")
    supervisor.events.put(StepPhase("enrich", Phase.LIVE, replica=3))
    supervisor.pump(run)
    assert run.warmed and enrich.phase is Phase.LIVE and enrich.detail == "3/3 live"
    # One replica removed by hand: only it comes back.
    del engine.containers["enrich.2"]
    supervisor.events.put(ContainerGone("enrich", "removed"))
    supervisor.pump(run)
    clock.now += HEAL_FIRST + 0.1
    supervisor.pump(run)
    assert [(a.who, a.cause.value) for a in executor.applied[-1]] == [("enrich#2", "removed")]
    supervisor.pump(run)
    assert "heal enrich#2: removed" in recorder.notices()
    supervisor.events.put(Interrupted(1))
    until_stopped(supervisor, run)


CTRL_C_STORM = """
import faulthandler, os, signal, sys, threading
faulthandler.dump_traceback_later(40, exit=True)  # a hang shows where it is
from tests.unit.test_supervisor import PLAN, make
from flowrun.supervise.events import Phase, StepPhase
from flowrun.supervise.supervisor import UpOptions


def trial(n: int) -> None:
    supervisor, _engine, _executor, _recorder, _clock = make()
    busy = threading.Event()

    def feed() -> None:  # the loop is kept taking events when the Ctrl-C comes
        while not busy.is_set():
            if supervisor.events.qsize() < 3:  # the Ctrl-C is not queued behind a heap
                supervisor.events.put(StepPhase("fetch", Phase.STARTING))

    def ctrl_c() -> None:  # once `up` has its handler, at a time that varies
        while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            threading.Event().wait(0.0005)
        threading.Event().wait(0.002 * (n % 5))
        os.kill(os.getpid(), signal.SIGINT)

    feeder = threading.Thread(target=feed)
    feeder.start()
    threading.Thread(target=ctrl_c, daemon=True).start()
    try:
        assert supervisor.up(PLAN, UpOptions())[1] == "stopped"
    finally:
        busy.set()
        feeder.join()
        signal.signal(signal.SIGINT, signal.default_int_handler)


for n in range(int(sys.argv[1])):
    trial(n)
print("stopped every time")
"""


def test_a_ctrl_c_while_the_loop_takes_events_always_stops_it() -> None:
    # The handler runs on the main thread between two of its bytecodes, also inside
    # the loop's get(): with a queue.Queue its put() waited there forever on a lock
    # that get() held: in each of 4 runs of this storm (60 Ctrl-Cs). In CI an `up`
    # interrupted during warm-up hung so.
    done = python_child(CTRL_C_STORM, "60")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stopped every time" in done.stdout
