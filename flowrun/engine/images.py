"""Component images: a wheelhouse on the host, a build context, one build per revision."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from flowrun.core import labels
from flowrun.core.component import Component
from flowrun.core.revision import component_files, sailor_pins
from flowrun.engine.adapter import Engine
from flowrun.errors import BuildFailed
from flowrun.settings import SAILOR_DIR, base_image, cache_dir, dockerfile_path


def _pip(args: list[str], what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet",
                             "--disable-pip-version-check"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()[-8:]
        raise BuildFailed(f"{what}: pip failed:\n" + "\n".join(lines))


def sailor_wheelhouse() -> Path:
    """The sailor's dependencies as wheels, pinned to the versions installed here."""
    pins = sailor_pins()
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    target = cache_dir() / "wheels" / f"sailor-{key}"
    if (target / "requirements.txt").exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix="wheels-", dir=_ensure(cache_dir() / "wheels")))
    _pip(["download", "--only-binary=:all:", "--python-version", "3.11",
          "--dest", str(staging), *pins], "the sailor's wheelhouse")
    (staging / "requirements.txt").write_text("\n".join(pins) + "\n")
    _publish(staging, target)
    return target


def component_wheelhouse(component: Component) -> Path | None:
    requirements = component.path / "requirements.txt"
    if not requirements.is_file() or not requirements.read_text().strip():
        return None
    key = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    target = cache_dir() / "wheels" / f"component-{key}"
    if (target / "requirements.txt").exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix="wheels-", dir=_ensure(cache_dir() / "wheels")))
    _pip(["wheel", "--wheel-dir", str(staging), "-r", str(requirements)],
         f"component {component.name}: requirements.txt")
    shutil.copy(requirements, staging / "requirements.txt")
    _publish(staging, target)
    return target


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _publish(staging: Path, target: Path) -> None:
    try:
        staging.rename(target)
    except OSError:  # another process got there first: theirs is as good
        shutil.rmtree(staging, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def assemble_context(component: Component, target: Path) -> None:
    """The build context Dockerfile.component expects."""
    shutil.copy(dockerfile_path(), target / "Dockerfile")
    for wheel in sailor_wheelhouse().iterdir():
        _link_or_copy(wheel, target / "wheels" / wheel.name)
    for path in SAILOR_DIR.rglob("*.py"):
        _link_or_copy(path, target / "sailor" / path.relative_to(SAILOR_DIR))
    (target / "component-wheels").mkdir()
    own = component_wheelhouse(component)
    if own:
        for wheel in own.iterdir():
            _link_or_copy(wheel, target / "component-wheels" / wheel.name)
    (target / "component").mkdir()
    for path in component_files(component.path):
        _link_or_copy(path, target / "component" / path.relative_to(component.path))


def build_image(engine: Engine, component: Component, revision: str, tag: str,
                on_line: Callable[[str], None]) -> bool:
    """Build `tag` unless it exists. Returns True when it built."""
    if engine.image_exists(tag):
        return False
    with tempfile.TemporaryDirectory(prefix="flowrun-build-") as context:
        try:
            assemble_context(component, Path(context))
        except BuildFailed as e:
            raise BuildFailed(f"component {component.name} ({component.path}): {e}") from None
        try:
            engine.build(context, tag, {"BASE_IMAGE": base_image()},
                         {labels.REVISION: revision, labels.COMPONENT: str(component.path)},
                         on_line)
        except BuildFailed as e:
            raise BuildFailed(
                f"component {component.name} ({component.path}) failed to build:\n{e}"
            ) from None
    return True
