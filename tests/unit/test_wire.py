"""The platform's wire protocol, the platform services' answers, Node.js components
in the plan, and readable log lines: pure logic, no Docker, no broker."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from flowrun.contract import wire
from flowrun.contract.spec import AmqpAccess, FlowSpec, ServicesConfig, StepEntry
from flowrun.contract.wire import api_key
from flowrun.core.component import Runtime, load_component
from flowrun.core.load import load_plan
from flowrun.core.logline import readable
from flowrun.errors import ComponentError
from flowrun.services.state import Flow, Services
from tests.conftest import ROOT

KEYS = wire.Keys("pw", "0123456789abcdef")


def test_a_body_encrypted_by_nodejs_crypto_decrypts() -> None:
    # node -e: createCipheriv('aes-256-cbc', sha256('pw'), '0123456789abcdef'),
    # JSON.stringify({body:{a:1},id:'x'}), base64: what the platform's sailor sends.
    from_node = b"xwJFyEwMqt0jaWl0qGQLQdyyOzVXCuaNvUUFS8NMCMs="
    assert KEYS.decrypt(from_node) == {"body": {"a": 1}, "id": "x"}
    assert KEYS.decrypt(KEYS.encrypt({"body": [1, "é"]})) == {"body": [1, "é"]}
    raw = base64.b64decode(KEYS.encrypt({"x": 1}))
    assert KEYS.decrypt(raw, protocol_version=2) == {"x": 1}  # version 2: raw ciphertext


def test_another_flows_key_or_plain_json_is_refused() -> None:
    other = wire.Keys("other", "0123456789abcdef")
    with pytest.raises(wire.WireError):
        other.decrypt(KEYS.encrypt({"body": 1}))
    with pytest.raises(wire.WireError):
        KEYS.decrypt(json.dumps({"body": 1}).encode())


def test_flow_keys_differ_per_flow_and_are_stable() -> None:
    a, b = wire.Keys.for_flow("secret", "a"), wire.Keys.for_flow("secret", "b")
    assert a == wire.Keys.for_flow("secret", "a") and a != b
    assert len(a.iv) == 16


def test_every_output_is_a_message_of_its_own_in_the_inputs_thread() -> None:
    parent = {"messageId": "in-1", "threadId": "t-1", "x-eio-meta-seq": 7, "x-death": "x",
              "retry": 2, "custom": 1.5}
    one = wire.outgoing_headers(parent, "step", "flow")
    two = wire.outgoing_headers(parent, "step", "flow")
    assert one["messageId"] != two["messageId"]
    assert one["parentMessageId"] == "in-1" and one["threadId"] == "t-1"
    assert one["x-eio-meta-seq"] == 7  # carried, as the platform's sailor carries it
    assert "x-death" not in one and "retry" not in one and "custom" not in one  # no floats
    first = wire.outgoing_headers(None, "trigger", "flow", message_id="m")
    assert first["threadId"] == "m" and "parentMessageId" not in first


def test_message_ids_are_random_uuids_as_the_platform_makes_them() -> None:
    ids = {wire.new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for text in list(ids)[:50]:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 4, uuid.RFC_4122)


def test_meta_headers_round_trip() -> None:
    meta = wire.meta_headers({"seq": 3, "sentAt": 1.5, "Who": "me", "skip": None})
    assert meta == {"x-eio-meta-seq": 3, "x-eio-meta-sentat": "1.5", "x-eio-meta-who": "me"}
    assert wire.unmeta(meta) == {"seq": 3, "sentat": "1.5", "who": "me"}


def test_snapshots_replace_or_merge() -> None:
    assert wire.merge_snapshot({"a": 1}, "snapshot", {"b": 2}) == {"b": 2}
    assert wire.merge_snapshot({"a": 1}, "updateSnapshot", {"b": 2}) == {"a": 1, "b": 2}
    assert wire.merge_snapshot(None, "updateSnapshot", {"b": 2}) == {"b": 2}
    assert wire.merge_snapshot({"a": 1}, None, 5) == 5


def test_an_error_message_as_the_platform_writes_it() -> None:
    raw_input = KEYS.encrypt({"body": {"n": 1}})
    body = wire.error_payload(KEYS, "TypeError", "boom", "at x", raw_input)
    plain = json.loads(body)
    assert set(plain) == {"error", "errorInput"}
    assert KEYS.decrypt(plain["error"]) == {"name": "TypeError", "message": "boom",
                                            "stack": "at x"}
    shown = wire.decode_error(KEYS, body)
    assert shown["message"] == "boom" and shown["input"] == {"body": {"n": 1}}


def test_readable_log_lines() -> None:
    line = json.dumps({"name": "sailor", "level": 30, "msg": "Fully initialized",
                       "time": "2026-11-28T00:00:00Z", "v": 0})
    assert readable(line) == "INFO  Fully initialized"
    err = json.dumps({"level": 50, "msg": "failed", "err": {"message": "nope",
                                                            "stack": "Error: nope\n  at a"}})
    assert readable(err).startswith("ERROR failed\n      Error: nope")
    assert readable("plain text") == "plain text"
    assert readable("{not json") == "{not json"
    assert readable("2026-11-28T00:00:00Z " + line).endswith("INFO  Fully initialized")


def _node_component(tmp_path: Path, package: dict[str, object] | None,
                    main: str = "lib/a.js") -> Path:
    path = tmp_path / "comp"
    (path / "lib").mkdir(parents=True)
    (path / main).write_text("exports.process = async function () {};\n")
    (path / "component.json").write_text(json.dumps(
        {"title": "c", "actions": {"a": {"main": main}}}))
    if package is not None:
        (path / "package.json").write_text(json.dumps(package))
    return path


def test_a_nodejs_component_is_one_that_depends_on_the_platforms_sailor(
        tmp_path: Path) -> None:
    path = _node_component(tmp_path, {"dependencies": {"elasticio-sailor-nodejs": "2.7.8"}})
    assert load_component(path, "here").runtime is Runtime.NODE
    (path / "package.json").write_text(json.dumps({"dependencies": {"lodash": "4"}}))
    with pytest.raises(ComponentError, match="must depend on elasticio-sailor-nodejs"):
        load_component(path, "here")


def test_a_python_main_in_a_nodejs_component_is_refused(tmp_path: Path) -> None:
    path = _node_component(tmp_path, {"dependencies": {"elasticio-sailor-nodejs": "2.7.8"}},
                           main="lib/a.py")
    with pytest.raises(ComponentError, match="runs .js files"):
        load_component(path, "here")


def test_the_mixed_sample_plans_nodejs_steps_for_the_platforms_sailor() -> None:
    plan = load_plan(ROOT / "sample_flows" / "mixed.yaml", {})
    clock, _m1, split, _m2, notify = plan.steps
    assert (clock.runtime, split.runtime, notify.runtime) == (Runtime.NODE, Runtime.NODE,
                                                              Runtime.PYTHON)
    # A Node.js trigger reads ticks from an input queue of its own, bound to nothing.
    assert clock.routes.input_queue == "mixed:clock:messages" and clock.routes.listens_to is None
    assert clock.ticked and not split.ticked
    env = clock.env("mixed")
    for required in ("ELASTICIO_EXEC_ID", "ELASTICIO_CONTAINER_ID", "ELASTICIO_WORKSPACE_ID",
                     "ELASTICIO_USER_ID", "ELASTICIO_COMP_ID", "ELASTICIO_LISTEN_MESSAGES_ON"):
        assert env[required]
    # Secrets never go into the container's environment.
    assert not {"ELASTICIO_API_KEY", "ELASTICIO_AMQP_URI",
                "ELASTICIO_MESSAGE_CRYPTO_PASSWORD"} & set(env)
    assert plan.variables == {"channel": "#ticks"}
    assert json.dumps(plan.to_json()).count("demo-token") == 0


AMQP = AmqpAccess(host="127.0.0.1", port=1, user="u", password="p")


def _services(tmp_path: Path) -> Services:
    return Services(ServicesConfig(secret="s", amqp=AMQP), tmp_path)


def _spec(steps: dict[str, StepEntry], variables: dict[str, Any] | None = None) -> FlowSpec:
    return FlowSpec(vhost="flowrun.f", snapshot_queue="f:snapshots",
                    error_tally_queue="f:error-tally", dead_letter_queue="f:dead",
                    steps=steps, variables=variables or {})


def test_step_info_merges_the_credential_and_keeps_updated_keys(tmp_path: Path) -> None:
    flow = Flow(tmp_path, "f", "s")
    flow.spec = _spec({"a": StepEntry(kind="action", runtime="python", config={"x": 1},
                                      credentials={"token": "t"}, account="f.a")}, {"v": 1})
    info = flow.step_info("a")
    assert info is not None
    assert info["config"] == {"x": 1, "token": "t", "_account": "f.a"}
    assert info["variables"] == {"v": 1} and info["snapshot"] == {}
    flow.accounts["f.a"] = {"base": {"token": "t"}, "keys": {"token": "t", "refresh": "r"}}
    assert flow.step_info("a")["config"]["refresh"] == "r"  # type: ignore[index]
    # A new credential in the flow file wins over keys updated for the old one.
    flow.spec = _spec({"a": StepEntry(kind="action", runtime="python", config={"x": 1},
                                      credentials={"token": "new"}, account="f.a")})
    assert "refresh" not in flow.step_info("a")["config"]  # type: ignore[index]
    assert flow.step_info("nope") is None


def test_services_know_a_step_by_its_derived_key_only(tmp_path: Path) -> None:
    services = _services(tmp_path)

    def basic(user: str, key: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()

    assert services.who(basic("f.a", api_key("s", "f", "a"))) == ("f", "a")
    assert services.who(basic("f.mapper.a.b", api_key("s", "f", "mapper.a.b"))) == (
        "f", "mapper.a.b")
    assert services.who(basic("f.a", api_key("s", "f", "b"))) is None
    assert services.who(basic("f.a", "guess")) is None
    assert services.who(None) is None and services.who("Bearer x") is None
