"""A component revision: a digest of everything that goes into its image."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from flowrun.settings import CONTRACT_DIR, SAILOR_DIR, SERVICES_DIR

SAILOR_REQUIREMENTS = ("pika", "jsonata-python", "cryptography")
# The platform services: pika for the broker, cryptography to read the trace's
# messages, uvicorn (with h11) to serve.
SERVICES_REQUIREMENTS = ("pika", "cryptography", "uvicorn", "h11")
_IGNORED_DIRS = {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache",
                 ".ruff_cache", "node_modules", ".venv", ".idea", ".vscode"}
_IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", ".swx", "~", ".tmp")
_IGNORED_NAMES = {".DS_Store", "4913"}  # 4913: vim's probe file


def is_ignored(relative: Path) -> bool:
    """True for caches, VCS folders and editor files: they never change a revision."""
    if any(part in _IGNORED_DIRS for part in relative.parts[:-1]):
        return True
    name = relative.name
    return (name in _IGNORED_NAMES or name.endswith(_IGNORED_SUFFIXES)
            or name.startswith(".#") or (name.startswith("#") and name.endswith("#")))


def component_files(root: Path) -> Iterator[Path]:
    """The files of a component directory that go into its image, sorted."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not path.is_symlink() and not is_ignored(relative) and not any(
            part in _IGNORED_DIRS for part in relative.parts
        ):
            yield path


def _digest_tree(h: hashlib._Hash, root: Path, label: str) -> None:
    for path in component_files(root):
        relative = path.relative_to(root).as_posix()
        h.update(f"{label}:{relative}:{path.stat().st_mode & 0o111}\0".encode())
        h.update(path.read_bytes())
        h.update(b"\0")


def pins(requirements: tuple[str, ...]) -> list[str]:
    """Dependencies at the versions installed here: what their wheels are."""
    return [f"{name}=={metadata.version(name)}" for name in requirements]


def sailor_pins() -> list[str]:
    return pins(SAILOR_REQUIREMENTS)


def services_pins() -> list[str]:
    return pins(SERVICES_REQUIREMENTS)


def compute_revision(component_dir: Path, dockerfile: Path, base_image: str,
                     with_sailor: bool = True) -> str:
    """12 hex digits; equal inputs give equal revisions on any machine. A Node.js
    component's image holds the platform's sailor (a dependency in its package.json,
    digested with the component), not flowrun's: `with_sailor=False`."""
    h = hashlib.sha256()
    h.update(f"base:{base_image}\0".encode())
    h.update(dockerfile.read_bytes())
    if with_sailor:
        h.update(("\0".join(sailor_pins()) + "\0").encode())
        _digest_tree(h, CONTRACT_DIR, "contract")
        _digest_tree(h, SAILOR_DIR, "sailor")
    _digest_tree(h, component_dir, "component")
    return h.hexdigest()[:12]


def services_revision(dockerfile: Path, base_image: str) -> str:
    """The platform services' image: their code and the contract, never the sailor's
    (a change to the services rebuilds no step, a change to the sailor no services)."""
    h = hashlib.sha256()
    h.update(f"base:{base_image}\0".encode())
    h.update(dockerfile.read_bytes())
    h.update(("\0".join(services_pins()) + "\0").encode())
    _digest_tree(h, CONTRACT_DIR, "contract")
    _digest_tree(h, SERVICES_DIR, "services")
    return h.hexdigest()[:12]
