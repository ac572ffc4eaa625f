"""The engine adapter: the only module that talks to Docker."""

from __future__ import annotations

import io
import socket
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig

from flowrun.core import labels
from flowrun.core.observed import Observed
from flowrun.engine.protocol import Capabilities
from flowrun.engine.spec import ContainerSpec
from flowrun.errors import (
    BuildFailed,
    EngineError,
    EngineUnavailable,
    NameTaken,
    StaleNetwork,
)

# A file read from a running container: again, when the archive came short.
READ_ATTEMPTS = 3


def parse_time(value: str | None) -> datetime | None:
    """Docker's timestamps (nanoseconds, `Z`; Python 3.11 reads both), or None for
    Docker's zero time, which means never."""
    if not value or value.startswith("0001-"):
        return None
    return datetime.fromisoformat(value)


class Engine:
    """One Docker host. (engine/swarm.py: a swarm manager, behind the same calls.)"""

    capabilities = Capabilities(watches_events=True, reads_files=True, joins_networks=True,
                                broker_cluster=False, needs_registry=False, starts_apart=True)
    registry: str | None = None

    def __init__(self, client: docker.DockerClient | None = None) -> None:
        try:
            if client is None:
                # Made without an API version, the client asks the engine for it: that
                # answer is the sign of life a ping would give (one round trip fewer).
                client = docker.from_env(timeout=120)
            else:
                client.ping()
            self.client = client
        except docker.errors.DockerException as e:
            raise EngineUnavailable(
                f"no Docker engine answers ({e.__class__.__name__}); start Docker, "
                "or run scripts/ensure-engine (root on Debian installs and starts one)"
            ) from None
        self.api = self.client.api
        if str(self.api.base_url).startswith("http+docker://"):
            # A Unix socket is no web address: no proxy of the environment applies to
            # it, and requests would look for one through every environment variable
            # on every call (a tenth of `up`'s own CPU on a 21-step flow).
            self.api.trust_env = False

    # ------------------------------------------------------------ images

    def preflight(self) -> None:
        """One host runs what it builds: nothing to check."""

    def ready_nodes(self) -> list[str]:
        raise EngineError("one Docker host has no nodes to spread a broker cluster over")

    def image_exists(self, tag: str) -> bool:
        try:
            self.client.images.get(tag)
            return True
        except docker.errors.ImageNotFound:
            return False

    def build(self, context: str, tag: str, buildargs: Mapping[str, str],
              image_labels: Mapping[str, str], on_line: Callable[[str], None]) -> None:
        """Build with the classic builder, streaming each output line to `on_line`."""
        tail: list[str] = []
        try:
            for chunk in self.api.build(path=context, tag=tag, buildargs=dict(buildargs),
                                        labels=dict(image_labels), rm=True, forcerm=True,
                                        decode=True, pull=False):
                if "error" in chunk:
                    raise BuildFailed("\n".join([*tail[-15:], chunk["error"].strip()]))
                text = chunk.get("stream", "")
                for line in text.splitlines():
                    if line.strip():
                        tail.append(line)
                        on_line(line)
        except docker.errors.APIError as e:
            raise BuildFailed(str(e.explanation or e)) from None

    def remove_image(self, tag: str) -> None:
        try:
            self.client.images.remove(tag, noprune=False)
        except docker.errors.APIError:
            pass

    # ------------------------------------------------------------ containers

    def observe(self, label_filter: Mapping[str, str | None]) -> list[Observed]:
        filters = [k if v is None else f"{k}={v}" for k, v in label_filter.items()]
        out = []
        for summary in self.api.containers(all=True, filters={"label": filters}):
            try:
                out.append(self.inspect(summary["Id"]))
            except docker.errors.NotFound:  # removed between list and inspect
                continue
        return out

    def inspect(self, name_or_id: str) -> Observed:
        info = self.api.inspect_container(name_or_id)
        state = info["State"]
        ports: dict[str, int] = {}
        for port, bindings in (info["NetworkSettings"].get("Ports") or {}).items():
            if bindings:
                ports[port] = int(bindings[0]["HostPort"])
        env = dict(item.split("=", 1) for item in info["Config"].get("Env") or [] if "=" in item)
        return Observed(
            id=info["Id"], name=info["Name"].lstrip("/"), labels=info["Config"]["Labels"] or {},
            status=state["Status"], started_at=parse_time(state.get("StartedAt")),
            finished_at=parse_time(state.get("FinishedAt")),
            restart_count=int(info.get("RestartCount", 0)), exit_code=int(state["ExitCode"]),
            oom_killed=bool(state.get("OOMKilled")), error=state.get("Error") or "",
            env=env, ports=ports, image=str(info["Config"].get("Image") or ""),
        )

    def find(self, name: str) -> Observed | None:
        try:
            return self.inspect(name)
        except docker.errors.NotFound:
            return None

    def run(self, spec: ContainerSpec) -> str:
        """Create and start; return the container id."""
        container_id = self.create(spec)
        self.start(container_id, spec)
        return container_id

    def create(self, spec: ContainerSpec) -> str:
        """Made, not started: no network endpoint exists until `start` (the network
        must exist already). Returns the container id."""
        host_config = self.api.create_host_config(
            mem_limit=spec.memory,
            restart_policy={"Name": "unless-stopped"} if spec.restart else None,
            port_bindings={p: b for p, b in spec.ports.items()} or None,
            log_config=LogConfig(type="json-file", config={"max-size": "10m", "max-file": "2"}),
            security_opt=["no-new-privileges"] if spec.hardened else None,
            cap_drop=["ALL"] if spec.hardened else None,
            pids_limit=spec.pids_limit,
            init=spec.init or None,
            binds={v: {"bind": path, "mode": "rw"} for v, path in spec.volumes.items()} or None,
        )
        networking = None
        if spec.network:
            networking = self.api.create_networking_config({
                spec.network: self.api.create_endpoint_config(aliases=list(spec.aliases) or None)
            })
        try:
            created = self.api.create_container(
                image=spec.image, name=spec.name, environment=dict(spec.env),
                labels=dict(spec.labels), host_config=host_config,
                networking_config=networking, user=spec.user, command=spec.command,
                hostname=spec.hostname,
                ports=[(int(p.split("/")[0]), p.split("/")[1]) for p in spec.ports] or None,
                volumes=list(spec.volumes.values()) or None,
                # Standard input open until the one attached writer closes it (StdinOnce).
                stdin_open=bool(spec.files),
            )
        except docker.errors.APIError as e:
            if e.status_code == 409:
                raise NameTaken(f"a container named {spec.name} exists") from None
            raise
        return str(created["Id"])

    def start(self, container_id: str, spec: ContainerSpec) -> None:
        """Start a created container and hand it its files."""
        self.api.start(container_id)
        if spec.files:
            self._hand_over(container_id, spec.files, spec.files_owner)

    def _hand_over(self, container_id: str, files: Mapping[str, tuple[bytes, int]],
                   owner: int) -> None:
        """The files, as a tar archive on the container's standard input, then its end.
        After the start, not before: until its process reads, the pipe holds only 64 KiB.
        (put_archive into the created container did the same at about 50 ms of the
        engine's CPU each: it mounts the container's filesystem to unpack.)"""
        try:
            stream = self.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
            sock = getattr(stream, "_sock", stream)  # the SDK hands a SocketIO on a socket
            try:
                sock.sendall(_tar(files, owner))
                sock.shutdown(socket.SHUT_WR)
            finally:
                sock.close()
                stream.close()
        except (docker.errors.APIError, OSError):
            current = self.find(container_id)
            if current is not None and not current.running:
                return  # it died before reading: its exit and log say why, as any crash
            raise

    def run_once(self, image: str, command: list[str], stdin: bytes, *, user: str,
                 memory: str | None, timeout: float, workdir: str | None = None,
                 ) -> tuple[int, bytes, bytes]:
        """A one-shot container with no network: `stdin` in, then (exit code, stdout,
        stderr) once it ends (killed past `timeout`: exit code 124). Removed after."""
        host_config = self.api.create_host_config(
            mem_limit=memory, network_mode="none", security_opt=["no-new-privileges"],
            cap_drop=["ALL"], pids_limit=256)
        created = self.api.create_container(
            image=image, command=command, user=user, host_config=host_config,
            stdin_open=True, working_dir=workdir,  # StdinOnce comes with it (docker-py)
            labels={labels.ROLE: labels.ROLE_EXEC})
        container_id = str(created["Id"])
        try:
            self.api.start(container_id)
            stream = self.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
            sock = getattr(stream, "_sock", stream)
            try:
                sock.sendall(stdin)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # it ended before reading all: its exit and output say why
            finally:
                sock.close()
                stream.close()
            try:
                code = int(self.api.wait(container_id, timeout=timeout).get("StatusCode", 1))
            except requests.exceptions.ReadTimeout:
                self.api.kill(container_id)
                code = 124
            out = self.api.logs(container_id, stdout=True, stderr=False)
            err = self.api.logs(container_id, stdout=False, stderr=True)
            return code, bytes(out), bytes(err)
        finally:
            try:
                self.api.remove_container(container_id, force=True)
            except docker.errors.APIError:
                pass

    def replace(self, spec: ContainerSpec, grace: float) -> str:
        """Stop and remove the container of that name, then create and start `spec`."""
        self.stop(spec.name, grace)
        self.remove(spec.name)
        return self.run(spec)

    def stop(self, name: str, grace: float) -> None:
        """TERM, `grace` seconds, then KILL (Docker's own stop does exactly this)."""
        try:
            self.api.stop(name, timeout=int(max(grace, 0)))
        except docker.errors.NotFound:
            pass
        except requests.exceptions.ReadTimeout:
            # An overloaded engine (hundreds of containers stopping on two cores) can
            # take longer than our client waits; the forced remove that follows ends it.
            pass

    def remove(self, name: str) -> None:
        try:
            self.api.remove_container(name, force=True)
        except docker.errors.NotFound:
            pass

    def restart(self, name: str, grace: float = 10) -> None:
        self.api.restart(name, timeout=int(grace))

    def logs(self, name: str, *, follow: bool = False, tail: int | str = "all",
             since: datetime | int | None = None, timestamps: bool = False) -> Iterator[str]:
        """Lines of a container's output; a followed stream ends when the container stops."""
        try:
            stream = self.api.logs(name, stream=True, follow=follow, tail=tail,
                                   since=since, timestamps=timestamps)
        except docker.errors.NotFound:
            return
        buffer = b""
        for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "replace").rstrip("\r")
        if buffer:
            yield buffer.decode("utf-8", "replace")

    def read_file(self, name: str, path: str) -> bytes | None:
        """A file from a container's filesystem, without exec (works while running)."""
        for _ in range(READ_ATTEMPTS):
            try:
                bits, _ = self.api.get_archive(name, path)
            except docker.errors.APIError:
                return None
            try:
                with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
                    member = tar.next()
                    if member is None:
                        return None
                    extracted = tar.extractfile(member)
                    return extracted.read() if extracted else None
            except tarfile.TarError:
                # Docker sizes the entry from the file it found, then copies the one
                # there when it reads: a file replaced between (the sailor's state, each
                # second) by a shorter one ends the archive short. The next read is whole.
                continue
        return None

    # ------------------------------------------------------------ networks

    # How this engine makes a network, and the name it gives one (a swarm: overlays,
    # DNS-label names). The mechanism below is the same for both.
    NETWORK_OPTIONS: Mapping[str, Any] = {"driver": "bridge"}
    REMOVE_ATTEMPTS, REMOVE_PAUSE = 20, 0.25

    def network_name(self, name: str) -> str:
        return name

    def ensure_network(self, name: str, network_labels: Mapping[str, str],
                       internal: bool = False) -> None:
        """Create the network unless it exists: asked to create it at once, Docker says
        so (check_duplicate), one round trip fewer than looking first. Callers hold the
        flow's lock: Docker itself lets two concurrent creates make two networks with
        one name."""
        name = self.network_name(name)
        try:
            self.api.create_network(name, labels=dict(network_labels), internal=internal,
                                    check_duplicate=True, **self.NETWORK_OPTIONS)
        except docker.errors.APIError as e:
            if "already exists" not in str(e):
                raise

    def connect(self, container: str, network: str, aliases: list[str]) -> None:
        try:
            self.api.connect_container_to_network(container, network, aliases=aliases)
        except docker.errors.APIError as e:
            if "already exists" not in str(e) and "already attached" not in str(e):
                raise

    def remove_network(self, name: str) -> None:
        """Remove every network of that exact name (there may be duplicates left by an
        older flowrun), disconnecting whatever is still attached (the broker)."""
        name = self.network_name(name)
        for net in self.api.networks(names=[name]):
            if net.get("Name") != name:
                continue  # Docker's name filter matches substrings
            for attempt in range(self.REMOVE_ATTEMPTS):
                try:
                    self._release_network(net["Id"])
                    self.api.remove_network(net["Id"])
                    self._network_removed(net["Id"])
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError as e:
                    # "has active endpoints": a container is still being torn down.
                    if attempt == self.REMOVE_ATTEMPTS - 1:
                        if "active endpoints" in str(e) and not self._attached(net["Id"]):
                            raise StaleNetwork(
                                f"left network {name} behind: Docker counts an endpoint on "
                                "it that nothing holds (restarting dockerd clears the "
                                "count); the next `flowrun up` of the flow uses it as it "
                                "is") from None
                        raise EngineError(
                            f"cannot remove network {name}: {e.explanation}") from None
                    time.sleep(self.REMOVE_PAUSE)

    def _attached(self, network_id: str) -> bool:
        try:
            return bool(self.api.inspect_network(network_id).get("Containers"))
        except docker.errors.NotFound:
            return False

    def _release_network(self, network_id: str) -> None:
        """Disconnect what is still attached (the broker, the services)."""
        details = self.api.inspect_network(network_id)
        for cid in (details.get("Containers") or {}):
            try:
                self.api.disconnect_container_from_network(cid, network_id, force=True)
            except docker.errors.APIError:
                pass

    def _network_removed(self, network_id: str) -> None:
        """Called once Docker accepted the removal."""

    def networks(self, flow: str | None = None) -> list[str]:
        filters = {"label": [labels.FLOW if flow is None else f"{labels.FLOW}={flow}"]}
        return [n["Name"] for n in self.api.networks(filters=filters)]

    # ------------------------------------------------------------ volumes (records)

    def put_record(self, name: str, record_labels: Mapping[str, str]) -> None:
        """An empty volume that carries `record_labels`; replaced when they change."""
        try:
            current = self.api.inspect_volume(name)
            if (current.get("Labels") or {}) == dict(record_labels):
                return
            self.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass
        self.api.create_volume(name, labels=dict(record_labels))

    def get_record(self, name: str) -> dict[str, str] | None:
        try:
            return dict(self.api.inspect_volume(name).get("Labels") or {})
        except docker.errors.NotFound:
            return None

    def records(self, label: str) -> list[dict[str, str]]:
        found = self.api.volumes(filters={"label": [label]}).get("Volumes") or []
        return [dict(v.get("Labels") or {}) for v in found]

    def remove_volume(self, name: str) -> None:
        """A record or a data volume; gone already is fine."""
        try:
            self.api.remove_volume(name, force=True)
        except docker.errors.NotFound:
            pass

    # ------------------------------------------------------------ events

    def container_events(self) -> Any:
        """Docker's stream of container deaths and removals, as they happen. The
        stream's close() ends it from another thread."""
        return self.api.events(decode=True, filters={"type": "container",
                                                     "event": ["die", "destroy"]})

    def last_exit(self, container_id: str, since: datetime | None) -> tuple[int, bool] | None:
        """(exit code, out of memory) of the container's last death, from Docker's
        events. Its inspect data cannot tell: a restart resets ExitCode to 0."""
        until = datetime.now(UTC)
        start = since or (until - timedelta(hours=1))
        code: int | None = None
        oom = False
        try:
            for event in self.api.events(since=start, until=until, decode=True,
                                         filters={"container": container_id,
                                                  "event": ["die", "oom"]}):
                if event.get("status") == "oom" or event.get("Action") == "oom":
                    oom = True
                    continue
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                if "exitCode" in attributes:
                    code = int(attributes["exitCode"])
                    oom = oom or code == 137 and attributes.get("oomKilled") == "true"
        except docker.errors.APIError:
            return None
        return None if code is None else (code, oom)


def _tar(files: Mapping[str, tuple[bytes, int]], owner: int) -> bytes:
    """Regular files only: their folder is the image's (made for the step's user)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path.strip("/"))
            info.size, info.mode, info.uid, info.gid = len(content), mode, owner, owner
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
