"""What a test case expects of a message, compared as people mean it.

`contains(expected, actual)`: structure, not text. A mapping contains another
when each of its keys is there with a value that contains the expected one; a
list contains another when each expected item is contained by a different item,
in order; anything else is equal. (Benthos's `json_contains`, and the subset
people mean when they write a part of a message.) `diff` shows what differs.
"""

from __future__ import annotations

import difflib
import json
from typing import Any


def contains(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and contains(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        at = 0
        for item in expected:
            while at < len(actual) and not contains(item, actual[at]):
                at += 1
            if at == len(actual):
                return False
            at += 1
        return True
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return bool(expected == actual)


def equals(expected: Any, actual: Any) -> bool:
    """Equal as JSON (1 and 1.0 alike; true and 1 not)."""
    return contains(expected, actual) and contains(actual, expected) if isinstance(
        expected, dict | list) else contains(expected, actual)


def holds(predicate: str, body: Any) -> bool:
    """A JSONata predicate on a body: true when it yields a truthy value."""
    import jsonata

    try:
        return bool(jsonata.Jsonata(predicate).evaluate(body))
    except Exception:  # jsonata's own errors: the predicate does not hold
        return False


def check_jsonata(predicate: str) -> str | None:
    """Why `predicate` is not JSONata (None: it is)."""
    import jsonata

    try:
        jsonata.Jsonata(predicate)
    except Exception as e:  # jsonata raises its own JException
        return str(e)
    return None


def diff(expected: Any, actual: Any, label: str = "came out") -> str:
    """A unified diff of the two as indented JSON (keys sorted)."""
    def text(value: Any) -> list[str]:
        return json.dumps(value, indent=2, sort_keys=True, default=str,
                          ensure_ascii=False).splitlines()

    return "\n".join(difflib.unified_diff(text(expected), text(actual), "expected", label,
                                          lineterm="", n=3))
