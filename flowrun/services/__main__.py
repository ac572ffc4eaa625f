"""`python3 -m flowrun.services`: the platform services' container's program."""

from __future__ import annotations

import json
import socket
import threading

from ..contract import GATEWAY_PORT, SERVICES_PORT, files
from ..contract.spec import ServicesConfig
from .gateway import Gateway
from .http import App, ByPort, server
from .state import CONFIG_FILE, DATA_DIR, Services, log


def _listen(port: int) -> socket.socket:
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle off (TCP_NODELAY) only on
    # sockets that say they are TCP, and an answer is two writes (headers, body): with
    # Nagle on, the second waits for the client's delayed ACK, 40 ms per request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("0.0.0.0", port))
    sock.set_inheritable(True)
    return sock


def main() -> int:
    files.receive(str(CONFIG_FILE))  # on one host, sent on standard input at the first start
    config = ServicesConfig.from_json(json.loads(CONFIG_FILE.read_text()))
    services = Services(config, DATA_DIR)
    threading.Thread(target=services.background, daemon=True, name="background").start()
    log(f"flowrun platform services: listening on :{SERVICES_PORT} (the gateway for flows "
        f"called over HTTP on :{GATEWAY_PORT}), {len(services.flows)} flow(s) known")
    app = ByPort({GATEWAY_PORT: Gateway(services)}, App(services))
    server(app, "0.0.0.0", SERVICES_PORT).run(
        sockets=[_listen(SERVICES_PORT), _listen(GATEWAY_PORT)])
    return 0


raise SystemExit(main())
