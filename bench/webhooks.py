"""Flows called over HTTP: request to reply through 3 real steps, against the same
request answered by a bare HTTP server on the same machine.

16 clients, each with one keep-alive connection, send requests one after another;
the figures are the latency of each request (p50, p99) and the requests answered
per second by all of them. The flows: Python (hook-py -> mapper -> answer-py's
`answer`) and Node.js under the platform's sailor (webhook-js -> mapper ->
reply-js). The baseline answers the same JSON from Python's ThreadingHTTPServer on
loopback, so it costs what HTTP alone costs here.
"""

from __future__ import annotations

import http.client
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ROOT / "sample_flows" / "components"
CLIENTS = 16

PYTHON_FLOW = """version: 1
name: {name}
steps:
  - id: ingest
    component: {components}/hook-py
    function: receive
  - id: answer
    component: {components}/answer-py
    function: answer
"""
NODE_FLOW = """version: 1
name: {name}
steps:
  - id: receive
    component: {components}/webhook-js
    function: receive
  - id: reply
    component: {components}/reply-js
    function: reply
    map:
      responseBody: $
"""


def load(url: str, requests: int) -> dict[str, Any]:
    """`requests` POSTs from CLIENTS clients at once: latencies and the rate."""
    parts = urllib.parse.urlsplit(url)
    per_client = max(1, requests // CLIENTS)
    latencies: list[float] = []
    lock = threading.Lock()
    failures: list[str] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        mine = []
        for i in range(per_client):
            body = json.dumps({"name": f"c{index}-{i}", "n": i}).encode()
            started = time.perf_counter()
            connection.request("POST", parts.path, body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            mine.append((time.perf_counter() - started) * 1000)
            if response.status != 200 or f'"c{index}-{i}"'.encode() not in answer:
                failures.append(f"{response.status} {answer[:80]!r}")
        connection.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(client, range(CLIENTS)))
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} request(s) got a wrong answer, e.g. {failures[0]}")
    ordered = sorted(latencies)
    return {"p50": ordered[len(ordered) // 2],
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "rps": len(latencies) / elapsed, "requests": len(latencies)}


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer (headers and body together), no Nagle: written in two, an
    # answer waits for the client's delayed ACK (40 ms), which is not HTTP's cost.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def baseline(requests: int) -> dict[str, Any]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return load(f"http://127.0.0.1:{server.server_address[1]}/", requests)
    finally:
        server.shutdown()


def _flowrun(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "flowrun", *args], capture_output=True,
                            text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"flowrun {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def through_flow(tmp: Path, template: str, name: str, requests: int) -> dict[str, Any]:
    path = tmp / f"{name}.yaml"
    path.write_text(template.format(name=name, components=COMPONENTS))
    # The Python answer step's own component says `request-reply`; its trigger's says
    # `webhook`: the gateway waits for the answer.
    _flowrun("up", "-d", "--timeout", "300", str(path))
    try:
        url = json.loads(_flowrun("status", name, "--json"))["flows"][0]["webhook"]
        load(url, CLIENTS * 4)  # warm: the first requests load code in every step
        return load(url, requests)
    finally:
        _flowrun("down", "--purge", "--grace", "2", name)


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    requests = 160 if quick else 3200
    base = baseline(requests)
    found = {"http_baseline": base, "http_python_3": through_flow(
        tmp, PYTHON_FLOW, f"bench-http-py-{int(time.time())}", requests)}
    if not quick:  # a Node.js flow's images and warm-up: `make bench` only
        found["http_node_3"] = through_flow(tmp, NODE_FLOW, f"bench-http-js-{int(time.time())}",
                                            requests)
    for key in ("http_python_3", "http_node_3"):
        if key in found:
            found[key]["ratio_p50"] = found[key]["p50"] / base["p50"]
            found[key]["ratio_rps"] = found[key]["rps"] / base["rps"]
    return found


def rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    b = r["http_baseline"]
    out = []
    for key, what in (("http_python_3", "Python"), ("http_node_3", "Node.js")):
        if key not in r:
            continue
        x = r[key]
        out.append((f"HTTP request -> reply, 3 real steps ({what}), p50 / p99",
                    f"{x['p50']:.1f} / {x['p99']:.1f} ms",
                    f"{b['p50']:.2f} / {b['p99']:.2f} ms (bare server)",
                    f"{x['ratio_p50']:.1f}x", "report"))
        out.append((f"HTTP requests per second, {CLIENTS} clients ({what})",
                    f"{x['rps']:.0f} req/s", f"{b['rps']:.0f} req/s (bare server)",
                    f"{x['ratio_rps']:.3f}x", "report"))
    return out
