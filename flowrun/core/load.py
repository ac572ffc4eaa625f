"""From a flow file on disk to the Plan: load, check, compute revisions, expand."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from flowrun.core.flowfile import load_flow
from flowrun.core.plan import Plan, check_flow, expand, load_components, load_mapper
from flowrun.core.revision import compute_revision
from flowrun.settings import base_image, dockerfile_path


def load_plan(path: str | Path, env: Mapping[str, str]) -> Plan:
    flow = load_flow(path, env)
    components = load_components(flow)
    check_flow(flow, components)
    mapper = load_mapper()
    dockerfile, base = dockerfile_path(), base_image()
    revisions = {c.path: compute_revision(c.path, dockerfile, base)
                 for c in [*components.values(), mapper]}
    return expand(flow, components, mapper, revisions)
