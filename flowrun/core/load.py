"""From a flow file on disk to the Plan: load, check, compute revisions, expand."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flowrun.core.component import Component, Runtime
from flowrun.core.flowfile import load_flow
from flowrun.core.plan import Plan, check_flow, expand, load_components, load_mapper
from flowrun.core.revision import compute_revision
from flowrun.settings import base_image, dockerfile_path, node_base_image, node_dockerfile_path


def revision_at(path: Path, runtime: Runtime) -> str:
    if runtime is Runtime.NODE:
        return compute_revision(path, node_dockerfile_path(), node_base_image(),
                                with_sailor=False)
    return compute_revision(path, dockerfile_path(), base_image())


def revision_of(component: Component) -> str:
    return revision_at(component.path, component.runtime)


def load_plan(path: str | Path, env: Mapping[str, str]) -> Plan:
    flow = load_flow(path, env)
    components = load_components(flow)
    check_flow(flow, components)
    mapper = load_mapper()
    revisions = {c.path: revision_of(c) for c in [*components.values(), mapper]}
    return expand(flow, components, mapper, revisions)
