"""A container's private files (config, broker login, keys), received at its first start.

On one Docker host flowrun hands them over on the container's standard input,
as a tar archive, right after starting it: nothing of them shows in `docker
inspect`, and no archive is unpacked into a stopped container's filesystem by
the engine (Docker's put_archive mounts it first: about 50 ms of the engine's
CPU per container, a third of a step's start on two cores). The process
writes them where they belong, readable by its own user only; a restart of the
same container (its filesystem is kept) finds them there and reads no input.
On a swarm they are Docker secrets, mounted at the same paths before the start.
"""

from __future__ import annotations

import os
import select
import sys

# Only these folders receive files: what arrives is written nowhere else.
ALLOWED = ("/etc/flowrun/", "/etc/flowrun-services/")
# Past this with nothing on the input, the `up` that started the container is gone.
WAIT_SECONDS = 60.0


class FilesMissing(Exception):
    """Nothing came on the input: say so and exit, rather than wait forever."""


def receive(path: str, wait: float = WAIT_SECONDS) -> None:
    """Make sure `path` exists: if not, unpack the archive on standard input."""
    if os.path.exists(path):
        return
    stdin = sys.stdin.buffer
    ready, _w, _x = select.select([stdin], [], [], wait)
    if not ready:
        raise FilesMissing(
            f"{path} is missing and nothing came on standard input within {wait:.0f} s "
            "(the `flowrun up` that started this container ended first); `flowrun up "
            "--recreate` (or `flowrun down`, then `flowrun up`) replaces it")
    unpack(stdin.read())
    if not os.path.exists(path):
        raise FilesMissing(f"{path} was not among the files this container received")


def unpack(archive: bytes) -> list[str]:
    """Write each regular file of a tar archive at its absolute path, with its mode;
    returns the paths written."""
    import io
    import tarfile  # at a first start only

    written = []
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        for member in tar:
            target = "/" + member.name.lstrip("/")
            if not member.isfile() or ".." in target.split("/") or not target.startswith(
                    ALLOWED):
                continue
            source = tar.extractfile(member)
            assert source is not None
            os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
            part = f"{target}.part"
            if os.path.exists(part):  # left by a start that died half way
                os.unlink(part)
            # Created with its final mode: never readable by others, not even briefly.
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, member.mode & 0o700)
            with os.fdopen(fd, "wb") as out:
                out.write(source.read())
            os.replace(part, target)
            written.append(target)
    return written
