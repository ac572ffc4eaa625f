"""Every Docker label flowrun reads or writes. Docker itself is the record of what runs."""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "io.flowrun"
FLOW = f"{PREFIX}.flow"
STEP = f"{PREFIX}.step"
REVISION = f"{PREFIX}.revision"
CONFIG_HASH = f"{PREFIX}.config-hash"
KIND = f"{PREFIX}.kind"
INDEX = f"{PREFIX}.index"
REPLICA = f"{PREFIX}.replica"  # 1..replicas; absent (older containers) means 1
COMPONENT = f"{PREFIX}.component"
FUNCTION = f"{PREFIX}.function"
SOURCE = f"{PREFIX}.source"
ROLE = f"{PREFIX}.role"
RUNTIME = f"{PREFIX}.runtime"  # python | node: which sailor runs the step
STEPS = f"{PREFIX}.steps"  # on the flow's record: its real steps, as JSON
WEBHOOK = f"{PREFIX}.webhook"  # on the flow's record: "1" for a flow called over HTTP

ROLE_BROKER = "broker"
ROLE_SERVICES = "services"
ROLE_STEP = "step"
ROLE_RECORD = "record"
ROLE_HOOK = "hook"  # a one-shot run of a step's shutdown hook
ROLE_EXEC = "exec"  # a one-shot run of a step's function (`flowrun exec`)



def replica_of(container_labels: Mapping[str, str]) -> int:
    """A container's replica number (1 when unlabelled or unreadable)."""
    value = container_labels.get(REPLICA)
    try:
        return max(int(value), 1) if value is not None else 1
    except ValueError:
        return 1
