"""What a flow needs besides its steps' containers, planned like them: images to
build, networks to make, the broker and the platform services to start, each with
its cause. Pure: it reads a snapshot of what exists (`Platform`), so `up
--dry-run` shows a base image or a network that would be made, and says nothing
that `up` would not do."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from flowrun.contract import names
from flowrun.core.plan import Plan
from flowrun.core.reconcile import Action, ActionType


class PrepareType(StrEnum):
    NEED = "need"  # something `up` cannot make itself: it stops and says so
    BUILD = "build"
    MAKE = "make"
    START = "start"


@dataclass(frozen=True)
class Platform:
    """What exists already, as observed once."""

    images: frozenset[str]  # of the images the plan could need
    networks: frozenset[str]
    broker_running: bool
    services_image: str | None  # the image the running services run, if they run


@dataclass(frozen=True)
class Preparation:
    type: PrepareType
    target: str
    cause: str

    def line(self) -> str:
        return f"{self.type.value:<9} {self.target:<28} {self.cause}"


def prepare(plan: Plan, actions: Sequence[Action], platform: Platform,
            services_image: str, base_images: Sequence[str] = ()) -> list[Preparation]:
    """In the order `up` does them: images, the broker and the services, networks.
    `base_images`: those the images to build start from (made by `make images`)."""
    started = {a.step for a in actions if a.type in (ActionType.CREATE, ActionType.RECREATE)}
    out: list[Preparation] = []
    for base in base_images:
        if base not in platform.images:
            out.append(Preparation(PrepareType.NEED, f"base image {base}",
                                   "missing: `make images` builds it"))
    for image in dict.fromkeys(s.image for s in plan.steps if s.id in started):
        if image not in platform.images:
            out.append(Preparation(PrepareType.BUILD, image, "not built yet"))
    if services_image not in platform.images:
        out.append(Preparation(PrepareType.BUILD, services_image, "not built yet"))
    if not platform.broker_running:
        out.append(Preparation(PrepareType.START, f"broker {names.BROKER_CONTAINER}",
                               "not running"))
    if platform.services_image != services_image:
        out.append(Preparation(
            PrepareType.START, f"services {names.SERVICES_CONTAINER}",
            "not running" if platform.services_image is None else "runs an older image"))
    for network in (names.network(plan.flow), names.internal_network(plan.flow)):
        if network not in platform.networks:
            out.append(Preparation(PrepareType.MAKE, f"network {network}", "missing"))
    return out
