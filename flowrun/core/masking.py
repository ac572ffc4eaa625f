"""Secrets under a step's `config` never reach a terminal, a log or a JSON dump."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

MASK = "***"

# Keys are compared lowercased with '_' and '-' removed, so apiKey, api_key and
# API-KEY are one key.
_SECRET_WORDS = ("password", "passwd", "passphrase", "secret", "token", "credential", "auth",
                 "cookie")
_SECRET_SUFFIXES = ("key", "pwd", "pass")


def is_secret_key(key: str) -> bool:
    k = re.sub(r"[_\-\s]", "", key.lower())
    return any(word in k for word in _SECRET_WORDS) or k.endswith(_SECRET_SUFFIXES)


def mask(value: Any, from_env: Collection[tuple[str | int, ...]] = (),
         at: tuple[str | int, ...] = ()) -> Any:
    """A copy of `value` with every secret-looking key's value replaced by ***, and
    every value that came from a ${VAR} (its place, relative to `value`, is in
    `from_env`): a variable is where people put what they do not write down."""
    if at in from_env:
        return MASK
    if isinstance(value, dict):
        return {k: MASK if is_secret_key(str(k)) else mask(v, from_env, (*at, str(k)))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v, from_env, (*at, i)) for i, v in enumerate(value)]
    return value
