"""Container specs and the platform's preparations are pure functions of the plan:
what `up` starts is what these say, held as golden text."""

from __future__ import annotations

import hashlib
import os

from flowrun.broker.server import Broker
from flowrun.core.prepare import Platform, prepare
from flowrun.core.reconcile import reconcile
from flowrun.engine.spec import ContainerSpec
from flowrun.supervise.specs import record_labels, step_spec
from tests.conftest import ROOT, plan_of

GOLDEN = ROOT / "tests" / "golden"
PLAN = plan_of(ROOT / "sample_flows" / "orders.yaml", revision="rev1")
BROKER = Broker(amqp_port=5672, http_port=15672, admin_pass="golden-secret")


def describe(spec: ContainerSpec) -> str:
    """Stable text of a spec; the checkout's path shows as <root>, a file's content as
    its digest (its secrets derive from the fixed admin secret above)."""
    def shown(value: str) -> str:
        return value.replace(str(ROOT), "<root>")

    lines = [spec.name, f"  image {spec.image}",
             f"  network {spec.network} aliases {list(spec.aliases)} user {spec.user} "
             f"memory {spec.memory} pids {spec.pids_limit} restart {spec.restart} "
             f"hardened {spec.hardened}"]
    lines += [f"  env {k}={shown(v)}" for k, v in sorted(spec.env.items())]
    lines += [f"  label {k}={shown(v)}" for k, v in sorted(spec.labels.items())]
    lines += [f"  file {path} {mode:04o} owner {spec.files_owner} sha256:"
              f"{hashlib.sha256(content).hexdigest()[:16]}"
              for path, (content, mode) in sorted(spec.files.items())]
    return "\n".join(lines)


def test_step_specs_are_golden() -> None:
    text = "\n".join(describe(step_spec(PLAN, s, i, BROKER)) for i, s in enumerate(PLAN.steps))
    record = "\n".join(f"record {k}={v.replace(str(ROOT), '<root>')}"
                       for k, v in sorted(record_labels(PLAN).items()))
    got = text + "\n" + record + "\n"
    if os.environ.get("FLOWRUN_UPDATE_GOLDEN"):  # then review the diff and commit it
        (GOLDEN / "orders.specs.txt").write_text(got)
    assert got == (GOLDEN / "orders.specs.txt").read_text()


def test_a_mapper_reaches_nothing_but_the_broker_and_a_step_only_its_own_files() -> None:
    specs = {s.id: step_spec(PLAN, s, i, BROKER) for i, s in enumerate(PLAN.steps)}
    assert specs["mapper.fetch.enrich"].network == "flowrun.orders.internal"
    assert specs["fetch"].network == "flowrun.orders"
    for spec in specs.values():
        assert all(mode == 0o400 for _content, mode in spec.files.values())
        assert not {"ELASTICIO_AMQP_URI", "ELASTICIO_API_KEY"} & set(spec.env)
    assert b"api_uri" not in specs["mapper.fetch.enrich"].files["/etc/flowrun/step.json"][0]


def test_preparations_say_what_up_would_make_and_why() -> None:
    nothing = Platform(images=frozenset(), networks=frozenset(), broker_running=False,
                       services_image=None)
    lines = [p.line() for p in prepare(PLAN, reconcile(PLAN, []), nothing, "svc:1")]
    if os.environ.get("FLOWRUN_UPDATE_GOLDEN"):
        (GOLDEN / "orders.prepare.txt").write_text("\n".join(lines) + "\n")
    assert lines == (GOLDEN / "orders.prepare.txt").read_text().splitlines()
    everything = Platform(images=frozenset({*(s.image for s in PLAN.steps), "svc:1"}),
                          networks=frozenset({"flowrun.orders", "flowrun.orders.internal"}),
                          broker_running=True, services_image="svc:1")
    assert prepare(PLAN, reconcile(PLAN, []), everything, "svc:1") == []
    assert [p.line() for p in prepare(PLAN, [], everything, "svc:1", ("py:base",))] == [
        "need      base image py:base           missing: `make images` builds it"]
    older = Platform(everything.images, everything.networks, True, "svc:0")
    assert [p.line() for p in prepare(PLAN, [], older, "svc:1")] == [
        "start     services flowrun-services    runs an older image"]
