from __future__ import annotations

import pytest

from flowrun.core.flowfile import interpolate, load_flow
from flowrun.core.masking import MASK, is_secret_key, mask
from flowrun.errors import FlowFileError
from tests.conftest import ROOT

SAMPLES = ROOT / "sample_flows"


def test_sample_flow_loads_with_defaults() -> None:
    flow = load_flow(SAMPLES / "orders.yaml", {})
    assert flow.spec.name == "orders"
    assert [s.id for s in flow.spec.steps] == ["fetch", "enrich", "notify"]
    assert flow.spec.steps[0].config["apiKey"] == "demo-key"


def test_environment_overrides_default() -> None:
    flow = load_flow(SAMPLES / "orders.yaml", {"SHOP_API_KEY": "k-123", "ORDERS_LIMIT": "0"})
    assert flow.spec.steps[0].config == {"apiKey": "k-123", "limit": "0"}


@pytest.mark.parametrize("text,env,want", [
    ("${A}", {"A": "1"}, "1"),
    ("x-${A}-y", {"A": "1"}, "x-1-y"),
    ("${A:-dflt}", {}, "dflt"),
    ("${A:-dflt}", {"A": ""}, "dflt"),
    ("${A:-}", {}, ""),
    ("$${A}", {"A": "1"}, "${A}"),
    ("cost $5", {}, "cost $5"),
])
def test_interpolate(text: str, env: dict[str, str], want: str) -> None:
    assert interpolate(text, env, "f:1") == want


def test_unset_variable_names_line_and_fix() -> None:
    with pytest.raises(FlowFileError, match=r"f:3: \$\{NOPE\} is not set; export NOPE="):
        interpolate("${NOPE}", {}, "f:3")


@pytest.mark.parametrize("key", ["password", "apiKey", "api_key", "API-KEY", "token",
                                 "clientSecret", "accessToken", "key", "privateKey"])
def test_secret_keys(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["limit", "email", "monkeyCount", "url", "name"])
def test_plain_keys(key: str) -> None:
    assert not is_secret_key(key)


def test_mask_nested() -> None:
    cfg = {"apiKey": "s3", "limit": 5, "auth": {"user": "u"}, "list": [{"token": "t"}]}
    assert mask(cfg) == {"apiKey": MASK, "limit": 5, "auth": MASK, "list": [{"token": MASK}]}
    assert cfg["apiKey"] == "s3"  # a copy: the original is untouched
