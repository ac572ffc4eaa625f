"""What runs, as the engine adapter reports it: the observed half of reconciling.

Defined here, in the pure core, so that reconcile (and its tests) never import
the Docker adapter; the adapter fills it in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


def describe_exit(code: int, oom: bool) -> str:
    """How a step's process ended, in the words `up` and `status` both use."""
    if oom:
        return f"exit code {code} (out of memory: raise `memory:` for this step)"
    if code == 137:
        return f"exit code {code} (killed: SIGKILL)"
    return f"exit code {code}"


@dataclass(frozen=True)
class Observed:
    """One container as Docker reports it."""

    id: str
    name: str
    labels: Mapping[str, str]
    status: str  # created, running, restarting, exited, dead, paused
    started_at: datetime | None
    finished_at: datetime | None
    restart_count: int
    exit_code: int
    oom_killed: bool
    error: str
    env: Mapping[str, str]
    ports: Mapping[str, int]
    image: str = ""
    node: str = ""  # on a swarm: the node its task runs on
    host: str = "127.0.0.1"  # where its published ports are reached from the host

    @property
    def running(self) -> bool:
        return self.status == "running"
