"""Secrets under a step's `config` never reach a terminal, a log or a JSON dump."""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# Keys are compared lowercased with '_' and '-' removed, so apiKey, api_key and
# API-KEY are one key.
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "credential", "auth")
_SECRET_SUFFIXES = ("key", "pwd", "pass")


def is_secret_key(key: str) -> bool:
    k = re.sub(r"[_\-\s]", "", key.lower())
    return any(word in k for word in _SECRET_WORDS) or k.endswith(_SECRET_SUFFIXES)


def mask(value: Any) -> Any:
    """A copy of `value` with every secret-looking key's value replaced by ***."""
    if isinstance(value, dict):
        return {k: MASK if is_secret_key(str(k)) else mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value
