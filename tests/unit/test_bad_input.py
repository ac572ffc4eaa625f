"""The corpus of malformed flow files: each gives one line, exit code 2, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CORPUS = sorted((Path(__file__).parent.parent / "bad_flows").glob("*.yaml"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first.removeprefix("# expect: ")


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_flow_file(path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    result = subprocess.run([sys.executable, "-m", "flowrun", "validate", str(path)],
                            capture_output=True, text=True, env=env, timeout=60)
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
    root = Path(__file__).parent.parent.parent
    result = subprocess.run([sys.executable, "-m", "flowrun", *args], capture_output=True,
                            text=True, cwd=root, timeout=60, input="")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    if args[0] == "send" or "--since" in args or "--tail" in args:  # one line, no engine
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
