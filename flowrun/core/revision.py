"""A component revision: a digest of everything that goes into its image."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from flowrun.sailor import SAILOR_VERSION
from flowrun.settings import SAILOR_DIR

# uvicorn (with h11) serves the platform services, which run from the mapper's image.
SAILOR_REQUIREMENTS = ("pika", "jsonata-python", "cryptography", "uvicorn", "h11")
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


def sailor_pins() -> list[str]:
    """The sailor's dependencies at the versions installed here: what its wheels are."""
    return [f"{name}=={metadata.version(name)}" for name in SAILOR_REQUIREMENTS]


def compute_revision(component_dir: Path, dockerfile: Path, base_image: str,
                     with_sailor: bool = True) -> str:
    """12 hex digits; equal inputs give equal revisions on any machine. A Node.js
    component's image holds the platform's sailor (a dependency in its package.json,
    digested with the component), not flowrun's: `with_sailor=False`."""
    h = hashlib.sha256()
    h.update(f"base:{base_image}\0".encode())
    h.update(dockerfile.read_bytes())
    if with_sailor:
        h.update(f"sailor-version:{SAILOR_VERSION}\0".encode())
        h.update(("\0".join(sailor_pins()) + "\0").encode())
        _digest_tree(h, SAILOR_DIR, "sailor")
    _digest_tree(h, component_dir, "component")
    return h.hexdigest()[:12]
