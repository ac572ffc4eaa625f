"""Taking a flow down: its steps (TERM, grace, KILL), a Node.js trigger's shutdown
hook, its networks, what the platform services keep of it, and with `purge` its
queues. Every part is tried, so one that Docker refuses does not leave the rest
behind; what failed is said at the end."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from flowrun.broker.platform import Services, find_services
from flowrun.broker.server import Broker, find_broker
from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.component import Runtime
from flowrun.core.observed import Observed
from flowrun.core.plan import StepKind
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import EngineError, FlowFailed, ServiceError, StaleNetwork
from flowrun.supervise.events import Event, Notice, Phase, StepLog, StepPhase
from flowrun.supervise.lock import FlowLock
from flowrun.supervise.specs import hook_spec
from flowrun.waiting import wait_for

STOP_WORKERS = 8


class TakeDown:
    def __init__(self, engine: ContainerEngine, put: Callable[[Event], None],
                 broker: Broker | None = None, services: Services | None = None) -> None:
        self.engine, self.put = engine, put
        self.broker, self.services = broker, services

    def down(self, flow: str, grace: float, purge: bool = False,
             lock: bool = True) -> list[str]:
        """Stop (TERM, grace, KILL) and remove a flow's containers, networks and record.
        `lock=False` only for a forced stop, which must not wait for an apply."""
        if not lock:
            return self._down(flow, grace, purge)
        with FlowLock(flow, on_wait=lambda text: self.put(Notice(text, "warning"))):
            return self._down(flow, grace, purge)

    def _down(self, flow: str, grace: float, purge: bool) -> list[str]:
        # The record first: an attached `up` elsewhere reads its absence as "taken
        # down on purpose", and does not heal the steps this is about to remove.
        self.engine.remove_volume(names.record_volume(flow))
        observed = self.engine.observe({labels.FLOW: flow, labels.ROLE: labels.ROLE_STEP})
        removed = [o.name for o in observed]

        def stop(o: Observed) -> None:
            step, replica = o.labels.get(labels.STEP, o.name), labels.replica_of(o.labels)
            self.put(StepPhase(step, Phase.STOPPING, replica=replica))
            self.engine.stop(o.name, grace)
            self.engine.remove(o.name)
            self.put(StepPhase(step, Phase.STOPPED, replica=replica))

        with ThreadPoolExecutor(max_workers=STOP_WORKERS, thread_name_prefix="stop") as pool:
            list(pool.map(stop, observed))
        # Every part is tried, so one that Docker refuses (a network it still thinks in
        # use) does not leave the rest behind; what failed is said at the end.
        failed: list[str] = []
        broker = self.broker or find_broker(self.engine)
        services = self.services or (find_services(self.engine, broker) if broker else None)
        if broker is not None and services is not None:
            # While the flow's network and its data at the services are still there.
            for o in observed:
                if (o.labels.get(labels.RUNTIME) == Runtime.NODE.value
                        and o.labels.get(labels.KIND) == StepKind.TRIGGER.value):
                    try:
                        self._shutdown_hook(flow, o, broker, grace)
                    except EngineError as e:
                        failed.append(f"shutdown hook of {o.labels.get(labels.STEP)}: {e}")
        for network in (names.network(flow), names.internal_network(flow)):
            try:
                self.engine.remove_network(network)
            except StaleNetwork as e:  # said, not a failure: nothing is lost or running
                self.put(Notice(str(e), "warning"))
            except EngineError as e:
                failed.append(str(e))
        if services is not None:
            # Its steps are no longer served or ticked; their snapshots stay unless purged.
            try:
                services.forget_flow(flow, purge)
            except ServiceError as e:
                failed.append(str(e))
        if purge and broker is not None:
            try:
                broker.purge_flow(flow)
            except ServiceError as e:
                failed.append(f"purging the queues of {flow}: {e}; `flowrun down --purge "
                              f"{flow}` again removes them")
        if failed:
            raise EngineError("; ".join(failed))
        return removed

    def _shutdown_hook(self, flow: str, o: Observed, broker: Broker, grace: float) -> None:
        """The platform's shutdown hook: a one-shot run of the trigger's image with
        ELASTICIO_HOOK_SHUTDOWN, which calls the component's `shutdown(cfg, data)` with
        the data its `startup` left, then deletes that data."""
        step = o.labels.get(labels.STEP, "")
        name = names.hook_container(flow, step)
        if self.engine.find(name) is not None:
            self.engine.remove(name)
        self.put(Notice(f"running the shutdown hook of {step}"))
        self.engine.run(hook_spec(flow, step, o.image, o.env, broker))
        def ended() -> bool:
            ran = self.engine.find(name)
            return ran is None or ran.status not in ("created", "running")

        try:
            wait_for(ended, max(grace, 10.0), f"the shutdown hook of {step}")
        except FlowFailed:
            pass  # still running: stopped below
        ran = self.engine.find(name)
        for line in self.engine.logs(name, tail=20):
            self.put(StepLog(step, line))
        if ran is not None and ran.running:
            self.engine.stop(name, 0)
        self.engine.remove(name)
