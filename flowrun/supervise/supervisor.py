"""`flowrun up`: observe, plan, apply, then watch the steps warm up (and stay attached).

One queue of events, one loop reading it. Signal handlers only put an
Interrupted event on the queue; the loop decides what to do.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from flowrun.core import labels, names
from flowrun.core.plan import Plan
from flowrun.core.reconcile import Action, ActionType, actions_text, changes, reconcile
from flowrun.engine.adapter import Engine
from flowrun.errors import FlowFailed
from flowrun.settings import MAPPER_COMPONENT_DIR
from flowrun.supervise.events import (
    ApplyDone,
    ComponentsChanged,
    Event,
    Interrupted,
    Notice,
    Phase,
    StepLog,
    StepPhase,
)
from flowrun.supervise.executor import DEFAULT_GRACE, Executor
from flowrun.supervise.state import LAST_LINES, FlowState, Renderer, StepState


@dataclass(frozen=True)
class UpOptions:
    detach: bool = False
    timeout: float = 300.0
    recreate: bool = False
    dry_run: bool = False
    watch: bool = False
    grace: float = DEFAULT_GRACE


class Supervisor:
    def __init__(self, engine: Engine, renderer: Renderer,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.renderer = renderer
        self.clock = clock
        self.events: queue.Queue[Event] = queue.Queue()
        self.executor = Executor(engine, self.events)
        self.interrupts = 0
        self.apply_thread: threading.Thread | None = None

    def actions_for(self, plan: Plan, recreate: bool = False) -> list[Action]:
        observed = self.engine.observe({labels.FLOW: plan.flow, labels.ROLE: labels.ROLE_STEP})
        return reconcile(plan, observed, recreate)

    def up(self, plan: Plan, options: UpOptions,
           replan: Callable[[], Plan] | None = None) -> tuple[int, str]:
        """Returns (exit code, summary). Raises FlowFailed when warm-up fails."""
        actions = self.actions_for(plan, options.recreate)
        if options.dry_run:
            return 0, actions_text(actions)
        state = FlowState(plan.flow, self.clock(), {
            s.id: StepState(s.id, s.kind.value, since=self.clock()) for s in plan.steps
        })
        self.renderer.begin(state)
        for action in changes(actions):
            self.events.put(Notice(f"{action.type.value} {action.step}: {action.cause.value}"
                                   + (f" ({action.detail})" if action.detail else "")))
        self._install_signals()
        self.apply_thread = self.executor.apply_async(plan, actions, options.grace)
        applying = True
        changed_meanwhile = False
        warmed = False
        watcher: threading.Thread | None = None
        deadline = state.started + options.timeout
        try:
            while True:
                try:
                    event = self.events.get(timeout=0.25)
                except queue.Empty:
                    event = None
                now = self.clock()
                if event is not None and self._repeats(state, event):
                    continue  # live twice (the broker's word and the log's): say it once
                if event is not None:
                    self._update(state, event, now)
                    self.renderer.event(event, state, now)
                    if isinstance(event, ApplyDone):
                        if event.error and not warmed:
                            raise FlowFailed(event.error)
                        if event.error:  # a redeploy: what runs keeps running
                            self.events.put(Notice(
                                f"redeploy failed, running steps left as they were: "
                                f"{event.error}", "error"))
                        applying = False
                        if changed_meanwhile and replan is not None:
                            changed_meanwhile = False
                            applying = self._redeploy(replan, options)
                    if isinstance(event, Interrupted):  # a second one forces the stop
                        code, summary = self._stop(plan, state, options,
                                                   force=event.count > 1)
                        # Stopping an attached flow is how it ends: 0. Interrupted before
                        # it was live, the `up` did not do what it was asked: 130.
                        return (0 if warmed else code), summary
                    if isinstance(event, ComponentsChanged) and replan is not None:
                        # One redeploy at a time: a save during one is taken up after it.
                        if applying:
                            changed_meanwhile = True
                        else:
                            applying = self._redeploy(replan, options)
                if not warmed and not applying and not state.pending():
                    warmed = True
                    elapsed = state.elapsed(now)
                    summary = f"{len(state.steps)} real steps live in {elapsed:.1f} s"
                    self.renderer.event(Notice(summary), state, now)
                    if options.detach:
                        return 0, summary
                    if options.watch and replan is not None:
                        watcher = self._start_watcher(plan)
                    hint = "Ctrl-C stops the flow" + (
                        "; watching components for changes" if watcher else "")
                    self.renderer.event(Notice(hint), state, now)
                if not warmed and now > deadline:
                    raise FlowFailed(self._timeout_message(state, options.timeout))
        finally:
            self.executor.stop_following.set()
            self.renderer.close(state)

    # ------------------------------------------------------------ state

    @staticmethod
    def _repeats(state: FlowState, event: Event) -> bool:
        if not isinstance(event, StepPhase) or event.phase is not Phase.LIVE:
            return False
        step = state.steps.get(event.step)
        return step is not None and step.phase is Phase.LIVE

    def _update(self, state: FlowState, event: Event, now: float) -> None:
        if isinstance(event, StepPhase):
            step = state.steps.get(event.step)
            if step is None:
                return
            if event.phase is Phase.CRASHED:
                step.crashes += 1
            if event.phase is Phase.LIVE and step.live_at is None:
                step.live_at = now
            if event.phase is not Phase.LIVE:
                step.live_at = None
            step.phase, step.detail, step.since = event.phase, event.detail, now
        elif isinstance(event, StepLog):
            step = state.steps.get(event.step)
            if step is not None:
                step.last_lines = [*step.last_lines[-(LAST_LINES - 1):], event.line]

    def _timeout_message(self, state: FlowState, timeout: float) -> str:
        parts = []
        for step_id in state.pending():
            step = state.steps[step_id]
            lines = self._last_lines(state, step_id)
            shown = "\n".join(f"    {line}" for line in lines) or "    (no output)"
            detail = f", {step.detail}" if step.detail else ""
            if step.crashes:
                detail += f", crashed {step.crashes}x"
            parts.append(f"  {step_id}: {step.phase.value}{detail}; last lines:\n{shown}")
        return (f"not live after {timeout:.0f} s: {', '.join(state.pending())}\n"
                + "\n".join(parts)
                + f"\n  the containers are left for inspection: flowrun logs {state.flow} STEP; "
                  f"flowrun down {state.flow}")

    def _last_lines(self, state: FlowState, step_id: str) -> list[str]:
        lines = state.steps[step_id].last_lines
        if lines:
            return lines
        return list(self.engine.logs(names.container(state.flow, step_id),
                                     tail=LAST_LINES))

    # ------------------------------------------------------------ stopping

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def record(signum: int, frame: FrameType | None) -> None:
            self.interrupts += 1
            self.events.put(Interrupted(self.interrupts))

        signal.signal(signal.SIGINT, record)
        signal.signal(signal.SIGTERM, record)

    def _stop(self, plan: Plan, state: FlowState, options: UpOptions,
              force: bool) -> tuple[int, str]:
        # Nothing more is started; what an interrupted warm-up started is taken down.
        self.executor.cancelled.set()
        grace = 0.0 if force else options.grace
        self.renderer.event(Notice(
            "stopping the flow" + (" now (forced)" if force else
                                   f" (grace {grace:.0f} s; Ctrl-C again to force)")),
            state, self.clock())
        done = threading.Event()

        def take_down() -> None:
            try:
                # An apply in progress starts nothing more once cancelled: let it end,
                # or containers it is creating right now would outlive the `down`.
                if self.apply_thread is not None:
                    self.apply_thread.join(timeout=None if not force else 10)
                self.executor.down(plan.flow, grace, lock=not force)
            except Exception as e:  # said, not raised: the loop below must end
                self.events.put(Notice(f"stopping {plan.flow}: {e}", "error"))
            finally:
                done.set()

        threading.Thread(target=take_down, daemon=True).start()
        while not done.is_set():
            try:
                event = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            if isinstance(event, Interrupted) and not force:
                return self._stop(plan, state, options, force=True)
            if isinstance(event, StepPhase | Notice):
                if isinstance(event, StepPhase):
                    self._update(state, event, self.clock())
                self.renderer.event(event, state, self.clock())
        return 130, "stopped"

    # ------------------------------------------------------------ watching

    def _start_watcher(self, plan: Plan) -> threading.Thread:
        from flowrun.supervise.watch import watch_components

        paths = [c.path for c in plan.components if not _is_builtin(c.path)]
        ready = threading.Event()
        thread = threading.Thread(
            target=watch_components, args=(paths, self.events.put,
                                           self.executor.stop_following, ready),
            daemon=True, name="watch")
        thread.start()
        # Say "watching" only once it is: a save made right after must not be missed.
        ready.wait(10)
        return thread

    def _redeploy(self, replan: Callable[[], Plan], options: UpOptions) -> bool:
        """Start redeploying what changed; False when there is nothing to do."""
        try:
            plan = replan()
        except Exception as e:  # a broken flow file mid-edit: say so, keep running
            self.events.put(Notice(f"not redeploying: {e}", "error"))
            return False
        actions = [a for a in self.actions_for(plan) if a.type is not ActionType.REMOVE]
        todo = changes(actions)
        if not todo:
            self.events.put(Notice("change seen; no step's revision changed"))
            return False
        for action in todo:
            self.events.put(Notice(f"redeploy {action.step}: {action.cause.value}"))
        self.apply_thread = self.executor.apply_async(plan, todo, options.grace)
        return True


def _is_builtin(path: Path) -> bool:
    return path == MAPPER_COMPONENT_DIR.resolve()
