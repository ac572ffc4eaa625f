"""`flowrun up`: observe, plan, apply, then keep the flow as planned while attached.

One queue of typed events, one loop reading it, one handler per kind of event.
Builders, followers, the Docker event watcher and signal handlers only put
events on the queue; the loop is the only code that changes state or decides.

    WARMING ──every step live──▶ RUNNING ──Ctrl-C──▶ STOPPING ──taken down──▶ end
       └────────────Ctrl-C──────────────────────────────▲

Healing: Docker tells us (ContainerGone, BrokerGone) when a step's container
dies or is removed, by anyone. After a backoff that doubles per step while it
keeps dying (capped), the loop observes and reconciles again; whatever differs
from the plan is applied with its cause (`removed`, `killed`, `crashed`,
`stopped`). A process that crashed is usually restarted by Docker's own restart
policy first: then reconcile finds it running and nothing is done.
"""

from __future__ import annotations

import dataclasses
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.logline import readable
from flowrun.core.plan import Plan
from flowrun.core.prepare import prepare
from flowrun.core.reconcile import (
    Action,
    ActionType,
    Cause,
    actions_text,
    changes,
    reconcile,
)
from flowrun.errors import FlowFailed
from flowrun.settings import MAPPER_COMPONENT_DIR
from flowrun.supervise.events import (
    ApplyDone,
    BrokerGone,
    ComponentsChanged,
    ContainerGone,
    Event,
    Interrupted,
    Notice,
    Phase,
    StepLog,
    StepPhase,
    Stopped,
    Webhook,
)
from flowrun.supervise.executor import DEFAULT_GRACE
from flowrun.supervise.state import LAST_LINES, FlowState, Renderer, StepState

TICK = 0.25  # seconds between looks at the clock when no event comes
HEAL_FIRST = 0.5  # seconds before a step that went away is looked at again...
HEAL_CAP = 30.0  # ...doubling each time it goes away again, up to this
HEALTHY_AFTER = 30.0  # live this long, a step's backoff starts again from HEAL_FIRST


class Mode(StrEnum):
    WARMING = "warming"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(frozen=True)
class UpOptions:
    detach: bool = False
    timeout: float = 300.0
    recreate: bool = False
    dry_run: bool = False
    watch: bool = False
    grace: float = DEFAULT_GRACE


class Engine(Protocol):
    """What the supervisor itself asks of the engine adapter."""

    def observe(self, label_filter: Any) -> Any: ...
    def get_record(self, name: str) -> dict[str, str] | None: ...
    def logs(self, name: str, *, tail: int | str = ...) -> Any: ...


class Executor(Protocol):
    """What the supervisor asks of the executor (a seam: tests pass a fake)."""

    cancelled: threading.Event
    stop_following: threading.Event

    def apply_async(self, plan: Plan, actions: Sequence[Action], grace: float,
                    heal: bool = ...) -> threading.Thread: ...
    def down(self, flow: str, grace: float, purge: bool = ...,
             lock: bool = ...) -> list[str]: ...
    def watch_engine(self, flow: str) -> None: ...


@dataclass
class Healing:
    """Per step: how often it went away lately, and when to look again."""

    attempts: int = 0
    due: float | None = None

    def schedule(self, now: float) -> None:
        if self.due is None:
            self.due = now + min(HEAL_FIRST * 2.0 ** self.attempts, HEAL_CAP)


BROKER = "\0broker"  # the healing entry of the broker, which is no step


@dataclass
class Run:
    """One `up`'s working state, changed by the loop only."""

    plan: Plan
    options: UpOptions
    state: FlowState
    mode: Mode = Mode.WARMING
    applying: bool = False
    applying_what: str = "up"  # "up", "redeploy" or "heal": said when it fails
    changed_meanwhile: bool = False
    warmed: bool = False
    result: tuple[int, str] | None = None
    healing: dict[str, Healing] = field(default_factory=dict)


class Supervisor:
    def __init__(self, engine: Any, renderer: Renderer,
                 clock: Callable[[], float] = time.monotonic,
                 executor: Executor | None = None) -> None:
        self.engine = engine
        self.renderer = renderer
        self.clock = clock
        # A SimpleQueue: its put() is reentrant. The Ctrl-C handler puts into it on the
        # main thread, between any two bytecodes of that thread, also inside a get()
        # holding a Queue's lock, which a Queue's put() would then wait on forever.
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        if executor is None:
            from flowrun.supervise.executor import Executor as RealExecutor

            executor = RealExecutor(engine, self.events)
        self.executor = executor
        self.interrupts = 0
        self.apply_thread: threading.Thread | None = None
        self.replan: Callable[[], Plan] | None = None

    def actions_for(self, plan: Plan, recreate: bool = False) -> list[Action]:
        observed = self.engine.observe({labels.FLOW: plan.flow, labels.ROLE: labels.ROLE_STEP})
        return reconcile(plan, observed, recreate)

    def dry_run(self, plan: Plan, recreate: bool = False) -> str:
        """What `up` would do, and why: images, the broker and the services, networks,
        then each step's container; nothing is changed."""
        from flowrun.engine.images import base_images_for, services_image
        from flowrun.supervise.observe import observe_platform

        actions = self.actions_for(plan, recreate)
        image = services_image()
        bases = base_images_for(plan, actions)
        preparations = prepare(plan, actions, observe_platform(self.engine, plan, image, bases),
                               image, bases)
        if not preparations:
            return actions_text(actions)
        return "\n".join([*(p.line() for p in preparations), *(a.line() for a in actions)])

    # ------------------------------------------------------------ the loop

    def up(self, plan: Plan, options: UpOptions,
           replan: Callable[[], Plan] | None = None) -> tuple[int, str]:
        """Returns (exit code, summary). Raises FlowFailed when warm-up fails."""
        if options.dry_run:
            return 0, self.dry_run(plan, options.recreate)
        run = self.start(plan, options, replan)
        try:
            while run.result is None:
                try:
                    event: Event | None = self.events.get(timeout=TICK)
                except queue.Empty:
                    event = None
                if event is not None:
                    self.handle(run, event, self.clock())
                if run.result is None:
                    self.tick(run, self.clock())
            return run.result
        finally:
            self.finish(run)

    def pump(self, run: Run) -> None:
        """Handle every event waiting, then look at the clock once: the loop's body,
        run step by step (tests drive the supervisor with it and a fake clock)."""
        while run.result is None:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self.handle(run, event, self.clock())
        if run.result is None:
            self.tick(run, self.clock())

    def start(self, plan: Plan, options: UpOptions,
              replan: Callable[[], Plan] | None = None) -> Run:
        actions = self.actions_for(plan, options.recreate)
        self.replan = replan
        now = self.clock()
        run = Run(plan, options, FlowState(plan.flow, now, {
            s.id: StepState(s.id, s.kind.value, since=now, replicas=s.replicas)
            for s in plan.steps}))
        self.renderer.begin(run.state)
        for action in changes(actions):
            self.events.put(Notice(f"{action.type.value} {action.who}: {action.cause.value}"
                                   + (f" ({action.detail})" if action.detail else "")))
        self._install_signals()
        self._apply(run, plan, actions)
        if not options.detach:
            self.executor.watch_engine(plan.flow)
        return run

    def finish(self, run: Run) -> None:
        self.executor.stop_following.set()
        while True:  # what was said before the end is still shown
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, Notice | StepPhase):
                _update(run.state, event, self.clock())
                self.renderer.event(event, run.state, self.clock())
        self.renderer.close(run.state)

    def handle(self, run: Run, event: Event, now: float) -> None:
        if _repeats(run.state, event):
            return  # live twice (the broker's word and the log's): say it once
        _update(run.state, event, now)
        if not isinstance(event, ContainerGone | BrokerGone | Stopped):
            self.renderer.event(event, run.state, now)
        if isinstance(event, ApplyDone):
            self._on_apply_done(run, event)
        elif isinstance(event, Interrupted):
            self._on_interrupt(run, event)
        elif isinstance(event, ComponentsChanged):
            self._on_components_changed(run)
        elif isinstance(event, ContainerGone):
            self._on_gone(run, event.step, now)
        elif isinstance(event, BrokerGone):
            self._on_gone(run, BROKER, now)
        elif isinstance(event, Stopped):
            # Stopping an attached flow is how it ends: 0. Interrupted before it was
            # live, the `up` did not do what it was asked: 130.
            run.result = (0 if run.warmed else 130), "stopped"

    def tick(self, run: Run, now: float) -> None:
        if run.mode is Mode.STOPPING:
            return
        if not run.warmed and not run.applying and not run.state.pending():
            self._on_warm(run, now)
            if run.result is not None:
                return
        if not run.warmed and now > run.state.started + run.options.timeout:
            raise FlowFailed(self._timeout_message(run.state, run.options.timeout))
        for step_id, step in run.state.steps.items():
            healing = run.healing.get(step_id)
            if (healing is not None and healing.due is None and step.live_at is not None
                    and now - step.live_at > HEALTHY_AFTER):
                del run.healing[step_id]  # healthy again: the next backoff starts afresh
        if not run.applying and any(h.due is not None and h.due <= now
                                    for h in run.healing.values()):
            self._heal(run, now)

    # ------------------------------------------------------------ handlers

    def _on_apply_done(self, run: Run, event: ApplyDone) -> None:
        run.applying = False
        if run.mode is Mode.STOPPING:
            return
        if event.error and not run.warmed:
            raise FlowFailed(event.error)
        if run.applying_what == "heal" and self._taken_down(run):
            return
        if event.error:  # a redeploy or a heal: what runs keeps running
            self.events.put(Notice(f"{run.applying_what} failed, running steps left as "
                                   f"they were: {event.error}", "error"))
        if run.changed_meanwhile:
            run.changed_meanwhile = False
            self._redeploy(run)

    def _on_warm(self, run: Run, now: float) -> None:
        run.warmed = True
        run.mode = Mode.RUNNING
        summary = f"{len(run.state.steps)} real steps live in {run.state.elapsed(now):.1f} s"
        if run.state.webhook:
            summary += f"; called over HTTP: {run.state.webhook}"
        self.renderer.event(Notice(summary), run.state, now)
        if run.options.detach:
            run.result = 0, summary
            return
        watching = run.options.watch and self.replan is not None
        if watching:
            self._start_watcher(run.plan)
        hint = "Ctrl-C stops the flow; steps that go away are brought back" + (
            "; watching components for changes" if watching else "")
        self.renderer.event(Notice(hint), run.state, now)

    def _on_components_changed(self, run: Run) -> None:
        if self.replan is None or run.mode is Mode.STOPPING:
            return
        if run.applying:  # one redeploy at a time: a save during one is taken up after
            run.changed_meanwhile = True
        else:
            self._redeploy(run)

    def _on_gone(self, run: Run, key: str, now: float) -> None:
        if run.mode is Mode.STOPPING:
            return
        # Our own replacements also make containers die and go: the look after the
        # backoff (a reconcile) tells those apart, for it finds nothing to do.
        run.healing.setdefault(key, Healing()).schedule(now)

    def _on_interrupt(self, run: Run, event: Interrupted) -> None:
        force = event.count > 1  # a second Ctrl-C forces the stop
        if run.mode is Mode.STOPPING and not force:
            return
        run.mode = Mode.STOPPING
        # Nothing more is started; what an interrupted warm-up started is taken down.
        self.executor.cancelled.set()
        grace = 0.0 if force else run.options.grace
        self.events.put(Notice(
            "stopping the flow" + (" now (forced)" if force else
                                   f" (grace {grace:.0f} s; Ctrl-C again to force)")))
        apply_thread = self.apply_thread

        def take_down() -> None:
            try:
                # An apply in progress starts nothing more once cancelled: let it end,
                # or containers it is creating right now would outlive the `down`.
                if apply_thread is not None:
                    apply_thread.join(timeout=None if not force else 10)
                self.executor.down(run.plan.flow, grace, lock=not force)
            except Exception as e:  # said, not raised: the loop must end
                self.events.put(Notice(f"stopping {run.plan.flow}: {e}", "error"))
            finally:
                self.events.put(Stopped())

        threading.Thread(target=take_down, daemon=True, name="down").start()

    # ------------------------------------------------------------ applying

    def _apply(self, run: Run, plan: Plan, actions: Sequence[Action],
               what: str = "up") -> None:
        run.plan = plan
        for step in plan.steps:  # a redeploy may scale a step
            if step.id in run.state.steps:
                run.state.steps[step.id].replicas = step.replicas
        run.applying, run.applying_what = True, what
        self.apply_thread = self.executor.apply_async(plan, actions, run.options.grace,
                                                      heal=what == "heal")

    def _heal(self, run: Run, now: float) -> None:
        if self._taken_down(run):
            return
        due = {key for key, h in run.healing.items() if h.due is not None and h.due <= now}
        todo: list[Action] = []
        for action in self.actions_for(run.plan):
            if action.step not in due or action.type not in (ActionType.CREATE,
                                                             ActionType.RECREATE):
                continue  # Docker restarted it, or we replaced it ourselves: nothing to do
            if action.cause is Cause.MISSING:
                action = dataclasses.replace(action, cause=Cause.REMOVED)
            todo.append(action)
        for key in due:
            healing = run.healing[key]
            healing.due = None
            if key == BROKER or any(a.step == key for a in todo):
                healing.attempts += 1
        if BROKER in due:
            # The broker went away: `apply` waits for it (starting it when it is gone),
            # declares the flow's queues and users again, and the sailors reconnect.
            self.events.put(Notice("the broker went away: waiting for it; the steps "
                                   "reconnect by themselves", "warning"))
        elif not todo:
            return
        for action in todo:
            attempt = run.healing[action.step].attempts
            again = f"; brought back {attempt} times lately" if attempt > 1 else ""
            self.events.put(Notice(f"heal {action.who}: {action.cause.value}"
                                   + (f" ({action.detail})" if action.detail else "")
                                   + again, "warning"))
        self._apply(run, run.plan, todo, "heal")

    def _taken_down(self, run: Run) -> bool:
        """`flowrun down` from another terminal removes the flow's record first: then
        its steps going away is no fault to heal, and this `up` ends, as compose's does."""
        if self.engine.get_record(names.record_volume(run.plan.flow)) is not None:
            return False
        self.events.put(Notice("the flow was taken down (flowrun down); not bringing it "
                               "back", "warning"))
        run.mode = Mode.STOPPING
        self.events.put(Stopped())
        return True

    def _redeploy(self, run: Run) -> None:
        assert self.replan is not None
        try:
            plan = self.replan()
        except Exception as e:  # a broken flow file mid-edit: say so, keep running
            self.events.put(Notice(f"not redeploying: {e}", "error"))
            return
        todo = changes([a for a in self.actions_for(plan) if a.type is not ActionType.REMOVE])
        if not todo:
            self.events.put(Notice("change seen; no step's revision changed"))
            return
        for action in todo:
            self.events.put(Notice(f"redeploy {action.who}: {action.cause.value}"))
        self._apply(run, plan, todo, "redeploy")

    # ------------------------------------------------------------ around the loop

    def _timeout_message(self, state: FlowState, timeout: float) -> str:
        parts = []
        for step_id in state.pending():
            step = state.steps[step_id]
            lines = step.last_lines or list(self.engine.logs(
                names.container(state.flow, step_id), tail=LAST_LINES))
            shown = "\n".join(f"    {readable(line)}" for line in lines) or "    (no output)"
            detail = f", {step.detail}" if step.detail else ""
            if step.crashes:
                detail += f", crashed {step.crashes}x"
            parts.append(f"  {step_id}: {step.phase.value}{detail}; last lines:\n{shown}")
        return (f"not live after {timeout:.0f} s: {', '.join(state.pending())}\n"
                + "\n".join(parts)
                + f"\n  the containers are left for inspection: flowrun logs {state.flow} STEP; "
                  f"flowrun down {state.flow}")

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def record(signum: int, frame: FrameType | None) -> None:
            self.interrupts += 1
            self.events.put(Interrupted(self.interrupts))

        signal.signal(signal.SIGINT, record)
        signal.signal(signal.SIGTERM, record)

    def _start_watcher(self, plan: Plan) -> None:
        from flowrun.supervise.watch import watch_components

        paths = [c.path for c in plan.components if not _is_builtin(c.path)]
        ready = threading.Event()
        threading.Thread(
            target=watch_components, args=(paths, self.events.put,
                                           self.executor.stop_following, ready),
            daemon=True, name="watch").start()
        # Say "watching" only once it is: a save made right after must not be missed.
        ready.wait(10)


def _repeats(state: FlowState, event: Event) -> bool:
    if not isinstance(event, StepPhase) or event.phase is not Phase.LIVE:
        return False
    step = state.steps.get(event.step)
    return step is not None and step.replica_live(event.replica)


def _update(state: FlowState, event: Event, now: float) -> None:
    if isinstance(event, StepPhase):
        step = state.steps.get(event.step)
        if step is not None:
            step.set_phase(event.replica, event.phase, event.detail, now)
    elif isinstance(event, StepLog):
        step = state.steps.get(event.step)
        if step is not None:
            step.last_lines = [*step.last_lines[-(LAST_LINES - 1):], event.line]
    elif isinstance(event, Webhook):
        state.webhook = event.url


def _is_builtin(path: Path) -> bool:
    return path == MAPPER_COMPONENT_DIR.resolve()
