"""The engine adapter for a Docker Swarm manager: every ContainerSpec becomes a swarm
service of one task, so the executor, reconcile and status work on a swarm as on
one host.

What differs from one host, and how:

- **Images** reach the nodes through the registry the user names
  (`FLOWRUN_REGISTRY`): built on the manager as on one host, then tagged
  `<registry>/<name>:<revision>` and pushed, unless the registry has it already.
- **Files** written into a container before it starts (a step's secrets) become
  Docker secrets mounted at the same path, owned by the step's uid, mode 0400.
  A secret's name carries a digest of its content (secrets cannot change).
- **Networks** are attachable overlays. A service cannot join a running service's
  network without restarting it, so the broker and the platform services do not
  join each flow's networks: every task of a flow also joins the broker's own
  overlay network (internal: it leads nowhere else), where it reaches them by
  the same aliases (`broker`, `platform`).
- **Published ports** are published on the node that runs the task (`mode=host`:
  this kernel class has no IPVS for the routing mesh), and a service with a named
  volume stays on the manager, where its volume is: the broker and the services.
- **Replacing** a container is a rolling update of its service that starts the
  new task before it stops the old one.
- **Every service uses `endpoint_mode=dnsrr`** (no virtual IPs without IPVS).
- Docker Swarm restarts a task that dies and reschedules it when its node is
  lost: an attached `up` does not watch container events here.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import (
    EndpointSpec,
    NetworkAttachmentConfig,
    Placement,
    Resources,
    RestartPolicy,
    SecretReference,
    ServiceMode,
    UpdateConfig,
)
from docker.utils import parse_bytes

from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.observed import Observed
from flowrun.engine.adapter import Engine, parse_time
from flowrun.engine.protocol import Capabilities
from flowrun.engine.spec import ContainerSpec
from flowrun.errors import BadInput, EngineError, FlowFailed, NameTaken
from flowrun.waiting import wait_for

# Task states before a task runs; swarm moves it on by itself.
_STARTING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready",
             "starting"}
# Task states of a task that ended badly; with restart condition `any`, swarm starts
# another.
_FAILED = {"failed", "rejected", "orphaned"}
SERVICE_NAME_MAX = 63
LOG_TIMEOUT = 10.0  # a log read from a lost node must end (swarm's own would hang)


def service_name(container: str) -> str:
    """A container's (or network's) name as a swarm name: those are DNS labels (no
    '.', at most 63 characters). A name with '.' keeps its parts, joined by '_', and
    gains a digest of the original, so two names never meet in one."""
    if "." not in container and len(container) <= SERVICE_NAME_MAX:
        return container
    digest = hashlib.sha256(container.encode()).hexdigest()[:8]
    return f"{container.replace('.', '_')[:SERVICE_NAME_MAX - 9]}-{digest}"


def _secret_name(service: str, path: str, content: bytes) -> str:
    digest = hashlib.sha256(content).hexdigest()[:12]
    base = f"{service}.{path.strip('/').replace('/', '-')}"
    return f"{base[:50]}.{digest}"


class SwarmEngine(Engine):
    """A Docker endpoint that is a swarm manager (DOCKER_HOST=tcp://manager:2375)."""

    capabilities = Capabilities(watches_events=False, reads_files=False, joins_networks=False,
                                broker_cluster=True, needs_registry=True, starts_apart=False)

    def __init__(self, client: docker.DockerClient | None = None,
                 registry: str | None = None) -> None:
        super().__init__(client)
        info = self.client.info().get("Swarm") or {}
        self.node_id = str(info.get("NodeID") or "")
        self.registry = registry
        self._pushed: set[str] = set()
        self._lock = threading.Lock()
        self._push_locks: dict[str, threading.Lock] = {}
        self._nodes: dict[str, tuple[str, str]] = {}  # node id -> (hostname, address)

    # ------------------------------------------------------------ images

    def registry_image(self, image: str) -> str:
        """The image as the nodes pull it, pushed to the registry when it is not there.
        One push per image at a time (replicas start together; a registry answers
        concurrent pushes of one blob with errors)."""
        self.preflight()
        remote = f"{self.registry}/{image}"
        with self._lock:
            lock = self._push_locks.setdefault(remote, threading.Lock())
        with lock:
            if remote in self._pushed:
                return remote
            try:
                self.api.inspect_distribution(remote)
            except docker.errors.APIError:
                self._push(image, remote)
            self._pushed.add(remote)
        return remote

    def _push(self, image: str, remote: str) -> None:
        repository, _, tag = remote.rpartition(":")
        self.api.tag(image, repository, tag)
        error = ""
        for _attempt in range(3):
            error = ""
            for chunk in self.api.push(repository, tag=tag, stream=True, decode=True):
                if "error" in chunk:
                    error = str(chunk["error"])
            if not error:
                return
            time.sleep(1.0)
        raise EngineError(f"pushing {remote} to the registry failed: {error}")

    # ------------------------------------------------------------ nodes

    def _node(self, node_id: str) -> tuple[str, str]:
        if node_id not in self._nodes:
            try:
                attrs = self.api.inspect_node(node_id)
                self._nodes[node_id] = (str(attrs["Description"]["Hostname"]),
                                        str(attrs["Status"].get("Addr") or ""))
            except docker.errors.APIError:
                return node_id[:12], ""
        return self._nodes[node_id]

    def ready_nodes(self) -> list[str]:
        """Ids of the nodes that take tasks, this manager first."""
        ready = [n["ID"] for n in self.api.nodes()
                 if n["Status"]["State"] == "ready" and n["Spec"].get("Availability") == "active"]
        return sorted(ready, key=lambda node: (node != self.node_id, node))

    # ------------------------------------------------------------ services as containers

    def observe(self, label_filter: Mapping[str, str | None]) -> list[Observed]:
        filters = [k if v is None else f"{k}={v}" for k, v in label_filter.items()]
        services = self.api.services(filters={"label": filters})
        if not services:
            return []
        # One listing of the tasks for all of them, not one per service.
        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in self.api.tasks():
            by_service.setdefault(task["ServiceID"], []).append(task)
        return [self._observed(service, by_service.get(service["ID"], []))
                for service in services]

    def inspect(self, name_or_id: str) -> Observed:
        service = self.api.inspect_service(service_name(name_or_id))
        return self._observed(service, self.api.tasks(filters={"service": service["ID"]}))

    def _observed(self, service: dict[str, Any], tasks: list[dict[str, Any]]) -> Observed:
        spec = service["Spec"]
        container = spec["TaskTemplate"]["ContainerSpec"]
        svc_labels = dict(spec.get("Labels") or {})
        tasks.sort(key=lambda t: t["Version"]["Index"])
        current = next((t for t in reversed(tasks) if t.get("DesiredState") == "running"),
                       tasks[-1] if tasks else None)
        state = (current or {}).get("Status", {}).get("State", "pending")
        one_shot = (spec["TaskTemplate"].get("RestartPolicy") or {}).get("Condition") == "none"
        # A task swarm will (re)start is "restarting" to reconcile, not dead; a one-shot
        # task (a shutdown hook) is "created" until it runs, "exited" once it ended.
        status = ("running" if state == "running"
                  else ("created" if one_shot else "restarting") if state in _STARTING
                  else "exited" if state == "complete" or one_shot else "restarting")
        # Restarts: tasks that failed or were lost with their node, not those a rolling
        # update shut down on purpose.
        ended = [t for t in tasks if t["Status"]["State"] in _FAILED and t is not current]
        last = ended[-1] if ended else None
        exit_code = int(((last or {}).get("Status", {}).get("ContainerStatus") or {})
                        .get("ExitCode") or 0)
        node, address = self._node(current["NodeID"]) if current and current.get("NodeID") \
            else ("", "")
        ports: dict[str, int] = {}
        for port in ((current or {}).get("Status", {}).get("PortStatus") or {}).get("Ports") \
                or []:
            ports[f"{port['TargetPort']}/{port.get('Protocol', 'tcp')}"] = int(
                port["PublishedPort"])
        env = dict(item.split("=", 1) for item in container.get("Env") or [] if "=" in item)
        return Observed(
            id=service["ID"], name=str(spec["Name"]), labels=svc_labels, status=status,
            started_at=parse_time((current or {}).get("Status", {}).get("Timestamp"))
            if state == "running" else None,
            finished_at=None, restart_count=len(ended), exit_code=exit_code,
            oom_killed=False, error=str((current or {}).get("Status", {}).get("Err") or ""),
            env=env, ports=ports, image=str(container.get("Image", "")).split("@")[0],
            node=node, host=address or "127.0.0.1",
        )

    def run(self, spec: ContainerSpec) -> str:
        name = service_name(spec.name)
        template = self._template(spec, name)
        try:
            service = self.api.create_service(name=name, labels=dict(spec.labels), **template)
        except docker.errors.APIError as e:
            if e.status_code == 409:
                raise NameTaken(f"a service named {name} exists") from None
            raise
        return str(service["ID"])

    def create(self, spec: ContainerSpec) -> str:
        raise EngineError("a swarm service starts as it is made: use run")

    def start(self, container_id: str, spec: ContainerSpec) -> None:
        raise EngineError("a swarm service starts as it is made: use run")

    def replace(self, spec: ContainerSpec, grace: float) -> str:
        """A rolling update: the new task starts before the old one stops."""
        name = service_name(spec.name)
        try:
            current = self.api.inspect_service(name)
        except docker.errors.NotFound:
            return self.run(spec)
        forced = int(current["Spec"]["TaskTemplate"].get("ForceUpdate") or 0) + 1
        template = self._template(spec, name, forced)
        self.api.update_service(current["ID"], version=current["Version"]["Index"],
                                name=name, labels=dict(spec.labels), fetch_current_spec=False,
                                **template)
        # The old task still holds its secrets while it stops: what cannot go now goes
        # at the next update or at `down`.
        self._forget_old_secrets(name, keep={s["SecretName"] for s in
                                            template["task_template"]["ContainerSpec"]
                                            .get("Secrets") or []})
        return str(current["ID"])

    def _template(self, spec: ContainerSpec, name: str, forced: int = 0) -> dict[str, Any]:
        """`forced`: a new value makes swarm replace the task even with an equal spec."""
        secrets = [self._secret(name, path, content, mode, spec.files_owner)
                   for path, (content, mode) in sorted(spec.files.items())]
        networks = []
        if spec.network:
            networks.append(NetworkAttachmentConfig(self.network_name(spec.network),
                                                    aliases=list(spec.aliases) or None))
        if spec.labels.get(labels.ROLE) in (labels.ROLE_STEP, labels.ROLE_HOOK) and (
                spec.network != names.BROKER_NETWORK):
            networks.append(NetworkAttachmentConfig(self.network_name(names.BROKER_NETWORK)))
        mounts = [docker.types.Mount(path, volume, type="volume")
                  for volume, path in spec.volumes.items()]
        container = docker.types.ContainerSpec(
            self.registry_image(spec.image), command=spec.command, env=dict(spec.env),
            labels=dict(spec.labels), user=spec.user, hostname=spec.hostname,
            mounts=mounts or None, secrets=secrets or None,
            cap_drop=["ALL"] if spec.hardened else None,
            stop_grace_period=int(10 * 1e9), init=spec.init or None,
        )
        # A service with a named volume stays where its volume is: on the node it was
        # placed on, else on the manager.
        pinned = spec.node or (self.node_id if spec.volumes else None)
        placement = Placement(constraints=[f"node.id=={pinned}"]) if pinned else None
        task_template = docker.types.TaskTemplate(
            container_spec=container,
            resources=Resources(mem_limit=parse_bytes(spec.memory) if spec.memory else None),
            restart_policy=RestartPolicy(condition="any" if spec.restart else "none",
                                         delay=int(0.5 * 1e9)),
            placement=placement, networks=networks,
            log_driver={"Name": "json-file", "Options": {"max-size": "10m", "max-file": "2"}},
            force_update=forced,
        )
        ports = [{"Protocol": port.split("/")[1], "TargetPort": int(port.split("/")[0]),
                  "PublishMode": "host",
                  **({"PublishedPort": published} if published else {})}
                 for port, (_address, published) in spec.ports.items()]
        return {
            "task_template": task_template,
            "mode": ServiceMode("replicated", replicas=1),
            "update_config": UpdateConfig(parallelism=1, order="start-first",
                                          failure_action="pause"),
            "endpoint_spec": EndpointSpec(mode="dnsrr", ports=ports or None),
        }

    def _secret(self, service: str, path: str, content: bytes, mode: int,
                owner: int) -> SecretReference:
        secret_name = _secret_name(service, path, content)
        found = self.api.secrets(filters={"name": secret_name})
        secret_id = next((s["ID"] for s in found if s["Spec"]["Name"] == secret_name), None)
        if secret_id is None:
            try:
                secret_id = self.api.create_secret(
                    secret_name, content, labels={labels.ROLE: "secret",
                                                  f"{labels.PREFIX}.service": service})["ID"]
            except docker.errors.APIError as e:
                if e.status_code != 409:
                    raise
                secret_id = self.api.secrets(filters={"name": secret_name})[0]["ID"]
        return SecretReference(secret_id, secret_name, filename=path, uid=str(owner),
                               gid=str(owner), mode=mode)

    def _forget_old_secrets(self, service: str, keep: set[str]) -> None:
        for secret in self.api.secrets(filters={"label": f"{labels.PREFIX}.service={service}"}):
            if secret["Spec"]["Name"] not in keep:
                try:
                    self.api.remove_secret(secret["ID"])
                except docker.errors.APIError:
                    pass  # still in use by a task that is stopping: the next down takes it

    def stop(self, name: str, grace: float) -> None:
        """Removing the service stops its task (TERM, its stop grace, KILL)."""
        self.remove(name)

    def remove(self, name: str) -> None:
        service = service_name(name)
        try:
            self.api.remove_service(service)
        except docker.errors.NotFound:
            return
        # Until its task has gone, its network endpoints are still in use.
        def gone() -> bool:
            try:
                return not self.api.tasks(filters={"service": service})
            except docker.errors.APIError:
                return True

        _patiently(gone, 30, f"the tasks of {service} to go", every=0.3)
        self._forget_old_secrets(service, keep=set())

    def restart(self, name: str, grace: float = 10) -> None:
        current = self.api.inspect_service(service_name(name))
        template = dict(current["Spec"]["TaskTemplate"])
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        self.api.update_service(current["ID"], version=current["Version"]["Index"],
                                task_template=template, fetch_current_spec=True)

    def logs(self, name: str, *, follow: bool = False, tail: int | str = "all",
             since: datetime | int | None = None, timestamps: bool = False) -> Iterator[str]:
        """A service's output. Read in a thread of its own and bounded: the manager's
        log stream from a task on a lost node can stall for minutes. A read ends after
        LOG_TIMEOUT; a followed one after that much silence once its node is down."""
        if isinstance(since, datetime):
            since = int(since.timestamp())
        try:
            stream = self.api.service_logs(service_name(name), stdout=True, stderr=True,
                                           follow=follow, tail=tail, timestamps=timestamps,
                                           since=since or 0)
        except (docker.errors.NotFound, docker.errors.APIError):
            return
        chunks: queue.Queue[bytes | None] = queue.Queue()

        def pump() -> None:
            try:
                for chunk in stream:
                    chunks.put(chunk)
            except (requests.exceptions.RequestException, docker.errors.APIError):
                pass
            finally:
                chunks.put(None)

        threading.Thread(target=pump, daemon=True, name=f"logs-{name}").start()
        deadline = None if follow else time.monotonic() + LOG_TIMEOUT
        buffer = b""
        while True:
            left = LOG_TIMEOUT if deadline is None else deadline - time.monotonic()
            if left <= 0:
                break
            try:
                chunk = chunks.get(timeout=left)
            except queue.Empty:
                # Followed and quiet: fine while its task's node is up; a lost node's
                # stream would stall for minutes, so it ends (a follower attaches again
                # to the task swarm starts elsewhere).
                if deadline is None and self._node_up(name):
                    continue
                break
            if chunk is None:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace").rstrip("\r")
        if buffer:
            yield buffer.decode("utf-8", "replace")

    def _node_up(self, name: str) -> bool:
        try:
            tasks = self.api.tasks(filters={"service": service_name(name),
                                            "desired-state": "running"})
            return all(self.api.inspect_node(t["NodeID"])["Status"]["State"] == "ready"
                       for t in tasks if t.get("NodeID"))
        except docker.errors.APIError:
            return False

    def preflight(self) -> None:
        if self.registry is None:
            raise BadInput("the Docker engine (DOCKER_HOST) is a swarm manager: name the "
                           "registry its nodes pull from, e.g. "
                           "FLOWRUN_REGISTRY=registry.example:5000")

    def run_once(self, image: str, command: list[str], stdin: bytes, *, user: str,
                 memory: str | None, timeout: float,
                 workdir: str | None = None) -> tuple[int, bytes, bytes]:
        raise EngineError("`flowrun exec` runs a step on this host's engine: unset "
                          "DOCKER_HOST (a swarm has no one-shot containers with input)")

    def read_file(self, name: str, path: str) -> bytes | None:
        raise EngineError("a swarm task's files are on its node, out of the manager's reach "
                          "(capabilities.reads_files)")

    # ------------------------------------------------------------ networks

    NETWORK_OPTIONS = {"driver": "overlay", "attachable": True}
    REMOVE_ATTEMPTS, REMOVE_PAUSE = 60, 0.5

    def network_name(self, name: str) -> str:
        return service_name(name)

    def connect(self, container: str, network: str, aliases: list[str]) -> None:
        raise EngineError("a running swarm service joins no network (it would be restarted); "
                          "a flow's tasks reach the broker and the services on the broker's "
                          "network (capabilities.joins_networks)")

    def _release_network(self, network_id: str) -> None:
        """Nothing to disconnect: services leave a network when they are removed."""

    def _network_removed(self, network_id: str) -> None:
        """A swarm removes a network after answering: a flow brought up again at once
        would find it listed, skip creating it, and then not find it."""
        def gone() -> bool:
            try:
                self.api.inspect_network(network_id)
            except docker.errors.NotFound:
                return True
            return False

        _patiently(gone, 15, f"network {network_id} to go")

    # ------------------------------------------------------------ events

    def container_events(self) -> Any:
        raise EngineError("a swarm restarts and reschedules tasks itself")

    def last_exit(self, container_id: str, since: datetime | None) -> tuple[int, bool] | None:
        raise EngineError("a swarm keeps no container events to read an exit from "
                          "(capabilities.watches_events)")


def connect_engine(registry: str | None = None) -> Engine:
    """The engine DOCKER_HOST (or the local socket) names: a swarm manager gives a
    SwarmEngine, any other engine the one-host Engine."""
    engine = Engine()
    # Asking for the swarm answers at once where none is managed from here (about 1 ms;
    # the engine's whole `info`, which says the same, takes 10-20 ms of each command).
    try:
        engine.api.inspect_swarm()
    except docker.errors.APIError as e:
        if "not a swarm manager" in str(e):
            return engine  # no swarm, or a worker of one
        # Anything else (a swarm locked, or without a leader): as the engine's info says.
        swarm = engine.client.info().get("Swarm") or {}
        if not (swarm.get("LocalNodeState") == "active" and swarm.get("ControlAvailable")):
            return engine
    return SwarmEngine(engine.client, registry)


def _patiently(done: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Wait a while for what a swarm does after it has answered; past that, go on
    (what follows fails with a clearer error than a timeout would give)."""
    try:
        wait_for(done, timeout, what, every=every)
    except FlowFailed:
        pass
