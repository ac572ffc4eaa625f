"""The benchmarks are tools, not tests: this only keeps `bench/run.py --quick` working.
No time is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.conftest import ROOT


def test_quick_benchmark_runs_and_reports_every_figure(engine: Any) -> None:
    # The swarm figures build a swarm of their own: `make bench` has them.
    result = subprocess.run([sys.executable, "bench/run.py", "--quick", "--no-swarm"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((ROOT / "bench" / "results" / "quick.json").read_text())
    for key in ("warmup_5", "warmup_21", "cold_warmup_5", "hop_ms", "end_to_end_5_ms",
                "throughput_5", "redeploy", "footprint_mb", "http_python_3"):
        assert key in report
    assert report["throughput_5"]["delivered"] == report["throughput_5"]["sent"]
    assert "| warm-up, 5 real steps" in result.stdout
