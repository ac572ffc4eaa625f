"""flowrun installs as a tool: a wheel, in a fresh virtualenv outside the checkout,
runs the sample flow up and down (everything it needs ships inside the package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, unique


def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=env)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_the_wheel_runs_the_sample_flow_outside_the_checkout(engine: Any,
                                                             tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT),
        cwd=tmp_path)
    (wheel,) = dist.glob("flowrun-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    run(str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel),
        cwd=tmp_path)
    flows = tmp_path / "flows"
    shutil.copytree(ROOT / "sample_flows", flows)
    name = unique("wheel")
    flow = flows / "orders.yaml"
    flow.write_text(flow.read_text().replace("name: orders", f"name: {name}"))
    # No checkout on the path: only what the wheel installed.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "CI": "true", "ORDERS_LIMIT": "0",
           "FLOWRUN_GATEWAY_PORT": os.environ.get("FLOWRUN_GATEWAY_PORT", "0")}
    flowrun = str(venv / "bin" / "flowrun")
    where = run(str(venv / "bin" / "python"), "-c",
                "import flowrun, sys; print(flowrun.__file__)", cwd=tmp_path, env=env)
    assert str(venv) in where.stdout and str(ROOT) not in where.stdout
    try:
        run(flowrun, "up", "-d", "--timeout", "180", str(flow), cwd=tmp_path, env=env)
        out = run(flowrun, "send", name, json.dumps({
            "id": "w-1", "customer": {"first": "Ada", "last": "L", "email": "a@x.org"},
            "items": [{"price": 3}]}), "--expect", "notify", "--timeout", "60",
            cwd=tmp_path, env=env).stdout
        assert "Order w-1 from Ada L" in out
    finally:
        subprocess.run([flowrun, "down", "--purge", "--grace", "0", str(flow)], cwd=tmp_path,
                       env=env, capture_output=True, timeout=120)
    assert engine.observe({"io.flowrun.flow": name}) == []
