"""Hostile or careless input: it ends at once with one line and exit 2, and what came
from the environment (where people keep secrets) is never printed back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from flowrun.contract import names
from flowrun.core.flowfile import load_flow
from flowrun.errors import FlowFileError
from tests.conftest import COMPONENTS, flowrun


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return flowrun(*args, env=env or {}, check=False, timeout=60)


def one_line_exit_2(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


BILLION_LAUGHS = """version: 1
name: lol
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
steps: []
"""


def test_billion_laughs_ends_at_once(tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(BILLION_LAUGHS)
    started = time.monotonic()
    with pytest.raises(FlowFileError, match="more than 100,000 values"):
        load_flow(path, {})
    # Generous on a loaded machine: unbounded, it would not end at all.
    assert time.monotonic() - started < 10.0
    assert "YAML aliases" in one_line_exit_2(run("validate", str(path)))


def test_a_self_referencing_alias_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("version: 1\nname: loop\nsteps: &s [*s]\n")
    line = one_line_exit_2(run("validate", str(path)))
    assert "alias refers to itself" in line
    assert "loop.yaml:3" in line


def test_a_huge_flow_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:  # 50 MB, sparse: costs no disk
        f.write(b"version: 1\nname: huge\n")
        f.truncate(50 * 1024 * 1024)
    started = time.monotonic()
    line = one_line_exit_2(run("validate", str(path)))
    assert time.monotonic() - started < 5  # the interpreter's start included
    assert "limited to 1 MiB" in line


def flow_with(tmp_path: Path, extra_step: str) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(f"""version: 1
name: sec
steps:
  - id: src
    component: {COMPONENTS}/shop
    function: newOrders
    config:
      apiKey: ${{SHOP_KEY}}
      endpoint: ${{SHOP_URL}}
      plain: visible-value
{extra_step}""")
    return path


def test_values_from_variables_are_masked_in_plan_json(tmp_path: Path) -> None:
    path = flow_with(tmp_path, f"""  - id: crm
    component: {COMPONENTS}/crm
    function: upsertContact
    map:
      email: ${{MAP_EXPR}}
""")
    env = {"SHOP_KEY": "k-123-secret", "SHOP_URL": "https://user:pw-777@shop.invalid",
           "MAP_EXPR": "customer.email"}
    result = run("plan", "--json", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert "k-123-secret" not in result.stdout and "pw-777" not in result.stdout
    assert "customer.email" not in result.stdout
    steps = json.loads(result.stdout)["steps"]
    assert steps[0]["config"] == {"apiKey": "***", "endpoint": "***", "plain": "visible-value"}
    assert steps[1]["config"] == {"mapping": {"email": "***"}}
    assert all("FLOWRUN_CFG" not in s["env"] for s in steps)


def test_a_bad_value_from_a_variable_is_not_echoed(tmp_path: Path) -> None:
    path = flow_with(tmp_path, f"""  - id: crm
    component: {COMPONENTS}/crm
    function: upsertContact
    memory: ${{MEM}}
""")
    env = {"SHOP_KEY": "x", "SHOP_URL": "y", "MEM": "hunter2-is-my-password"}
    line = one_line_exit_2(run("validate", str(path), env=env))
    assert "hunter2" not in line
    assert "is not a valid memory" in line and "flow.yaml:14" in line


def test_an_invalid_map_from_a_variable_is_not_echoed(tmp_path: Path) -> None:
    path = flow_with(tmp_path, f"""  - id: crm
    component: {COMPONENTS}/crm
    function: upsertContact
    map: ${{MAP_EXPR}}
""")
    env = {"SHOP_KEY": "x", "SHOP_URL": "y", "MAP_EXPR": "'s3cr3t-token' & ("}
    line = one_line_exit_2(run("validate", str(path), env=env))
    assert "s3cr3t" not in line
    assert "invalid JSONata" in line


def test_mapper_ids_never_clash_with_visible_ids(tmp_path: Path) -> None:
    # With '-' as the separator these gave mapper-a-b-c twice, and the flow
    # multiplied its messages; '.' is in no visible id, so ids are unique.
    path = tmp_path / "clash.yaml"
    path.write_text(f"""version: 1
name: clash
steps:
  - {{id: a, component: {COMPONENTS}/shop, function: newOrders}}
  - {{id: b-c, component: {COMPONENTS}/crm, function: upsertContact}}
  - {{id: a-b, component: {COMPONENTS}/crm, function: upsertContact}}
  - {{id: c, component: {COMPONENTS}/crm, function: upsertContact}}
""")
    result = run("plan", "--json", str(path))
    assert result.returncode == 0, result.stderr
    ids = [s["id"] for s in json.loads(result.stdout)["steps"]]
    assert ids == ["a", "mapper.a.b-c", "b-c", "mapper.b-c.a-b", "a-b", "mapper.a-b.c", "c"]
    assert len(set(ids)) == 7
    queues = [s["input_queue"] for s in json.loads(result.stdout)["steps"][1:]]
    assert len(set(queues)) == 6


def test_names_are_unambiguous_across_flows() -> None:
    # flow p + step x-y and flow p-x + step y were both `flowrun-p-x-y`.
    assert names.container("p", "x-y") != names.container("p-x", "y")
    assert names.network("p") != names.network("p-x")
    assert names.step_user("p", "x-y") != names.step_user("p-x", "y")
    assert names.data_key("p", "x-y") != names.data_key("p-x", "y")
    assert names.BROKER_NETWORK != names.network("broker")
    assert names.mapper_id("a", "b-c") != names.mapper_id("a-b", "c")


def test_a_component_path_from_a_variable_is_never_printed(tmp_path: Path) -> None:
    secret_dir = tmp_path / "tok-98765-secret"
    shutil.copytree(COMPONENTS / "crm", secret_dir)
    path = flow_with(tmp_path, """  - id: crm
    component: ${CRM_DIR}
    function: upsertContact
""")
    env = {"SHOP_KEY": "x", "SHOP_URL": "y", "CRM_DIR": str(secret_dir)}
    result = run("plan", "--json", str(path), env=env)
    assert result.returncode == 0, result.stderr
    assert "98765" not in result.stdout
    assert json.loads(result.stdout)["steps"][2]["component"] == "***"
    assert "98765" not in run("plan", str(path), env=env).stdout
    line = one_line_exit_2(run("validate", str(path), env={**env, "CRM_DIR": "/nope-98765"}))
    assert "98765" not in line and "not shown" in line
    wrong = flow_with(tmp_path, """  - id: crm
    component: ${CRM_DIR}
    function: noSuchFunction
""")
    line = one_line_exit_2(run("validate", str(wrong), env=env))
    assert "98765" not in line and "noSuchFunction" in line


def _component(tmp_path: Path, main: str = "./run.py") -> Path:
    root = tmp_path / "comp"
    root.mkdir()
    (root / "component.json").write_text(json.dumps(
        {"title": "t", "actions": {"run": {"main": main}}}))
    (root / "run.py").write_text("def process(msg):\n    return msg.body\n")
    return root


def _flow_of(tmp_path: Path, component: Path, extra: str = "") -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(f"""version: 1
name: hostile{extra}
steps:
  - {{id: src, component: {COMPONENTS}/shop, function: newOrders}}
  - {{id: run, component: {component}, function: run}}
""")
    return path


@pytest.mark.parametrize("damage", ["latin-1", "directory"])
def test_a_component_json_that_cannot_be_read_is_one_line(tmp_path: Path, damage: str) -> None:
    component = _component(tmp_path)
    descriptor = component / "component.json"
    if damage == "latin-1":
        descriptor.write_bytes('{"title": "caf\u00e9", "actions": {}}'.encode("latin-1"))
    else:
        descriptor.unlink()
        descriptor.mkdir()
    line = one_line_exit_2(run("validate", str(_flow_of(tmp_path, component))))
    assert "component.json" in line


def test_a_main_with_a_nul_byte_is_one_line(tmp_path: Path) -> None:
    line = one_line_exit_2(run("validate", str(_flow_of(tmp_path, _component(
        tmp_path, "./run\u0000.py")))))
    assert "NUL" in line


def test_a_main_through_a_symlink_is_refused_not_left_out_of_the_image(tmp_path: Path) -> None:
    component = _component(tmp_path, "./link.py")
    (component / "link.py").symlink_to(component / "run.py")
    line = one_line_exit_2(run("validate", str(_flow_of(tmp_path, component))))
    assert "symlink" in line and "link.py" in line


@pytest.mark.parametrize("memory", ['"1"', '"99999999999999g"', "1025g", "5m"])
def test_a_memory_docker_would_refuse_is_refused_by_validate(tmp_path: Path,
                                                             memory: str) -> None:
    path = flow_with(tmp_path, f"""  - id: crm
    component: {COMPONENTS}/crm
    function: upsertContact
    memory: {memory}
""")
    line = one_line_exit_2(run("validate", str(path), env={"SHOP_KEY": "x", "SHOP_URL": "y"}))
    assert "out of range" in line and "flow.yaml:14" in line
