"""The contract between flowrun's three programs: the host (the CLI and its
supervisor), the sailor inside every Python step, and the platform services.

Each of them imports this package and nothing of the others. What crosses a
process boundary lives here, once: the wire format (`wire`), every name given to
a broker object or a container (`names`), the services' per-flow spec and config
(`spec`), the private files a container receives at its start (`files`), and the
ports, paths and markers below. It depends on the standard library alone
(`wire` loads cryptography on first use), so the sailor's start pays nothing for it.
Its modules import each other relatively: inside images the package is
`flowrun.contract` as on the host.
"""

# What a Python sailor prints once it consumes, and what the platform's Node.js
# sailor logs then (its run.js): the host reads liveness from either.
LIVE_MARKER = "flowrun-sailor: live"
NODE_LIVE_MARKER = "Fully initialized and waiting for messages"
# Where a Python sailor keeps its counters, for `status` to read.
STATE_FILE = "/tmp/flowrun-state.json"

# Inside every step container: the step's secrets (broker URI, platform services key,
# the flow's message keys), mode 0400, owned by the step's user.
STEP_FILE = "/etc/flowrun/step.json"
# The same secrets as shell assignments, for the platform's Node.js sailor, which
# reads them from its environment: its launcher sources this file, so they are in
# the process's environment only (readable by the step's uid), never in Docker's
# container config (`docker inspect`) or on a command line.
STEP_ENV_FILE = "/etc/flowrun/step.env"

# The platform services: the port they serve on (steps reach it as
# names.SERVICES_ALIAS; the host on a port published on loopback), their state (a
# volume) and their private config. Not under /etc/flowrun, which the images make
# for the steps' user: the services run as root without capabilities.
SERVICES_PORT = 9090
SERVICES_DATA_DIR = "/var/lib/flowrun-services"
SERVICES_CONFIG_FILE = "/etc/flowrun-services/services.json"
# The platform services' HTTP gateway for flows called over HTTP (`/hook/<flow>`):
# its port inside the services' container (the host publishes it on loopback), and
# the most a request may bring.
GATEWAY_PORT = 9091
GATEWAY_MAX_BODY = 10 * 1024 * 1024
# The broker's management API (the host's: vhosts, users, counters).
BROKER_MANAGEMENT_PORT = 15672
