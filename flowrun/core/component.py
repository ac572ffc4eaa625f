"""Component descriptors: `component.json` with its triggers and actions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowrun.errors import ComponentError

NODE_SAILOR_PACKAGE = "elasticio-sailor-nodejs"
# The scripts npm runs while it installs a package (its own, or a dependency's). flowrun
# installs a Node.js component's dependencies on the host with `--ignore-scripts`, so
# none of them ever runs; a component whose own package.json has one is refused, since
# it would expect it to have run.
INSTALL_SCRIPTS = ("preinstall", "install", "postinstall", "prepublish", "preprepare",
                   "prepare", "postprepare")


class Runtime(StrEnum):
    """Which sailor runs a component: flowrun's (Python) or the platform's (Node.js)."""

    PYTHON = "python"
    NODE = "node"


class FunctionType(StrEnum):
    TRIGGER = "trigger"
    ACTION = "action"


class FunctionSpec(BaseModel):
    # The descriptor format belongs to the hosted platforms and grows over time:
    # keys flowrun does not use are kept, not rejected.
    model_config = ConfigDict(extra="allow")

    main: str = Field(min_length=1)
    title: str | None = None
    type: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None


class Descriptor(BaseModel):
    model_config = ConfigDict(extra="allow")

    title: str = Field(min_length=1)
    description: str | None = None
    credentials: dict[str, Any] | None = None
    # The platform's service a component provides: `webhook` (its trigger is called
    # once per HTTP request to the flow) or `request-reply` (a step of it answers the
    # request, so the caller waits for that answer).
    service: str | None = None
    triggers: dict[str, FunctionSpec] = Field(default_factory=dict)
    actions: dict[str, FunctionSpec] = Field(default_factory=dict)


@dataclass(frozen=True)
class Component:
    path: Path  # resolved directory
    descriptor: Descriptor
    runtime: Runtime = Runtime.PYTHON

    @property
    def name(self) -> str:
        """An image-name-safe name, from the directory."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.path.name.lower()).strip("-")
        return slug or "component"

    @property
    def is_webhook(self) -> bool:
        return self.descriptor.service == "webhook"

    @property
    def replies(self) -> bool:
        return self.descriptor.service == "request-reply"

    def function_type(self, function: str) -> FunctionType | None:
        if function in self.descriptor.triggers:
            return FunctionType.TRIGGER
        if function in self.descriptor.actions:
            return FunctionType.ACTION
        return None

    def function_names(self) -> list[str]:
        return [*self.descriptor.triggers, *self.descriptor.actions]


def load_component(path: Path, where: str) -> Component:
    """Load and check `path/component.json`; `where` names the referring step for errors."""
    if not path.is_dir():
        raise ComponentError(
            f"{where}: component directory {path} does not exist; "
            "fix 'component:' (it is relative to the flow file)"
        )
    descriptor_path = path / "component.json"
    try:
        raw = descriptor_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComponentError(
            f"{where}: {descriptor_path} is missing; a component needs a component.json "
            "with its triggers and actions"
        ) from None
    except UnicodeDecodeError as e:
        raise ComponentError(
            f"{descriptor_path}: not UTF-8 text (byte {e.start}); save it as UTF-8 JSON"
        ) from None
    except OSError as e:  # a directory, unreadable, ...
        raise ComponentError(
            f"{descriptor_path}: cannot be read ({e.strerror or e}); it must be a JSON file"
        ) from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ComponentError(
            f"{descriptor_path}:{e.lineno}: invalid JSON ({e.msg}); fix the syntax there"
        ) from None
    if not isinstance(data, dict):
        raise ComponentError(
            f"{descriptor_path}: must be a JSON object with title, triggers, actions"
        )
    try:
        descriptor = Descriptor.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            msg = f"missing '{loc}'; add it"
        else:
            msg = f"'{loc}': {err['msg']}"
        raise ComponentError(f"{descriptor_path}: {msg}") from None
    runtime = _runtime(path, descriptor_path)
    if not descriptor.triggers and not descriptor.actions:
        raise ComponentError(
            f"{descriptor_path}: declares no triggers and no actions; add at least one"
        )
    for group, functions in (("triggers", descriptor.triggers), ("actions", descriptor.actions)):
        for name, spec in functions.items():
            _check_main_path(path, descriptor_path, f"{group}.{name}.main", spec.main)
            main = (path / spec.main).resolve()
            if not main.is_relative_to(path.resolve()):
                raise ComponentError(
                    f"{descriptor_path}: {group}.{name}.main '{spec.main}' points outside "
                    "the component; keep the code inside its directory"
                )
            if not main.is_file():
                raise ComponentError(
                    f"{descriptor_path}: {group}.{name}.main '{spec.main}' does not exist; "
                    "create it or fix the path"
                )
            wanted = ".py" if runtime is Runtime.PYTHON else ".js"
            if main.suffix != wanted and not (runtime is Runtime.NODE
                                              and main.suffix in (".cjs", ".mjs")):
                raise ComponentError(
                    f"{descriptor_path}: {group}.{name}.main '{spec.main}' is not a "
                    f"{wanted} file; " + (
                        "flowrun's sailor runs Python components (a Node.js component has "
                        f"a package.json that depends on {NODE_SAILOR_PACKAGE})"
                        if runtime is Runtime.PYTHON else
                        f"a Node.js component (package.json with {NODE_SAILOR_PACKAGE}) "
                        "runs .js files")
                )
    return Component(path=path.resolve(), descriptor=descriptor, runtime=runtime)


def _check_main_path(path: Path, descriptor_path: Path, field: str, main: str) -> None:
    """A main file is a plain file of the component: no NUL byte in its name, and no
    symlink on the way to it (images are built from the component's regular files only,
    so a symlinked main would validate here and be missing in the step)."""
    if "\0" in main:
        raise ComponentError(f"{descriptor_path}: {field} contains a NUL byte; "
                             "give the file's path")
    current = path
    for part in Path(main).parts:
        current = current / part
        if current.is_symlink():
            raise ComponentError(
                f"{descriptor_path}: {field} '{main}' goes through the symlink "
                f"{current.relative_to(path)}; flowrun copies no symlinks into images: "
                "make it a regular file")


def _runtime(path: Path, descriptor_path: Path) -> Runtime:
    """Node.js when package.json depends on the platform's sailor; Python otherwise."""
    package_path = path / "package.json"
    if not package_path.is_file():
        return Runtime.PYTHON
    try:
        package = json.loads(package_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ComponentError(
            f"{package_path}: invalid JSON ({e}); fix the syntax there") from None
    dependencies = package.get("dependencies") if isinstance(package, dict) else None
    if isinstance(dependencies, dict) and NODE_SAILOR_PACKAGE in dependencies:
        scripts = package.get("scripts")
        found = [s for s in INSTALL_SCRIPTS if isinstance(scripts, dict) and s in scripts]
        if found:
            raise ComponentError(
                f"{package_path}: scripts.{found[0]} would run at install time; flowrun "
                "never runs a component's install scripts (nor its dependencies'): "
                "remove it, and do that work in the component's init or startup hook")
        return Runtime.NODE
    if any((path / spec).suffix == ".js" for spec in _mains(descriptor_path)):
        raise ComponentError(
            f"{package_path}: a Node.js component must depend on {NODE_SAILOR_PACKAGE} "
            f"(the platform's sailor runs it); add it to \"dependencies\"")
    return Runtime.PYTHON


def _mains(descriptor_path: Path) -> list[str]:
    try:
        data = json.loads(descriptor_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [str(spec.get("main", "")) for group in ("triggers", "actions")
            for spec in (data.get(group) or {}).values() if isinstance(spec, dict)]
