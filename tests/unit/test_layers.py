"""The package layout is the architecture: imports run one way only.

    cli ─▶ ui ─▶ commands ─▶ render ─▶ supervise ─▶ broker ─▶ engine ─▶ core
                                           settings, errors, waiting, contract ◀─┘
    sailor ─▶ contract ◀─ services       (the two programs that run in containers)

`sailor` and `services` run inside containers: each imports nothing of flowrun's
but itself and the contract, and the host imports neither of them. The contract
imports nothing of flowrun's but itself.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "flowrun"
RANK = {"errors": 0, "settings": 0, "contract": 0, "waiting": 0, "core": 1, "engine": 2,
        "broker": 3, "supervise": 4, "render": 5, "commands": 6, "ui": 7, "cli": 8, "__main__": 8,
        "__init__": 8, "pytest_plugin": 8}
# Third-party libraries that belong to one layer and may not leak below it.
OWNERS = {"docker": "engine", "requests": "engine", "pika": "broker", "rich": "render",
          "watchfiles": "supervise", "starlette": "ui", "uvicorn": "ui", "sse_starlette": "ui"}
CONTAINED = ("sailor", "services")  # programs of their own, in their own containers


def layer(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "flowrun", module
    return parts[1].removesuffix(".py") if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports, relative imports resolved (`from ..contract import
    wire` in flowrun/sailor/runtime.py is flowrun.contract)."""
    package = ["flowrun", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.append((module, node.lineno))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "resources" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_run_one_way(path: Path) -> None:
    own = "flowrun." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    mine = layer(own)
    for module, line in imports(path):
        top = module.split(".")[0]
        if top == "flowrun":
            theirs = layer(module)
            if mine in CONTAINED:
                assert theirs in (mine, "contract"), f"{path}:{line}: {mine} imports {module}"
                continue
            if mine == "contract":
                assert theirs == "contract", f"{path}:{line}: the contract imports {module}"
            assert theirs not in CONTAINED, (
                f"{path}:{line}: the host imports {module}, which runs in a container")
            assert RANK[theirs] <= RANK[mine], (
                f"{path}:{line}: {mine} imports {module} ({theirs} is above it)")
        elif top in OWNERS and mine not in CONTAINED:
            assert RANK[mine] >= RANK[OWNERS[top]], (
                f"{path}:{line}: {mine} imports {top}, which belongs to {OWNERS[top]}")


def test_one_module_owns_every_queue_and_routing_key_name() -> None:
    offenders = []
    for path in MODULES:
        if path.relative_to(PACKAGE).as_posix() == "contract/names.py":
            continue
        text = path.read_text()
        for needle in (':messages"', '.message"', ':errors"', ':dead"', ':snapshot"',
                       ':rebound"', '.live"', 'f"flowrun-{', 'f"flowrun.{'):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not offenders, offenders


@pytest.mark.parametrize("args", [["validate"], ["plan"], ["plan", "--json"]])
def test_validate_and_plan_load_neither_docker_nor_pika(args: list[str]) -> None:
    probe = (
        "import sys\n"
        "from flowrun.cli import main\n"
        f"sys.argv = ['flowrun', *{args!r}, 'sample_flows/orders.yaml']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "loaded = sorted(m for m in ('docker', 'pika', 'rich.live', 'watchfiles') "
        "if m in sys.modules)\n"
        "print('LOADED', loaded, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "LOADED []" in result.stderr, result.stderr


def test_the_cli_loads_none_of_the_pages_libraries() -> None:
    """`flowrun up`'s start is part of warm-up: the page's server stays out of it."""
    probe = ("import sys\nimport flowrun.cli\n"
             "print(sorted(m for m in ('starlette', 'uvicorn', 'sse_starlette') "
             "if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_ups_start_leaves_the_amqp_client_for_later() -> None:
    """`up` loads pika while Docker makes the flow's networks (supervise/executor.py),
    so its 30-40 ms are not spent before the first Docker call."""
    probe = ("import sys\nimport flowrun.cli\nimport flowrun.supervise.supervisor\n"
             "import flowrun.supervise.executor\nprint('pika' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stdout + result.stderr


@pytest.mark.parametrize(("given", "looked"), [(None, False), ("some-plugin", True)])
def test_commands_start_without_pydantics_plugin_lookup(given: str | None,
                                                          looked: bool) -> None:
    """pydantic's plugin lookup reads every installed package's metadata (13-30 ms of a
    command's start): off in flowrun's commands unless the user set the variable."""
    probe = (
        "import sys\n"
        "from flowrun.cli import main\n"
        "sys.argv = ['flowrun', 'validate', 'sample_flows/orders.yaml']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "from pydantic.plugin import _loader\n"
        "print('LOOKED', _loader._plugins is not None, file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if given is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = given
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert f"LOOKED {looked}" in result.stderr, result.stderr
