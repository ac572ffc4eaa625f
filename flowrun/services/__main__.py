"""`python3 -m flowrun.services`: the platform services' container's program."""

from __future__ import annotations

import json
import threading

from ..contract import SERVICES_PORT, files
from ..contract.spec import ServicesConfig
from .http import server
from .state import CONFIG_FILE, DATA_DIR, Services, log


def main() -> int:
    files.receive(str(CONFIG_FILE))  # on one host, sent on standard input at the first start
    config = ServicesConfig.from_json(json.loads(CONFIG_FILE.read_text()))
    services = Services(config, DATA_DIR)
    threading.Thread(target=services.background, daemon=True, name="background").start()
    log(f"flowrun platform services: listening on :{SERVICES_PORT}, "
        f"{len(services.flows)} flow(s) known")
    server(services, "0.0.0.0", SERVICES_PORT).run()
    return 0


raise SystemExit(main())
