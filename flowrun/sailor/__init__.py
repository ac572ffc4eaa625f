"""flowrun's sailor: the agent inside every step container.

It runs inside component images, not on the host, and depends only on the
standard library, pika, cryptography and (for mapper steps) jsonata-python; the
platform services (services.py), which run from the mapper's image, add uvicorn. Imports between
its modules are relative, so it works under whatever package name the image
gives it.
"""

SAILOR_VERSION = "1"
LIVE_MARKER = "flowrun-sailor: live"
# What the platform's Node.js sailor logs once it consumes (its run.js).
NODE_LIVE_MARKER = "Fully initialized and waiting for messages"
STATE_FILE = "/tmp/flowrun-state.json"
# The platform services' container: its state (a volume) and its private config.
SERVICES_DATA_DIR = "/var/lib/flowrun-services"
# Not under /etc/flowrun, which the images make for the steps' user: the services run
# as root without capabilities, and cannot write there.
SERVICES_CONFIG_FILE = "/etc/flowrun-services/services.json"
