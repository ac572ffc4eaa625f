"""The corpus of malformed flow files: each gives one line, exit code 2, no traceback."""

from __future__ import annotations

import ast
import traceback
from pathlib import Path

import pytest

from flowrun.core.load import load_plan
from flowrun.errors import BadInput
from tests.conftest import ROOT, flowrun

CORPUS = sorted((ROOT / "tests" / "bad_flows").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_bytes().decode("utf-8", "replace").splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ")


# Refusals the corpus cannot reach, and where each is tried instead.
ELSEWHERE = {
    ("flowfile.py", "_compose", 1): "a YAML error without a mark: none is known to reach it",
    ("flowfile.py", "_to_python", 0): "no YAML node is neither scalar, sequence nor mapping",
    ("flowfile.py", "_Walk.visit", 0): "test_hostile_input: the billion laughs",
    ("flowfile.py", "load_flow", 0): "test_hostile_input: a huge flow file",
    ("flowfile.py", "load_flow", 1): "test_hostile_input and the CLI tests: no such file",
    ("flowfile.py", "load_flow", 2): "a directory as the flow file: the CLI's Path type",
    ("flowfile.py", "load_flow", 4): "an unreadable file (the suite runs as root)",
    ("plan.py", "check_mapping", 0): "test_hostile_input: an invalid map from ${VAR}",
    ("plan.py", "load_components", 0): "test_hostile_input: a component path from ${VAR}",
}


def _raise_sites() -> dict[tuple[str, int], tuple[str, str, int]]:
    """Every place the loading code refuses a flow: (file, line) -> (file, function,
    its n-th refusal), which does not move when lines do."""
    sites: dict[tuple[str, int], tuple[str, str, int]] = {}
    for name in ("flowfile.py", "component.py", "plan.py"):
        tree = ast.parse((ROOT / "flowrun" / "core" / name).read_text())
        for top in ast.walk(tree):
            if not isinstance(top, ast.FunctionDef | ast.ClassDef):
                continue
            functions = [top] if isinstance(top, ast.FunctionDef) else [
                f for f in top.body if isinstance(f, ast.FunctionDef)]
            for function in functions:
                qual = function.name if function is top else f"{top.name}.{function.name}"
                raises = sorted(n.lineno for n in ast.walk(function) if isinstance(n, ast.Raise)
                                and isinstance(n.exc, ast.Call) and getattr(
                                    n.exc.func, "id", "") in ("FlowFileError", "ComponentError"))
                for i, line in enumerate(raises):
                    sites.setdefault((name, line), (name, qual, i))
    return sites


def test_the_corpus_reaches_every_refusal_of_the_code() -> None:
    """Not a count of files: every refusal in the loading code is reached by a file of
    the corpus, or named above with where it is tried instead."""
    sites = _raise_sites()
    reached = set()
    for path in CORPUS:
        try:
            load_plan(path, {"PATH": "/usr/bin:/bin"})
        except BadInput as e:
            frame = [f for f in traceback.extract_tb(e.__traceback__)
                     if "/flowrun/core/" in f.filename][-1]
            reached.add(sites[(Path(frame.filename).name, frame.lineno or 0)])
        else:
            raise AssertionError(f"{path.name} loads without a refusal")
    missed = set(sites.values()) - reached - set(ELSEWHERE)
    assert not missed, f"refusals no bad input reaches: {sorted(missed)}"
    assert not reached & set(ELSEWHERE), "reached now: drop it from ELSEWHERE"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_flow_file(path: Path) -> None:
    result = flowrun("validate", str(path), env={}, check=False, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert expected(path) in lines[0]
    assert any(where in lines[0] for where in (path.name, "component.json", "package.json"))


@pytest.mark.parametrize("args", [
    ["up", "--watch", "-d", "sample_flows/orders.yaml"],
    ["logs", "a", "b", "c"],
    ["plan"],
    ["up", "--timeout", "0", "sample_flows/orders.yaml"],
    ["logs", "x", "--since", "9999999d"],
    ["logs", "x", "--since", "yesterday"],
    ["logs", "x", "--tail", "-3"],
    ["send", '{"a": NaN}'],
    ["send", "[Infinity]"],
    ["send", "-"],
])
def test_bad_command_lines_exit_2(args: list[str]) -> None:
    result = flowrun(*args, check=False, timeout=60, stdin="")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    if args[0] == "send" or "--since" in args or "--tail" in args:  # one line, no engine
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
