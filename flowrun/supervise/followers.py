"""Watching steps from outside: each container's log stream, the sailors' live
announcements over the broker, and Docker's own word when a container dies or is
removed. All of them only put events on the supervisor's queue."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from flowrun.broker.server import Broker
from flowrun.contract import LIVE_MARKER, NODE_LIVE_MARKER, STATE_FILE, names
from flowrun.core import labels
from flowrun.core.component import Runtime
from flowrun.core.observed import Observed, describe_exit
from flowrun.engine.protocol import ContainerEngine
from flowrun.supervise.events import (
    BrokerGone,
    ContainerGone,
    Event,
    Phase,
    StepLog,
    StepPhase,
)

# A sailor's state read torn (its file replaced while Docker read it): read again.
STATE_READS = 3


def sailor_state(engine: ContainerEngine, o: Observed) -> dict[str, Any]:
    """What a running step's sailor says of itself: flowrun's sailor keeps a state file
    (live, counters, beat); the platform's Node.js sailor keeps none, and is live once
    its log has said so since this start of its container."""
    if not o.running:
        return {}
    if (o.labels.get(labels.RUNTIME) == Runtime.NODE.value
            or not engine.capabilities.reads_files):
        # (A swarm task's files are on its node, out of reach: its log tells.)
        lines = engine.logs(o.name, since=o.started_at)
        return {"live": any(NODE_LIVE_MARKER in line or LIVE_MARKER in line
                            for line in lines)}
    for _ in range(STATE_READS):
        raw = engine.read_file(o.name, STATE_FILE)
        if not raw:
            return {}
        try:
            return dict(json.loads(raw))
        except ValueError:
            continue  # torn: replaced by a longer one while Docker read it (read_file)
    return {}


class Follower:
    """Follows one container's output across restarts; reports lines and liveness."""

    def __init__(self, engine: ContainerEngine, name: str, step: str, put: Callable[[Event], None],
                 stop: threading.Event, from_now: bool = False, timestamps: bool = False,
                 outlive: bool = False, replica: int = 1) -> None:
        self.engine, self.name, self.step, self.put, self.stop = engine, name, step, put, stop
        self.replica = replica
        self.from_now, self.timestamps = from_now, timestamps
        # outlive: when followed by name, wait for a replacement instead of ending
        # (`flowrun logs -f` across a redeploy).
        self.outlive = outlive
        self.retired = threading.Event()  # set before a planned stop: not a crash
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"follow-{step}")

    def start(self) -> Follower:
        self.thread.start()
        return self

    def run(self) -> None:
        since: datetime | None = datetime.now(UTC) if self.from_now else None
        while not self.stop.is_set():
            observed = self.engine.find(self.name)
            if observed is None:
                if not self.outlive:
                    return
                self.stop.wait(0.2)
                continue
            if observed.status == "running":
                # Docker's `since` has one-second resolution: from the container's own
                # start, so a restarted container's lines are not shown twice.
                if since is None or (observed.started_at and observed.started_at > since):
                    since = observed.started_at
                for line in self.engine.logs(self.name, follow=True, since=since,
                                             timestamps=self.timestamps):
                    if LIVE_MARKER in line or NODE_LIVE_MARKER in line:
                        self.put(StepPhase(self.step, Phase.LIVE, replica=self.replica))
                    self.put(StepLog(self.step, line, self.replica))
                    if self.stop.is_set():
                        return
                if self.stop.is_set() or self.retired.is_set():
                    return
                after = self.engine.find(self.name)
                if after is None:
                    continue
                self.put(StepPhase(self.step, Phase.CRASHED, self._exit_reason(after),
                                   self.replica))
            elif observed.status in ("exited", "dead") and observed.restart_count == 0 and (
                since is None
            ):
                # It died before we attached: show what it said, then wait for a restart.
                for line in self.engine.logs(self.name, tail=20):
                    self.put(StepLog(self.step, line, self.replica))
                self.put(StepPhase(self.step, Phase.CRASHED,
                                   describe_exit(observed.exit_code, observed.oom_killed),
                                   self.replica))
                since = observed.started_at
            # Docker restarts it after its backoff; wait for the next start.
            self.stop.wait(0.2)


    def _exit_reason(self, after: Observed) -> str:
        """Docker may have restarted it already (ExitCode back to 0): ask its events."""
        code, oom = after.exit_code, after.oom_killed
        if (after.running or after.status == "restarting") and (
                self.engine.capabilities.watches_events):
            for _ in range(10):  # the die event can trail the end of the log stream
                found = self.engine.last_exit(after.id, after.started_at and
                                              after.started_at - timedelta(minutes=10))
                if found is not None:
                    code, oom = found
                    break
                self.stop.wait(0.1)
        return describe_exit(code, oom)


class LiveListener:
    """Hears each sailor announce itself live over the broker (`<flow>.<step>.live`).

    Quicker than reading it from a followed log (Docker's log stream lags), and it
    proves the step's own broker connection works. pika connections belong to one
    thread: this one is made, used and closed inside the listener's thread.
    """

    def __init__(self, broker: Broker, flow: str, steps: Iterable[str],
                 put: Callable[[Event], None], stop: threading.Event) -> None:
        self.broker, self.flow, self.put, self.stop = broker, flow, put, stop
        self.bound = threading.Event()
        self.failed: BaseException | None = None
        # Each step announces itself on its own exchange: one binding per step, made
        # in the listener's thread (steps a redeploy adds come through `listen`).
        self.pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.listen(steps)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"live-{flow}")

    def start(self, timeout: float = 10) -> LiveListener:
        self.thread.start()
        self.bound.wait(timeout)
        return self

    def listen(self, steps: Iterable[str]) -> None:
        for step in steps:
            self.pending.put(step)

    def _bind_pending(self, channel: Any, queue_name: str, done: set[str]) -> None:
        while True:
            try:
                step = self.pending.get_nowait()
            except queue.Empty:
                return
            if step not in done:
                channel.queue_bind(queue_name, names.step_exchange(self.flow, step),
                                   routing_key=names.live_key(self.flow, step))
                done.add(step)

    def _run(self) -> None:
        done: set[str] = set()
        try:
            connection = self.broker.connect(self.flow)
            channel = connection.channel()
            queue_name = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            self._bind_pending(channel, queue_name, done)
        except Exception as e:  # the log followers still see liveness, only later
            self.failed = e
            self.bound.set()
            return
        self.bound.set()
        try:
            for method, _props, body in channel.consume(queue_name, auto_ack=True,
                                                        inactivity_timeout=0.2):
                if self.stop.is_set():
                    break
                self._bind_pending(channel, queue_name, done)
                if method is not None:
                    said = json.loads(body)
                    step, replica = said.get("step"), said.get("replica", 1)
                    if step and isinstance(replica, int):
                        self.put(StepPhase(step, Phase.LIVE, replica=replica))
            connection.close()
        except Exception:  # broker restarts end this listener; followers carry on
            return


class EngineWatcher:
    """Hears Docker say that a step's container died or was removed, or that the
    broker's did, whoever did it; the supervisor decides what to do about it."""

    def __init__(self, engine: ContainerEngine, flow: str, put: Callable[[Event], None],
                 stop: threading.Event) -> None:
        self.engine, self.flow, self.put, self.stop = engine, flow, put, stop
        self.stream: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"docker-{flow}")

    def start(self) -> EngineWatcher:
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.stream = self.engine.container_events()
                for event in self.stream:
                    if self.stop.is_set():
                        return
                    self._hear(event)
            except Exception:  # the engine restarted, or the stream was closed: again
                self.stop.wait(1.0)

    def _hear(self, event: dict[str, Any]) -> None:
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        how: Literal["died", "removed"] = (
            "removed" if event.get("Action") == "destroy" else "died")
        if attributes.get("name") == names.BROKER_CONTAINER:
            self.put(BrokerGone())
        elif (attributes.get(labels.FLOW) == self.flow
              and attributes.get(labels.ROLE) == labels.ROLE_STEP
              and labels.STEP in attributes):
            self.put(ContainerGone(attributes[labels.STEP], how))

    def close(self) -> None:
        self.stop.set()
        if self.stream is not None:
            try:
                self.stream.close()
            except Exception:  # closing a stream that already ended
                pass
