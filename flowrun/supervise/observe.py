"""What exists besides a flow's containers, looked at once (for core/prepare.py)."""

from __future__ import annotations

from flowrun.broker.platform import IMAGE_LABEL
from flowrun.broker.server import find_broker
from flowrun.contract import names
from flowrun.core.plan import Plan
from flowrun.core.prepare import Platform
from flowrun.engine.protocol import ContainerEngine


def observe_platform(engine: ContainerEngine, plan: Plan, services_image: str,
                     base_images: tuple[str, ...] = ()) -> Platform:
    images = {s.image for s in plan.steps} | {services_image, *base_images}
    existing = set(engine.networks(plan.flow))
    services = engine.find(names.SERVICES_CONTAINER)
    return Platform(
        images=frozenset(i for i in images if engine.image_exists(i)),
        networks=frozenset(n for n in (names.network(plan.flow),
                                       names.internal_network(plan.flow))
                           if engine.network_name(n) in existing),
        broker_running=find_broker(engine) is not None,
        services_image=(services.labels.get(IMAGE_LABEL)
                        if services is not None and services.running else None))
