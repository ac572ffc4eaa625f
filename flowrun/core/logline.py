"""Log lines as people read them. The platform's Node.js sailor logs one JSON
object per line (bunyan: `level` 10-60, `msg`, `time`, ids, an `err` object);
flowrun shows its level and message, and the error's message and stack. Other
lines are shown as they are."""

from __future__ import annotations

import json
from typing import Any

LEVELS = {10: "TRACE", 20: "DEBUG", 30: "INFO", 40: "WARN", 50: "ERROR", 60: "FATAL"}


def readable(line: str) -> str:
    """`LEVEL message` for a bunyan JSON line; any other line unchanged. Timestamps
    that Docker puts first (`logs -t`) stay first."""
    stamp, sep, rest = line.partition(" ")
    if sep and stamp[:4].isdigit() and rest.startswith("{"):
        return f"{stamp} {readable(rest)}"
    if not line.startswith("{") or '"msg"' not in line:
        return line
    try:
        record: Any = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "msg" not in record or "level" not in record:
        return line
    number = record.get("level")
    level = LEVELS.get(number, str(number)) if isinstance(number, int) else str(number)
    text = f"{level:<5} {record.get('msg')}"
    err = record.get("err")
    if isinstance(err, dict):
        detail = str(err.get("stack") or err.get("message") or "").rstrip()
        if detail and detail not in text:
            text += "".join(f"\n      {line.strip()}" for line in detail.splitlines())
    return text
