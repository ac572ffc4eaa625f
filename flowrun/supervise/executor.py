"""Applying actions: build images, ensure the broker, start and stop step containers.

The executor takes no decisions of its own: it carries out the actions that
reconcile planned and reports progress as events.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from flowrun.broker.platform import (
    Services,
    ensure_services,
)
from flowrun.broker.server import BROKER_NAME, Broker, amqp_client, ensure_broker
from flowrun.broker.topology import declare_topology
from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.plan import Plan, RealStep
from flowrun.core.reconcile import Action, ActionType
from flowrun.engine.images import build_image, build_services_image
from flowrun.engine.protocol import ContainerEngine
from flowrun.engine.spec import ContainerSpec
from flowrun.errors import (
    BuildFailed,
    FlowFailed,
    FlowrunError,
    NameTaken,
    ServiceError,
)
from flowrun.settings import base_image
from flowrun.supervise.events import (
    ApplyDone,
    BuildOutput,
    Event,
    Notice,
    Phase,
    StepPhase,
    Webhook,
)
from flowrun.supervise.followers import EngineWatcher, Follower, LiveListener, sailor_state
from flowrun.supervise.lock import FlowLock
from flowrun.supervise.specs import record_labels, step_spec
from flowrun.supervise.takedown import TakeDown
from flowrun.waiting import wait_for

START_WORKERS = 8
# New steps' containers being made while the flow's networks are joined: (step, replica)
# -> its (container id, the spec it was made from), or None when one of that name
# appeared meanwhile.
Made = dict[tuple[str, int], Future[tuple[str, ContainerSpec] | None]]
# A rolling replacement waits this long for each new replica to come live.
ROLL_LIVE_TIMEOUT = 60.0
DEFAULT_GRACE = 10.0
class Cancelled(FlowrunError):
    """An apply stopped early because `up` was interrupted."""


class TakenDown(FlowrunError):
    """A heal found its flow taken down by `flowrun down` meanwhile."""


class Executor:
    """Carries out a reconcile's actions (and core/prepare.py's preparations, which
    `up --dry-run` shows), reporting each as an event. Its pools, in this order:

    1. prepare (4): the broker then the services, beside the builds (2 at a time,
       CPU-bound) and then the flow's two networks; the AMQP client loaded meanwhile;
    2. keep (8): steps left running are followed from now on;
    3. networks (5): the broker and the services join the flow's networks (where the
       engine joins running containers to networks), the flow's record, the flow's
       spec handed to the services: all before any step starts; beside it, create
       (8): the first new steps' containers made, not started (where the engine
       makes them apart), until the start pool starts each;
    4. start (9): the topology and the steps' broker users, beside every step's
       create, replace, rolling replacement or removal.

    Each pool ends before the next begins; nothing is shared between pools but the
    broker and services found in 1 (set once, read after)."""

    def __init__(self, engine: ContainerEngine, events: queue.SimpleQueue[Event]) -> None:
        self.engine = engine
        self.events = events
        self.stop_following = threading.Event()
        self.followers: dict[str, Follower] = {}
        self.broker: Broker | None = None
        self.services: Services | None = None
        self.listener: LiveListener | None = None
        self.engine_watcher: EngineWatcher | None = None
        # Set by an interrupted `up`: what has not started yet is not started.
        self.cancelled = threading.Event()

    def put(self, event: Event) -> None:
        self.events.put(event)

    def retire(self, container: str) -> None:
        follower = self.followers.pop(container, None)
        if follower is not None:
            follower.retired.set()

    def watch_engine(self, flow: str) -> None:
        """Hear Docker say when a step's container (or the broker's) dies or goes."""
        if not self.engine.capabilities.watches_events:
            return  # a swarm restarts and reschedules tasks itself
        if self.engine_watcher is None:
            self.engine_watcher = EngineWatcher(self.engine, flow, self.put,
                                                self.stop_following).start()

    def follow(self, name: str, container_id: str, step: str, replica: int,
               from_now: bool = False) -> None:
        # By id, not name: a replacement has the same name, and the old container's
        # follower must end with it rather than follow the new one a second time.
        self.followers[name] = Follower(self.engine, container_id, step, self.put,
                                        self.stop_following, from_now=from_now,
                                        replica=replica).start()

    # ------------------------------------------------------------ apply

    def apply_async(self, plan: Plan, actions: Sequence[Action], grace: float,
                    heal: bool = False) -> threading.Thread:
        thread = threading.Thread(target=self._apply_reporting,
                                  args=(plan, actions, grace, heal), daemon=True, name="apply")
        thread.start()
        return thread

    def _apply_reporting(self, plan: Plan, actions: Sequence[Action], grace: float,
                         heal: bool) -> None:
        try:
            self.apply(plan, actions, grace, heal)
            self.put(ApplyDone())
        except FlowrunError as e:
            self.put(ApplyDone(error=str(e)))
        except Exception as e:  # an engine or broker failure we did not foresee
            self.put(ApplyDone(error=f"{type(e).__name__}: {e}"))

    def apply(self, plan: Plan, actions: Sequence[Action], grace: float,
              heal: bool = False) -> None:
        with FlowLock(plan.flow, on_wait=lambda text: self.put(Notice(text, "warning"))):
            # A heal decided before a `flowrun down` from elsewhere took the lock must
            # not bring the flow back once that down is done: down removes the record
            # first, and a heal only goes on while it is there.
            if heal and self.engine.get_record(names.record_volume(plan.flow)) is None:
                raise TakenDown(f"flow {plan.flow} was taken down (flowrun down)")
            self._apply(plan, actions, grace)

    def _apply(self, plan: Plan, actions: Sequence[Action], grace: float) -> None:
        starts = [a for a in actions if a.type in (ActionType.CREATE, ActionType.RECREATE)]
        removals = [a for a in actions if a.type is ActionType.REMOVE]
        kept = [a for a in actions if a.type is ActionType.KEEP]
        started_steps = {a.step for a in starts}
        flow = plan.flow
        networks = ((names.network(flow), False), (names.internal_network(flow), True))
        # Builds and the broker's boot overlap: both take seconds on a cold start. The
        # flow's networks are made as soon as the builds succeeded, while the broker
        # and the services are still being looked at.
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="prepare") as pool:
            services_future = pool.submit(self._ensure_platform)
            pool.submit(amqp_client)  # loaded while this waits for Docker, not before
            self._build_all(plan, [s for s in plan.steps if s.id in started_steps])
            made = [pool.submit(self.engine.ensure_network, network, {labels.FLOW: flow},
                                internal=internal) for network, internal in networks]
            services_future.result()
            for future in made:
                future.result()
        self._check_cancelled()
        with ThreadPoolExecutor(max_workers=START_WORKERS, thread_name_prefix="keep") as pool:
            list(pool.map(lambda a: self._keep(plan, a.step, a.replica), kept))
        assert self.services is not None
        services = self.services

        def put_flow() -> None:
            # Before any step starts: its first call is for its step info.
            try:
                services.put_flow(plan)
            except ServiceError as e:
                raise FlowFailed(f"the platform services refused flow {flow}: {e}; see "
                                 f"`docker logs {names.SERVICES_CONTAINER}`") from None
            url = services.webhook_url(flow) if plan.webhook else None
            if url is not None:
                self.put(Webhook(f"called over HTTP: POST or GET {url}", url=url))

        # The joins below leave Docker waiting more than working (a core and a half
        # idle at 5 steps): the first new steps' containers (as many as start at once)
        # are made meanwhile, not started: a container has no network endpoint before
        # its start, so nothing races the joins. Each starts once it is made and the
        # joins are done.
        steps = {s.id: (i, s) for i, s in enumerate(plan.steps)}
        fresh = sorted((a for a in starts if a.type is ActionType.CREATE
                        and self.engine.capabilities.starts_apart),
                       key=lambda a: (steps[a.step][0], a.replica))
        with ThreadPoolExecutor(max_workers=START_WORKERS,
                                thread_name_prefix="create") as creating:
            creates: Made = {(a.step, a.replica): creating.submit(
                self._create, plan, steps[a.step][1], steps[a.step][0], a.replica)
                for a in fresh[:START_WORKERS]}
            self._join_and_start(plan, starts, removals, grace, put_flow, creates)

    def _join_and_start(self, plan: Plan, starts: Sequence[Action],
                        removals: Sequence[Action], grace: float,
                        put_flow: Callable[[], None], made: Made) -> None:
        # Each of these is a Docker or HTTP round trip of tens of milliseconds: at once.
        # The broker and the services join the flow's networks before any step starts
        # on them (joins racing container starts left Docker 20.10 with endpoints it
        # would not remove at `down`). The mappers' internal network needs the broker
        # only: a mapper's config is all in its step file, it makes no step-info call.
        # (On a swarm steps reach both on the broker's network instead.)
        flow = plan.flow
        networks = ((names.network(flow), False), (names.internal_network(flow), True))
        joins = self.engine.capabilities.joins_networks
        with ThreadPoolExecutor(max_workers=5, thread_name_prefix="networks") as pool:
            prepared = [pool.submit(self.engine.connect, BROKER_NAME, network,
                                    [names.BROKER_ALIAS])
                        for network, _internal in networks if joins]
            if joins:
                prepared.append(pool.submit(self.engine.connect, names.SERVICES_CONTAINER,
                                            names.network(flow), [names.SERVICES_ALIAS]))
            prepared += [
                pool.submit(self.engine.put_record, names.record_volume(flow),
                            record_labels(plan)),
                pool.submit(put_flow)]
            for future in prepared:
                future.result()
        self._start_steps(plan, starts, removals, grace, made)

    def _create(self, plan: Plan, step: RealStep, index: int,
                replica: int) -> tuple[str, ContainerSpec] | None:
        """Make a new step's container, for `_replace` to start: its id and spec."""
        assert self.broker is not None
        self._check_cancelled()
        spec = step_spec(plan, step, index, self.broker, replica)
        try:
            return self.engine.create(spec), spec
        except NameTaken:
            return None  # one appeared since: _replace replaces it

    def _start_steps(self, plan: Plan, starts: Sequence[Action], removals: Sequence[Action],
                     grace: float, made: Made | None = None) -> None:
        # Containers start while the flow's topology is declared, yet no step can
        # publish before every queue and binding exists: the steps' broker users are
        # made only after the topology (a sailor retries its login, and its step-info
        # call, until then).
        index = {s.id: i for i, s in enumerate(plan.steps)}
        tasks: list[Callable[[], None]] = [lambda: self._prepare_flow(plan)]
        for step in plan.steps:
            mine = [a for a in starts if a.step == step.id]
            # A replicated step is replaced one replica at a time, each new one live
            # before the next old one stops: its queue never lacks a consumer.
            rolling = [a for a in mine if a.type is ActionType.RECREATE and step.replicas > 1]
            tasks += [functools.partial(self._replace, plan, step, index[step.id], grace,
                                        a.replica, a.type is ActionType.CREATE,
                                        (made or {}).get((step.id, a.replica)))
                      for a in mine if a not in rolling]
            if rolling:
                tasks.append(functools.partial(self._roll, plan, step, index[step.id], grace,
                                               [a.replica for a in rolling]))
        tasks += [functools.partial(self._remove, plan.flow, a.step, a.replica, grace)
                  for a in removals]
        with ThreadPoolExecutor(max_workers=START_WORKERS + 1,
                                thread_name_prefix="start") as pool:
            for future in [pool.submit(task) for task in tasks]:
                future.result()

    def _keep(self, plan: Plan, step: str, replica: int) -> None:
        self.put(StepPhase(step, Phase.WARMING, "unchanged, running", replica))
        name = names.container(plan.flow, step, replica)
        kept = self.engine.find(name)
        if kept is not None:
            # Its sailor's own word says whether it is live; its old log lines are
            # history, so follow from now on.
            if sailor_state(self.engine, kept).get("live"):
                self.put(StepPhase(step, Phase.LIVE, replica=replica))
            self.follow(name, kept.id, step, replica, from_now=True)

    def _prepare_flow(self, plan: Plan) -> None:
        broker = self.broker
        assert broker is not None
        # Always, also when no step changes: a second `up` repairs a deleted queue or
        # binding, and takes away the bindings of steps that left the flow.
        broker.ensure_vhost(plan.flow)
        declare_topology(broker, plan)
        steps = [s.id for s in plan.steps]
        if self.listener is None or not self.listener.thread.is_alive():
            self.listener = LiveListener(broker, plan.flow, steps, self.put,
                                         self.stop_following).start()
        else:
            self.listener.listen(steps)
        broker.ensure_users(plan.flow, [s.id for s in plan.steps])

    def _check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled("interrupted")

    def _ensure_broker(self) -> Broker:
        broker, started = ensure_broker(self.engine)
        if started:
            self.put(Notice(f"started the broker ({BROKER_NAME})"))
        return broker

    def _ensure_platform(self) -> None:
        """The broker, then the platform services (their image built first if need
        be): both outlive this `up`."""
        self.broker = self._ensure_broker()
        image = build_services_image(self.engine,
                                     lambda line: self.put(BuildOutput("services", line)))
        self.services, started = ensure_services(self.engine, self.broker, image)
        if started:
            self.put(Notice(f"started the platform services ({names.SERVICES_CONTAINER})"))

    def _build_all(self, plan: Plan, steps: Sequence[RealStep]) -> None:
        by_image: dict[str, list[RealStep]] = {}
        for step in steps:
            by_image.setdefault(step.image, []).append(step)
        if not by_image:
            return
        if not self.engine.image_exists(base_image()):
            raise BuildFailed(
                f"the base image {base_image()} is missing; run `make images` "
                "(scripts/build-base-images) to build it without a registry"
            )

        def build(image: str) -> None:
            self._check_cancelled()
            users = by_image[image]
            first = users[0]
            for s in users:
                self.put(StepPhase(s.id, Phase.BUILDING, first.component.name))
            started = time.monotonic()
            built = build_image(self.engine, first.component, first.revision, image,
                                lambda line: self.put(BuildOutput(first.component.name, line)))
            if built:
                self.put(Notice(f"built {image} in {time.monotonic() - started:.1f} s"))

        # Two at a time: builds are CPU-bound and this machine class has two cores.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="build") as pool:
            for future in [pool.submit(build, image) for image in by_image]:
                future.result()

    def _replace(self, plan: Plan, step: RealStep, index: int, grace: float,
                 replica: int = 1, missing: bool = False,
                 creating: Future[tuple[str, ContainerSpec] | None] | None = None) -> None:
        """`missing`: the flow's observation found no such container (a CREATE), so
        none is looked for; one that appeared since is replaced all the same.
        `creating`: its container being made already (`_create`), to be started."""
        assert self.broker is not None
        self._check_cancelled()
        name = names.container(plan.flow, step.id, replica)
        made = creating.result() if creating is not None else None
        spec = made[1] if made else step_spec(plan, step, index, self.broker, replica)
        existing = not missing and self.engine.find(name) is not None
        if existing:
            # The old container finishes the message in hand, acks it and exits; what
            # it had prefetched goes back to the queue for the new one. (On a swarm the
            # new task starts first.)
            self.put(StepPhase(step.id, Phase.STOPPING, "replacing", replica))
            self.retire(name)
        self.put(StepPhase(step.id, Phase.STARTING, replica=replica))
        if made is not None:  # made while the flow's networks were joined
            container_id = made[0]
            self.engine.start(container_id, spec)
        elif existing:
            container_id = self.engine.replace(spec, grace)
        else:
            try:
                container_id = self.engine.run(spec)
            except NameTaken:
                self.retire(name)
                container_id = self.engine.replace(spec, grace)
        self.put(StepPhase(step.id, Phase.WARMING, replica=replica))
        self.follow(name, container_id, step.id, replica)

    def _roll(self, plan: Plan, step: RealStep, index: int, grace: float,
              replicas: Sequence[int]) -> None:
        """Replace replicas one after another; stop at one that does not come live,
        leaving the rest on their old revision."""
        for n, replica in enumerate(replicas):
            self._replace(plan, step, index, grace, replica)
            if n + 1 < len(replicas):
                self._wait_live(plan.flow, step.id, replica)

    def _wait_live(self, flow: str, step: str, replica: int) -> None:
        name = names.container(flow, step, replica)
        who = names.replica_label(step, replica, True)

        def live() -> bool:
            current = self.engine.find(name)
            return current is not None and bool(sailor_state(self.engine, current).get("live"))

        wait_for(live, ROLL_LIVE_TIMEOUT, who, stop=self._check_cancelled,
                 on_timeout=lambda: FlowFailed(
                     f"{who} was not live {ROLL_LIVE_TIMEOUT:.0f} s after its start; its other "
                     f"replicas keep running their previous revision; see `flowrun logs "
                     f"{flow} {step}`"))

    def _remove(self, flow: str, step_id: str, replica: int, grace: float) -> None:
        self.put(StepPhase(step_id, Phase.STOPPING, "no longer in the flow", replica))
        name = names.container(flow, step_id, replica)
        self.retire(name)
        self.engine.stop(name, grace)
        self.engine.remove(name)
        self.put(StepPhase(step_id, Phase.STOPPED, replica=replica))

    # ------------------------------------------------------------ down

    def down(self, flow: str, grace: float, purge: bool = False,
             lock: bool = True) -> list[str]:
        """Take the flow down (supervise/takedown.py), its followers first."""
        self.stop_following.set()
        return TakeDown(self.engine, self.put, self.broker, self.services).down(
            flow, grace, purge, lock)
