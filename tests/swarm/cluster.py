"""A three-node Docker Swarm inside this machine, for the swarm tests and benchmarks.

Each node is a Docker-in-Docker container of `flowrun/swarm-node` (built offline by
scripts/build-swarm-node-image) on a network of its own; a fourth container of the
same image runs the registry the nodes pull from (`registry:5000` to them). The
host reaches the manager's API on its address in that network (tcp, port 2375):
that network exists on this machine only. See ../shared/SWARM.md for why each
flag is there (no --privileged on these machines).
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

NODE_IMAGE = os.environ.get("FLOWRUN_SWARM_NODE_IMAGE", "flowrun/swarm-node:bookworm")
NETWORK = "flowrun-swarm-test"
REGISTRY = "flowrun-swarm-registry"
REGISTRY_ADDRESS = "registry:5000"  # as the nodes see it
NODES = ("flowrun-swarm-node-1", "flowrun-swarm-node-2", "flowrun-swarm-node-3")
LABEL = {"io.flowrun.role": "swarm-test"}
SELECTOR = "io.flowrun.role=swarm-test"
API_PORT = 2375


@dataclass
class Cluster:
    host: Any  # the host's DockerClient
    manager_ip: str
    _manager: Any = None

    @property
    def manager_url(self) -> str:
        return f"tcp://{self.manager_ip}:{API_PORT}"

    @property
    def registry(self) -> str:
        return REGISTRY_ADDRESS

    def client(self) -> Any:
        """A DockerClient on the manager's engine (one, closed by `close`)."""
        if self._manager is None:
            self._manager = docker.DockerClient(base_url=self.manager_url, timeout=120)
        return self._manager

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def stop_node(self, node: int) -> None:
        self.host.containers.get(NODES[node]).stop(timeout=2)

    def start_node(self, node: int) -> None:
        self.host.containers.get(NODES[node]).start()


def _ip(host: Any, name: str) -> str:
    container = host.containers.get(name)
    return str(container.attrs["NetworkSettings"]["Networks"][NETWORK]["IPAddress"])


def _answers(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, timeout=3)  # asks for the version
    except Exception:  # not up yet
        return False
    try:
        return bool(client.ping())
    except Exception:  # not up yet
        return False
    finally:
        client.close()


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise RuntimeError(f"swarm test cluster: timed out waiting for {what}")


def _run_node(name: str, hostname: str, args: list[str]) -> None:
    # The CLI, not the SDK: `systempaths=unconfined` is the CLI's (it clears the
    # masked and read-only paths), and the SDK passes it on as an unknown option.
    subprocess.run([
        "docker", "run", "-d", "--name", name, "--hostname", hostname,
        "--network", NETWORK, "--label", "io.flowrun.role=swarm-test",
        "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
        "--security-opt", "seccomp=unconfined", "--security-opt", "systempaths=unconfined",
        "--security-opt", "apparmor=unconfined", "--cgroupns", "private",
        "--device-cgroup-rule", "a *:* rwm", "--device", "/dev/fuse",
        "-v", f"{name}-data:/var/lib/docker", NODE_IMAGE, *args,
    ], check=True, capture_output=True)


def remove_cluster(host: Any) -> None:
    """Nodes and registry, then their volumes (each node's images and containers),
    at once. (The session's last teardown took ~38 s one at a time and ~39 s at
    once in one run each: most of it is elsewhere, not found.)"""
    def remove_volume(name: str) -> None:
        try:
            host.volumes.get(f"{name}-data").remove(force=True)
        except docker.errors.NotFound:
            pass

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: c.remove(force=True),
                      host.containers.list(all=True, filters={"label": SELECTOR})))
        list(pool.map(remove_volume, (*NODES, REGISTRY)))
    for network in host.networks.list(names=[NETWORK]):
        network.remove()


def start_cluster(host: Any, images: list[str]) -> Cluster:
    """A fresh cluster: registry, three nodes, a swarm of them, `images` loaded into
    the manager (the base images flowrun builds from and runs its broker with)."""
    remove_cluster(host)
    host.networks.create(NETWORK, driver="bridge", labels=LABEL)
    subprocess.run(["docker", "run", "-d", "--name", REGISTRY, "--network", NETWORK,
                    "--network-alias", "registry", "--label", "io.flowrun.role=swarm-test",
                    "-v", f"{REGISTRY}-data:/var/lib/docker-registry", NODE_IMAGE, "registry"],
                   check=True, capture_output=True)
    for i, name in enumerate(NODES, 1):
        _run_node(name, f"node-{i}", ["-H", "unix:///var/run/docker.sock",
                                      "-H", f"tcp://0.0.0.0:{API_PORT}",
                                      "--insecure-registry", REGISTRY_ADDRESS,
                                      "--storage-driver", "overlay2"])
    urls = [f"tcp://{_ip(host, name)}:{API_PORT}" for name in NODES]
    _wait(lambda: all(_answers(url) for url in urls), 60, "the nodes' engines")
    cluster = Cluster(host, _ip(host, NODES[0]))
    manager = cluster.client()
    manager.swarm.init(advertise_addr=cluster.manager_ip, listen_addr="0.0.0.0:2377")
    token = manager.swarm.attrs["JoinTokens"]["Worker"]
    for url in urls[1:]:
        worker = docker.DockerClient(base_url=url, timeout=60)
        try:
            worker.swarm.join(remote_addrs=[f"{cluster.manager_ip}:2377"], join_token=token,
                              advertise_addr=url.split("//")[1].split(":")[0],
                              listen_addr="0.0.0.0:2377")
        finally:
            worker.close()
    _wait(lambda: sum(n.attrs["Status"]["State"] == "ready"
                      for n in manager.nodes.list()) == 3, 60, "three ready nodes")
    for image in images:
        load_image(host, cluster, image)
    return cluster


def load_image(host: Any, cluster: Cluster, image: str) -> None:
    """An image of the host's engine, into the manager's (docker save | docker load)."""
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    cluster.client().images.load(io.BytesIO(saved).getvalue())
