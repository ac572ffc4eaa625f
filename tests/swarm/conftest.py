"""The swarm tests' cluster: built once per session, torn down at its end."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, _unavailable
from tests.swarm.cluster import NODE_IMAGE, Cluster, remove_cluster, start_cluster


@pytest.fixture(scope="session")
def swarm(engine: Any) -> Iterator[Cluster]:
    from flowrun.settings import base_image, broker_image, node_base_image

    if not engine.image_exists(NODE_IMAGE):
        _unavailable(f"image {NODE_IMAGE} is missing; run `make swarm-images`")
    cluster = start_cluster(engine.client, [base_image(), broker_image(), node_base_image()])
    try:
        yield cluster
    finally:
        cluster.close()
        remove_cluster(engine.client)


@pytest.fixture(scope="session")
def swarm_engine(swarm: Cluster) -> Iterator[Any]:
    """flowrun's own adapter on the manager, for the tests' streams and checks."""
    import docker

    from flowrun.engine.swarm import connect_engine

    os.environ["DOCKER_HOST"] = swarm.manager_url  # connect_engine reads it
    try:
        engine = connect_engine(swarm.registry)
    finally:
        del os.environ["DOCKER_HOST"]
    assert engine.capabilities.broker_cluster, "the manager did not answer as a swarm manager"
    assert isinstance(engine.client, docker.DockerClient)
    yield engine
    engine.client.close()


def on_swarm(swarm: Cluster, *args: str, timeout: float = 300,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """`flowrun ARGS` pointed at the test swarm, as a user would: DOCKER_HOST and
    FLOWRUN_REGISTRY."""
    env = {**os.environ, "CI": "true", "DOCKER_HOST": swarm.manager_url,
           "FLOWRUN_REGISTRY": swarm.registry}
    result = subprocess.run([sys.executable, "-m", "flowrun", *args], capture_output=True,
                            text=True, timeout=timeout, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"flowrun {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result
