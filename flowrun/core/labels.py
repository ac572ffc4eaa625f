"""Every Docker label flowrun reads or writes. Docker itself is the record of what runs."""

from __future__ import annotations

PREFIX = "io.flowrun"
FLOW = f"{PREFIX}.flow"
STEP = f"{PREFIX}.step"
REVISION = f"{PREFIX}.revision"
CONFIG_HASH = f"{PREFIX}.config-hash"
KIND = f"{PREFIX}.kind"
INDEX = f"{PREFIX}.index"
COMPONENT = f"{PREFIX}.component"
FUNCTION = f"{PREFIX}.function"
SOURCE = f"{PREFIX}.source"
ROLE = f"{PREFIX}.role"
RUNTIME = f"{PREFIX}.runtime"  # python | node: which sailor runs the step
STEPS = f"{PREFIX}.steps"  # on the flow's record: its real steps, as JSON

ROLE_BROKER = "broker"
ROLE_SERVICES = "services"
ROLE_STEP = "step"
ROLE_RECORD = "record"
ROLE_HOOK = "hook"  # a one-shot run of a step's shutdown hook

