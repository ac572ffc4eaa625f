"""`flowrun test` against the same checks written as the README's shell recipe.

The same cases of `sample_flows/orders.test.yaml` whose input is a message (the
exec case aside, which the shell recipe cannot do), both ways, from a flow that is
down: `flowrun test` (up, the cases at once, down) against `flowrun up -d`, one
`flowrun send --expect` per case (what CI jobs wrote before), `flowrun down`.
Wall time of each, as the median of the runs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ORDERS = ROOT / "sample_flows" / "orders.yaml"
CASES = [  # (the message, the step to expect it from), as in orders.test.yaml
    ({"id": "t-1", "customer": {"first": "Ada", "last": "Lovelace",
                                "email": "ada@example.org"}, "items": [{"price": 30}]}, "notify"),
    ({"id": "t-5", "customer": {"first": "Grace", "last": "Hopper",
                                "email": "grace@example.org"}, "items": [{"price": 5}]}, "enrich"),
    ({"id": "t-6", "customer": {"first": "Alan", "last": "Turing",
                                "email": "alan@example.org"}, "items": [{"price": 1}]}, "notify"),
]


def _flowrun(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "flowrun", *args], capture_output=True,
                            text=True, cwd=ROOT, env={**os.environ, "ORDERS_LIMIT": "0"})
    if result.returncode != 0:
        raise SystemExit(f"flowrun {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result


def with_test_file(tmp: Path) -> float:
    path = tmp / "bench.test.yaml"
    path.write_text(f"flow: {ORDERS}\ntests:\n" + "".join(
        f"  - name: case {i}\n    send: {{body: {json.dumps(body)}}}\n"
        f"    expect: [{{step: {step}}}]\n    timeout: 30s\n"
        for i, (body, step) in enumerate(CASES)))
    started = time.perf_counter()
    _flowrun("test", str(path))
    return time.perf_counter() - started


def with_shell_recipe() -> float:
    started = time.perf_counter()
    _flowrun("up", "-d", "--timeout", "120", str(ORDERS))
    for body, step in CASES:
        _flowrun("send", "orders", json.dumps(body), "--expect", step, "--timeout", "30")
    _flowrun("down", "--purge", "--grace", "2", "orders")
    return time.perf_counter() - started


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "flowrun", "down", "--purge", "orders"], cwd=ROOT,
                   capture_output=True)
    runs = 1 if quick else 3
    test_file, shell = [], []
    for _ in range(runs):
        test_file.append(with_test_file(tmp))
        shell.append(with_shell_recipe())
    a, b = statistics.median(test_file), statistics.median(shell)
    return {"flow_tests": {"flowrun_test_s": a, "shell_recipe_s": b, "ratio": a / b,
                           "cases": len(CASES), "runs": runs}}


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    f = r["flow_tests"]
    return [(f"CI: {f['cases']} cases on orders, from down to down",
             f"{f['flowrun_test_s']:.1f} s (flowrun test)",
             f"{f['shell_recipe_s']:.1f} s (up, send --expect x{f['cases']}, down)",
             f"{f['ratio']:.2f}x", "report")]
