"""Component images: own requirements from a host wheelhouse, one build per revision,
and a failed build that names the component and shows the failing lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import COMPONENTS, flowrun, make_component, unique, write_flow


def test_requirements_are_installed_from_the_host_wheelhouse(flow_factory: Any,
                                                             tmp_path: Path) -> None:
    uses_six = make_component(
        tmp_path, "uses-six", "version",
        "import six\n\ndef process(msg):\n    return {'six': six.__version__}\n",
        requirements="six==1.16.0\n")
    name = unique("reqs")
    flow_factory(name, f"""  - id: src
    component: {COMPONENTS}/shop
    function: newOrders
    config: {{limit: 0}}
  - {{id: v, component: {uses_six}, function: version}}
""")
    out = flowrun("send", name, "{}", "--expect", "v", "--timeout", "30").stdout
    assert json.loads(out.splitlines()[-1])["body"] == {"six": "1.16.0"}


def test_unchanged_revision_is_not_rebuilt_and_a_broken_build_is_named(
        engine: Any, tmp_path: Path) -> None:
    from flowrun.core.load import load_plan

    broken = make_component(tmp_path, "broken-reqs", "go",
                            "def process(msg):\n    return msg\n",
                            requirements="this-package-does-not-exist-flowrun==0.0.1\n")
    name = unique("badbuild")
    path = write_flow(tmp_path, name, f"""  - id: src
    component: {COMPONENTS}/shop
    function: newOrders
  - {{id: go, component: {broken}, function: go}}
""")
    result = flowrun("up", "-d", "--timeout", "60", str(path), check=False)
    assert result.returncode == 1
    assert "component broken-reqs" in result.stderr
    assert "requirements.txt" in result.stderr
    assert engine.observe({"io.flowrun.flow": name}) == []  # nothing started

    plan = load_plan(path, {})
    shop = plan.step("src")
    assert shop is not None and engine.image_exists(shop.image)
    before = engine.client.images.get(shop.image).id
    (broken / "requirements.txt").write_text("")
    flowrun("up", "-d", "--progress", "plain", str(path))
    assert engine.client.images.get(shop.image).id == before  # same revision: not rebuilt
    flowrun("down", "--purge", "--grace", "0", name)
