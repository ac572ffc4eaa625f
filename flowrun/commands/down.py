"""`flowrun down`: stop a flow (TERM, grace, KILL), or everything and the broker."""

from __future__ import annotations

import queue

from flowrun.broker.platform import forget_services
from flowrun.broker.server import broker_services, find_broker, forget_broker
from flowrun.commands.status import running_flows
from flowrun.contract import names
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import EngineError, StaleNetwork
from flowrun.supervise.events import Event, Notice
from flowrun.supervise.takedown import TakeDown


def take_down(engine: ContainerEngine, flow: str | None, *, grace: float, purge: bool,
              everything: bool = False) -> None:
    events: queue.Queue[Event] = queue.Queue()
    takedown = TakeDown(engine, events.put)
    flows = running_flows(engine) if everything else [flow] if flow else []
    networks = set(engine.networks()) if everything else set()
    if not flows and not everything:
        print("no flow is running")
    failed: list[str] = []
    for name in flows:
        try:
            removed = takedown.down(name, grace, purge=purge)
        except EngineError as e:  # the others (and the broker) are still taken down
            failed.append(f"{name}: {e}")
            continue
        print(f"{name}: removed {len(removed)} container(s)"
              + (" and its queues" if purge and find_broker(engine) else "; queues kept"))
        _say_warnings(events)
    if everything:
        for network in networks:
            try:
                engine.remove_network(network)
            except StaleNetwork as e:
                print(f"warning: {e}")
            except EngineError as e:
                failed.append(str(e))
        if engine.find(names.SERVICES_CONTAINER) is not None:
            engine.stop(names.SERVICES_CONTAINER, grace)
            engine.remove(names.SERVICES_CONTAINER)
            print(f"removed the platform services ({names.SERVICES_CONTAINER})")
        for broker_name in broker_services(engine):
            engine.stop(broker_name, grace)
            engine.remove(broker_name)
            print(f"removed the broker ({broker_name})")
        if purge:
            forget_broker(engine)
            forget_services(engine)
            print("removed the broker's data and secret, and the platform services' state")
    if failed:
        raise EngineError("; ".join(failed) + "; restarting Docker clears stale endpoints")


def _say_warnings(events: queue.Queue[Event]) -> None:
    while not events.empty():
        event = events.get_nowait()
        if isinstance(event, Notice) and event.level == "warning":
            print(f"warning: {event.text}")
