"""Component images: a wheelhouse on the host, a build context, one build per revision."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from flowrun.contract import names
from flowrun.core import labels
from flowrun.core.component import Component, Runtime
from flowrun.core.plan import Plan
from flowrun.core.reconcile import Action, ActionType
from flowrun.core.revision import (
    component_files,
    sailor_pins,
    services_pins,
    services_revision,
)
from flowrun.engine.protocol import ContainerEngine
from flowrun.errors import BuildFailed
from flowrun.settings import (
    CONTRACT_DIR,
    SAILOR_DIR,
    SERVICES_DIR,
    base_image,
    cache_dir,
    dockerfile_path,
    node_base_image,
    node_dockerfile_path,
    services_dockerfile_path,
)

NPM_LOCKFILES = ("package-lock.json", "npm-shrinkwrap.json")


def _pip(args: list[str], what: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--quiet",
                             "--disable-pip-version-check"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()[-8:]
        raise BuildFailed(f"{what}: pip failed:\n" + "\n".join(lines))


def wheelhouse(pins: list[str], what: str) -> Path:
    """Dependencies as wheels (theirs too), pinned to the versions installed here."""
    key = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]
    target = cache_dir() / "wheels" / f"{what}-{key}"
    if (target / "requirements.txt").exists():
        return target
    staging = Path(tempfile.mkdtemp(prefix="wheels-", dir=_ensure(cache_dir() / "wheels")))
    _pip(["download", "--only-binary=:all:", "--python-version", "3.11",
          "--dest", str(staging), *pins], f"the {what}'s wheelhouse")
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


def _package(target: Path, program: Path) -> None:
    """`flowrun/` as an image holds it: the contract and one program (the sailor or
    the services), under an empty package of the same name as the host's."""
    (target / "flowrun").mkdir()
    (target / "flowrun" / "__init__.py").write_text("")
    for root in (CONTRACT_DIR, program):
        for path in root.rglob("*.py"):
            _link_or_copy(path, target / "flowrun" / root.name / path.relative_to(root))


def assemble_context(component: Component, target: Path) -> None:
    """The build context Dockerfile.component expects."""
    shutil.copy(dockerfile_path(), target / "Dockerfile")
    for wheel in wheelhouse(sailor_pins(), "sailor").iterdir():
        _link_or_copy(wheel, target / "wheels" / wheel.name)
    _package(target, SAILOR_DIR)
    (target / "component-wheels").mkdir()
    own = component_wheelhouse(component)
    if own:
        for wheel in own.iterdir():
            _link_or_copy(wheel, target / "component-wheels" / wheel.name)
    (target / "component").mkdir()
    for path in component_files(component.path):
        _link_or_copy(path, target / "component" / path.relative_to(component.path))


def node_modules(component: Component) -> Path:
    """The component's npm dependencies, installed on the host into a cache keyed by
    package.json and its lockfile: reinstalled only when one of them changes."""
    h = hashlib.sha256(b"ignore-scripts\0")  # installs made before scripts were refused
    sources = [name for name in ("package.json", *NPM_LOCKFILES)
               if (component.path / name).is_file()]
    for name in sources:
        h.update(name.encode() + b"\0" + (component.path / name).read_bytes() + b"\0")
    target = cache_dir() / "npm" / h.hexdigest()[:16]
    if (target / "node_modules").is_dir():
        return target / "node_modules"
    npm = shutil.which("npm")
    if npm is None:
        raise BuildFailed("npm is not installed on this host; `make install` installs it "
                          "(apt-get install npm), or install Node.js with npm yourself")
    staging = Path(tempfile.mkdtemp(prefix="npm-", dir=_ensure(cache_dir() / "npm")))
    for name in sources:
        shutil.copy(component.path / name, staging / name)
    locked = any(name in NPM_LOCKFILES for name in sources)
    command = ([npm, "ci", "--omit=dev"] if locked
               else [npm, "install", "--omit=dev", "--no-package-lock"])
    # No install script runs, the component's nor any dependency's: npm runs on the host,
    # as the user who ran flowrun (root, often), and opening someone's component with
    # `flowrun up` must not hand them the machine. Set in npm's environment as well, so
    # a dependency's own .npmrc cannot turn it back on.
    result = subprocess.run([*command, "--ignore-scripts", "--no-audit", "--no-fund",
                             "--loglevel=error"], cwd=staging, capture_output=True, text=True,
                            env={**os.environ, "npm_config_ignore_scripts": "true"})
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines()
                 if "complete log of this run" not in line][-5:]
        shutil.rmtree(staging, ignore_errors=True)
        raise BuildFailed(f"`npm {' '.join(command[1:])}` failed with exit code "
                          f"{result.returncode}: " + " | ".join(lines))
    if not (staging / "node_modules").is_dir():
        (staging / "node_modules").mkdir()
    _publish(staging, target)
    return target / "node_modules"


def assemble_node_context(component: Component, target: Path) -> None:
    """The build context Dockerfile.node expects: the component with its node_modules."""
    shutil.copy(node_dockerfile_path(), target / "Dockerfile")
    modules = node_modules(component)
    (target / "component").mkdir()
    for path in component_files(component.path):
        _link_or_copy(path, target / "component" / path.relative_to(component.path))
    shutil.copytree(modules, target / "component" / "node_modules", symlinks=True,
                    copy_function=lambda s, d: _link_or_copy(Path(s), Path(d)))


def base_images_for(plan: Plan, actions: Sequence[Action]) -> tuple[str, ...]:
    """The base images the images to build start from (the services' on Python)."""
    started = {a.step for a in actions if a.type in (ActionType.CREATE, ActionType.RECREATE)}
    node = any(s.runtime is Runtime.NODE for s in plan.steps if s.id in started)
    return (base_image(), *((node_base_image(),) if node else ()))


def services_image() -> str:
    return names.image("services", services_revision(services_dockerfile_path(),
                                                      base_image()))


def build_services_image(engine: ContainerEngine, on_line: Callable[[str], None]) -> str:
    """The platform services' image (their code, the contract, their wheels), built
    unless it exists. Returns its tag."""
    tag = services_image()
    if engine.image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="flowrun-build-") as context:
        target = Path(context)
        shutil.copy(services_dockerfile_path(), target / "Dockerfile")
        for wheel in wheelhouse(services_pins(), "services").iterdir():
            _link_or_copy(wheel, target / "wheels" / wheel.name)
        _package(target, SERVICES_DIR)
        try:
            engine.build(context, tag, {"BASE_IMAGE": base_image()},
                         {labels.REVISION: tag.rsplit(":", 1)[1]}, on_line)
        except BuildFailed as e:
            raise BuildFailed(f"the platform services' image failed to build:\n{e}") from None
    return tag


def build_image(engine: ContainerEngine, component: Component, revision: str, tag: str,
                on_line: Callable[[str], None]) -> bool:
    """Build `tag` unless it exists. Returns True when it built."""
    if engine.image_exists(tag):
        return False
    node = component.runtime is Runtime.NODE
    if node and not engine.image_exists(node_base_image()):
        raise BuildFailed(
            f"the Node.js base image {node_base_image()} is missing; run `make images` "
            "(scripts/build-base-images) to build it without a registry")
    with tempfile.TemporaryDirectory(prefix="flowrun-build-") as context:
        try:
            (assemble_node_context if node else assemble_context)(component, Path(context))
        except BuildFailed as e:
            raise BuildFailed(f"component {component.name} ({component.path}): {e}") from None
        buildargs = ({"NODE_BASE_IMAGE": node_base_image()} if node
                     else {"BASE_IMAGE": base_image()})
        try:
            engine.build(context, tag, buildargs,
                         {labels.REVISION: revision, labels.COMPONENT: str(component.path)},
                         on_line)
        except BuildFailed as e:
            raise BuildFailed(
                f"component {component.name} ({component.path}) failed to build:\n{e}"
            ) from None
    return True
