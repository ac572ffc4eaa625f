"""Expansion into real steps, against golden plans."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flowrun.core.plan import StepKind
from tests.conftest import ROOT, plan_of

GOLDEN = ROOT / "tests" / "golden"


def test_three_visible_steps_give_five_real_steps() -> None:
    plan = plan_of(ROOT / "sample_flows" / "orders.yaml")
    assert [s.id for s in plan.steps] == [
        "fetch", "mapper.fetch.enrich", "enrich", "mapper.enrich.notify", "notify"]
    assert [s.kind for s in plan.steps] == [
        StepKind.TRIGGER, StepKind.MAPPER, StepKind.ACTION, StepKind.MAPPER, StepKind.ACTION]


@pytest.mark.parametrize("name", ["orders", "listeners"])
def test_golden_plan(name: str) -> None:
    plan = plan_of(ROOT / "sample_flows" / f"{name}.yaml")
    golden = GOLDEN / f"{name}.plan.txt"
    text = "\n".join(plan.lines()) + "\n"
    if os.environ.get("FLOWRUN_UPDATE_GOLDEN"):  # then review the diff and commit it
        golden.write_text(text)
    assert text == golden.read_text()


def test_wiring_each_queue_listens_to_the_previous_step() -> None:
    plan = plan_of(ROOT / "sample_flows" / "orders.yaml")
    for before, after in zip(plan.steps, plan.steps[1:], strict=False):
        assert after.routes.listens_to == before.routes.data
        assert after.routes.input_queue == f"orders:{after.id}:messages"
    assert plan.steps[0].routes.input_queue is None


def test_mapper_carries_the_mapping_and_passthrough_mapper_has_none(tmp_path: Path) -> None:
    comps = ROOT / "sample_flows" / "components"
    flow = tmp_path / "flow.yaml"
    flow.write_text(f"""version: 1
name: t
steps:
  - {{id: a, component: {comps}/shop, function: newOrders}}
  - {{id: b, component: {comps}/crm, function: upsertContact}}
  - {{id: c, component: {comps}/chat, function: post, map: "$.text"}}
""")
    plan = plan_of(flow)
    assert plan.step("mapper.a.b").config == {}  # type: ignore[union-attr]
    assert plan.step("mapper.b.c").config == {"mapping": "$.text"}  # type: ignore[union-attr]


def test_env_uses_the_platform_sailor_names() -> None:
    plan = plan_of(ROOT / "sample_flows" / "orders.yaml")
    env = plan.step("enrich").env("orders")  # type: ignore[union-attr]
    assert env["ELASTICIO_FLOW_ID"] == "orders"
    assert env["ELASTICIO_STEP_ID"] == "enrich"
    assert env["ELASTICIO_FUNCTION"] == "upsertContact"
    assert env["ELASTICIO_LISTEN_MESSAGES_ON"] == "orders:enrich:messages"
    assert env["ELASTICIO_PUBLISH_MESSAGES_TO"] == "orders.enrich"  # its own exchange
    for key in ("DATA", "ERROR", "SNAPSHOT", "REBOUND"):
        assert env[f"ELASTICIO_{key}_ROUTING_KEY"].startswith("orders.enrich.")


def test_config_hash_follows_config_only() -> None:
    a = plan_of(ROOT / "sample_flows" / "orders.yaml", {"SHOP_API_KEY": "a"})
    b = plan_of(ROOT / "sample_flows" / "orders.yaml", {"SHOP_API_KEY": "b"})
    assert a.steps[0].config_hash("orders") != b.steps[0].config_hash("orders")
    assert a.steps[2].config_hash("orders") == b.steps[2].config_hash("orders")


def test_plan_json_masks_secrets() -> None:
    plan = plan_of(ROOT / "sample_flows" / "orders.yaml", {"SHOP_API_KEY": "very-secret"})
    assert "very-secret" not in str(plan.to_json())


def test_the_services_spec_the_host_sends_is_the_one_they_read() -> None:
    from flowrun.broker.platform import flow_spec
    from flowrun.contract.spec import FlowSpec

    plan = plan_of(ROOT / "sample_flows" / "mixed.yaml")
    spec = flow_spec(plan)
    assert FlowSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    clock = spec.steps["clock"]
    assert clock.tick_interval == 1 and clock.input_queue == "mixed:clock:messages"
    assert clock.account == "mixed.clock" and spec.steps["notify"].account is None
