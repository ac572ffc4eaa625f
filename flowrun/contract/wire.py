"""The hosted platform's wire protocol, spoken by every flowrun step and tool.

Read from the platform's Node.js sailor (see shared/PLATFORM.md), so that its
steps and flowrun's mix in one flow in any order:

- A data message is the JSON of `{id, body, headers, attachments, passthrough,
  metadata}`, AES-256-CBC encrypted (key = SHA-256 of the flow's password, IV =
  the 16 bytes of its IV text) and, in protocol version 1, sent as base64 text.
- The AMQP headers carry the lineage: `messageId` (unique per message: the
  platform's sailor drops a second delivery with an id it holds as a duplicate),
  `parentMessageId` (the input's id), `threadId` (the trigger message's id it
  descends from), and `stepId`, `execId`, `protocolVersion`, `start`, `end`.
- An error is plain JSON `{"error": <encrypted {name, message, stack}>,
  "errorInput": <the input as it was received>}` on the error routing key.
- A snapshot is plain JSON on the snapshot routing key, header
  `snapshotEvent`: `snapshot` replaces, `updateSnapshot` merges (shallow).

Standard library and `cryptography` only: this module runs inside step images,
in the platform services and on the host (`flowrun send`, `tail`).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

PROTOCOL_VERSION = 1
# The one kind of header the platform's sailor carries from an input to its outputs
# besides the lineage: a message's own headers travel as these (lowercased names).
META_PREFIX = "x-eio-meta-"
SNAPSHOT_REPLACE = "snapshot"
SNAPSHOT_MERGE = "updateSnapshot"
# Headers that describe one hop; the rest of an input's headers are carried on.
HOP_HEADERS = ("messageId", "parentMessageId", "threadId", "stepId", "execId", "taskId",
               "compId", "function", "start", "end", "protocolVersion", "retry",
               "reboundIteration", "reboundReason", "snapshotEvent", "x-death",
               "x-delivery-count", "x-first-death-exchange", "x-first-death-queue",
               "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
               "x-last-death-reason")


@functools.cache
def _crypto() -> ModuleType:
    """cryptography's ciphers, loaded with the first message rather than at every
    step's start (a fifth of a sailor's boot on two busy cores)."""
    from cryptography.hazmat.primitives import ciphers

    return ciphers


def preload() -> None:
    """Load the ciphers now (a sailor does it in the background once live)."""
    _crypto()
    import hashlib  # noqa: F401  (the key's digest)


class WireError(ValueError):
    """A body that is not the platform's encoding, or not this flow's key."""


def derive(secret: str, purpose: str, flow: str, length: int = 32) -> str:
    """A per-flow value from the host's secret: the same on the host, in the platform
    services and (handed over in the step's private file) in every step."""
    import hashlib
    import hmac

    return hmac.new(secret.encode(), f"{purpose}:{flow}".encode(),
                    hashlib.sha256).hexdigest()[:length]


def api_key(secret: str, flow: str, step: str) -> str:
    """A step's key for the platform services (the platform's ELASTICIO_API_KEY)."""
    return derive(secret, "api-key", f"{flow}/{step}")


def object_token(secret: str, flow: str, step: str) -> str:
    """A step's bearer token for the object store (the platform's
    ELASTICIO_OBJECT_STORAGE_TOKEN): who it is, and the proof."""
    return f"{flow}/{step}/{derive(secret, 'object-storage', f'{flow}/{step}')}"


def admin_token(secret: str) -> str:
    """The host's key for the platform services' admin calls."""
    return derive(secret, "services-admin", "host")


class Keys:
    """A flow's message password and IV (the platform's MESSAGE_CRYPTO_* pair).
    (A plain class, as the sailor's others: dataclasses bring inspect into every
    step's start.)"""

    def __init__(self, password: str, iv: str) -> None:
        self.password = password
        self.iv = iv  # 16 characters

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Keys) and (self.password, self.iv) == (other.password,
                                                                          other.iv)

    def __hash__(self) -> int:
        return hash((self.password, self.iv))

    def __repr__(self) -> str:  # never the values: they are secrets
        return "Keys(...)"

    @classmethod
    def for_flow(cls, secret: str, flow: str) -> Keys:
        return cls(derive(secret, "message-password", flow), derive(secret, "message-iv", flow, 16))

    @functools.cached_property
    def _key(self) -> bytes:
        import hashlib

        return hashlib.sha256(self.password.encode()).digest()

    @functools.cached_property
    def _aes(self) -> Cipher[modes.CBC]:
        """Made once per key: each message only takes a new encryptor or decryptor
        from it (the cipher's construction was a third of a message's encryption)."""
        ciphers = _crypto()
        cipher: Cipher[modes.CBC] = ciphers.Cipher(ciphers.algorithms.AES(self._key),
                                                   ciphers.modes.CBC(self.iv.encode()[:16]))
        return cipher

    def encrypt(self, value: Any) -> bytes:
        """Protocol version 1: base64 text of the ciphertext of the JSON, PKCS#7-padded
        to AES's 16-byte blocks."""
        return base64.b64encode(self.seal(json.dumps(value, default=str).encode()))

    def seal(self, plain: bytes) -> bytes:
        """The raw ciphertext of any bytes (PKCS#7-padded): how the object store keeps
        an object, and the body of a protocol-2 message."""
        pad = 16 - len(plain) % 16
        enc = self._aes.encryptor()
        return enc.update(plain + bytes((pad,)) * pad) + enc.finalize()

    def unseal(self, cipher_text: bytes) -> bytes:
        """The reverse of seal; WireError when it is not this key's."""
        try:
            dec = self._aes.decryptor()
            padded = dec.update(cipher_text) + dec.finalize()
        except ValueError as e:
            raise WireError(f"not sealed with this flow's key ({e})") from None
        pad = padded[-1] if padded else 0
        if not 1 <= pad <= 16 or padded[-pad:] != bytes((pad,)) * pad:
            raise WireError("not sealed with this flow's key (padding)")
        return padded[:-pad]

    def decrypt(self, data: bytes | str, protocol_version: int = PROTOCOL_VERSION) -> Any:
        raw = data.encode() if isinstance(data, str) else data
        if not raw:
            return None
        try:
            cipher_text = base64.b64decode(raw, validate=True) if protocol_version < 2 else raw
            dec = self._aes.decryptor()
            padded = dec.update(cipher_text) + dec.finalize()
            pad = padded[-1] if padded else 0
            if not 1 <= pad <= 16 or padded[-pad:] != bytes((pad,)) * pad:
                raise ValueError("Invalid padding bytes.")
            return json.loads(padded[:-pad])
        except (ValueError, TypeError) as e:
            raise WireError(f"not a message of this flow ({type(e).__name__}: {e})") from None


def new_id() -> str:
    """A random (version 4) UUID's text, as `str(uuid.uuid4())` makes it: without the
    uuid module, which (with platform, which it loads) was a twentieth of a sailor's
    start, and in less than half its time (two per output)."""
    b = bytearray(os.urandom(16))
    b[6] = b[6] & 0x0F | 0x40  # version 4
    b[8] = b[8] & 0x3F | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def protocol_of(headers: dict[str, Any] | None) -> int:
    try:
        return int((headers or {}).get("protocolVersion") or PROTOCOL_VERSION)
    except (TypeError, ValueError):
        return PROTOCOL_VERSION


def decode_data(keys: Keys, body: bytes, headers: dict[str, Any] | None) -> dict[str, Any]:
    """An incoming data message as a function sees it (`msg`)."""
    msg = keys.decrypt(body, protocol_of(headers))
    if not isinstance(msg, dict):
        msg = {"body": msg}
    msg.setdefault("body", {})
    msg.setdefault("headers", {})
    msg.setdefault("passthrough", {})
    msg.setdefault("attachments", {})
    return msg


def outgoing_headers(parent: dict[str, Any] | None, step: str, flow: str,
                     message_id: str | None = None, **extra: Any) -> dict[str, Any]:
    """The AMQP headers of one output: a new `messageId` for every message (two
    outputs of one input are two messages, not a duplicate), the input's id as
    `parentMessageId`, its thread carried on (or begun here)."""
    parent = parent or {}
    # Scalars only, and no floats: AMQP field tables (pika) have no float type.
    headers: dict[str, Any] = {k: v for k, v in parent.items() if k not in HOP_HEADERS
                               and not (k.startswith("x-") and not k.startswith(META_PREFIX))
                               and isinstance(v, str | int | bool)}
    message_id = message_id or new_id()
    headers.update({
        "messageId": message_id,
        # A message with no thread yet (a trigger's output) begins its own.
        "threadId": parent.get("threadId") or message_id,
        "stepId": step,
        "execId": parent.get("execId") or flow,
        "taskId": flow,
        "protocolVersion": PROTOCOL_VERSION,
        "end": now_ms(),
    })
    if parent.get("messageId"):
        headers["parentMessageId"] = parent["messageId"]
    headers.update(extra)
    return headers


def meta_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A message's own headers as AMQP headers every sailor carries on (`seq` ->
    `x-eio-meta-seq`); a float becomes its text (AMQP tables have no floats)."""
    out: dict[str, Any] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bool | int | str):
            out[META_PREFIX + str(key).lower()] = value
        elif isinstance(value, float):
            out[META_PREFIX + str(key).lower()] = repr(value)
    return out


def unmeta(headers: dict[str, Any] | None) -> dict[str, Any]:
    """The reverse of meta_headers, for people and tests reading a message."""
    return {k[len(META_PREFIX):]: v for k, v in (headers or {}).items()
            if k.startswith(META_PREFIX)}


def data_message(body: Any, headers: dict[str, Any] | None = None,
                 passthrough: dict[str, Any] | None = None,
                 attachments: dict[str, Any] | None = None, id: str | None = None,
                 ) -> dict[str, Any]:
    return {"id": id or new_id(), "body": body, "headers": headers or {},
            "attachments": attachments or {}, "passthrough": passthrough or {},
            "metadata": {}}


def error_payload(keys: Keys, name: str, message: str, stack: str,
                  error_input: bytes | None) -> bytes:
    """The platform's error message; `error_input` is the input as it was received."""
    payload: dict[str, Any] = {
        "error": keys.encrypt({"name": name, "message": message, "stack": stack}).decode()}
    if error_input is not None:
        payload["errorInput"] = error_input.decode("utf-8", "replace")
    return json.dumps(payload).encode()


def decode_error(keys: Keys, body: bytes) -> dict[str, Any]:
    """An error message for people: `{name, message, stack, input}` (input decrypted
    when it can be)."""
    try:
        raw = json.loads(body)
    except ValueError:
        return {"name": "Error", "message": body.decode("utf-8", "replace"), "stack": ""}
    if not isinstance(raw, dict):
        return {"name": "Error", "message": str(raw), "stack": ""}
    error: Any = raw.get("error")
    if isinstance(error, str):
        try:
            error = keys.decrypt(error)
        except WireError:
            error = {"message": error}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    out = {"name": str(error.get("name") or "Error"), "message": str(error.get("message") or ""),
           "stack": str(error.get("stack") or "")}
    error_input = raw.get("errorInput")
    if isinstance(error_input, str):
        try:
            out["input"] = keys.decrypt(error_input)
        except WireError:
            out["input"] = error_input
    return out


def merge_snapshot(current: Any, event: str | None, value: Any) -> Any:
    """What a step's snapshot is after one snapshot message."""
    if event == SNAPSHOT_MERGE and isinstance(current, dict) and isinstance(value, dict):
        return {**current, **value}
    return value
