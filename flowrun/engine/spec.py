"""A container as flowrun asks an engine for it: what both engines take."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    env: Mapping[str, str]
    labels: Mapping[str, str]
    network: str | None = None
    aliases: tuple[str, ...] = ()
    memory: str | None = None
    user: str | None = None
    command: list[str] | None = None
    hostname: str | None = None
    ports: Mapping[str, tuple[str, int | None]] = field(default_factory=dict)
    restart: bool = True
    hardened: bool = True
    pids_limit: int | None = None
    # Docker's own init (tini) as process 1, the program its child. A process 1 gets
    # no signal it has no handler for: a step's program, stopped before its handler
    # was in place (at its start, or a Node.js one the platform's sailor runs), lost
    # the SIGTERM and was killed only after the grace. tini passes it on.
    init: bool = False
    # The container's private files: path -> (content, mode), owned by `files_owner`.
    # How a step gets its config without the environment or argv. On one host they
    # are handed over on the container's standard input at its start, as a tar
    # archive that the image's own start unpacks (flowrun/sailor/files.py); on a
    # swarm they are Docker secrets at those paths.
    files: Mapping[str, tuple[bytes, int]] = field(default_factory=dict)
    files_owner: int = 0
    volumes: Mapping[str, str] = field(default_factory=dict)  # named volume -> mount path
    node: str | None = None  # on a swarm: the node (id) it must run on
