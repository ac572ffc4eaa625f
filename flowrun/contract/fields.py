"""AMQP 0-9-1 field tables and a message's properties, as the sailor reads and writes them.

Decoded as pika decodes them (a long string that is UTF-8 becomes `str`, others stay
`bytes`; table keys are `str`), so that a header means the same to the sailor as to the
host and the platform services, which use pika. One difference, a bug of pika's:
floats (`d`, `f`: the platform's Node.js sailor sends a JSON number that is not an
integer as a double) decode as floats, where pika truncates them to integers.
"""

from __future__ import annotations

from struct import Struct
from typing import Any

_B, _b, _H, _h = Struct(">B"), Struct(">b"), Struct(">H"), Struct(">h")
_I, _i, _Q, _q = Struct(">I"), Struct(">i"), Struct(">Q"), Struct(">q")
_f, _d = Struct(">f"), Struct(">d")


class FieldError(ValueError):
    """A table this codec cannot read or write."""


# ------------------------------------------------------------ decoding

def decode_table(data: bytes, offset: int) -> tuple[dict[str, Any], int]:
    size = _I.unpack_from(data, offset)[0]
    offset += 4
    end = offset + size
    if end > len(data):
        raise FieldError("a field table runs past its frame")
    table: dict[str, Any] = {}
    while offset < end:
        key, offset = _short_string(data, offset)
        table[key], offset = _decode_value(data, offset)
    return table, offset


def _short_string(data: bytes, offset: int) -> tuple[Any, int]:
    """A length octet, then the bytes: `str` when they are UTF-8, else `bytes`."""
    end = offset + 1 + data[offset]
    raw = data[offset + 1:end]
    try:
        return raw.decode(), end
    except UnicodeDecodeError:
        return bytes(raw), end


def _decode_value(data: bytes, offset: int) -> tuple[Any, int]:
    kind = data[offset]
    offset += 1
    if kind == 0x53:  # S: long string
        length = _I.unpack_from(data, offset)[0]
        offset += 4
        raw = data[offset:offset + length]
        try:
            return raw.decode(), offset + length
        except UnicodeDecodeError:
            return bytes(raw), offset + length
    if kind == 0x46:  # F: table
        return decode_table(data, offset)
    if kind == 0x6C or kind == 0x4C:  # l, L: 64-bit integer
        return _q.unpack_from(data, offset)[0], offset + 8
    if kind == 0x49:  # I: 32-bit integer
        return _i.unpack_from(data, offset)[0], offset + 4
    if kind == 0x74:  # t: boolean
        return data[offset] != 0, offset + 1
    if kind == 0x41:  # A: array
        length = _I.unpack_from(data, offset)[0]
        offset += 4
        end = offset + length
        values = []
        while offset < end:
            value, offset = _decode_value(data, offset)
            values.append(value)
        return values, offset
    if kind == 0x56:  # V: void
        return None, offset
    if kind == 0x78:  # x: byte array
        length = _I.unpack_from(data, offset)[0]
        offset += 4
        return bytes(data[offset:offset + length]), offset + length
    if kind == 0x64:  # d: double
        return _d.unpack_from(data, offset)[0], offset + 8
    if kind == 0x66:  # f: float
        return _f.unpack_from(data, offset)[0], offset + 4
    if kind == 0x62:  # b: signed octet
        return _b.unpack_from(data, offset)[0], offset + 1
    if kind == 0x42:  # B: unsigned octet
        return data[offset], offset + 1
    if kind == 0x73 or kind == 0x55:  # s, U: signed short (RabbitMQ's reading of 's')
        return _h.unpack_from(data, offset)[0], offset + 2
    if kind == 0x75:  # u: unsigned short
        return _H.unpack_from(data, offset)[0], offset + 2
    if kind == 0x69:  # i: unsigned 32-bit integer
        return _I.unpack_from(data, offset)[0], offset + 4
    # Timestamps and decimals are rare in a flow's headers: their modules are loaded
    # when one comes, not at every step's start.
    if kind == 0x54:  # T: timestamp
        from datetime import UTC, datetime

        return datetime.fromtimestamp(_Q.unpack_from(data, offset)[0], UTC), offset + 8
    if kind == 0x44:  # D: decimal
        import decimal

        places = data[offset]
        raw = _i.unpack_from(data, offset + 1)[0]
        return decimal.Decimal(raw) * (decimal.Decimal(10) ** -places), offset + 5
    raise FieldError(f"unknown field type {chr(kind)!r}")


# ------------------------------------------------------------ encoding

def encode_table(out: bytearray, table: dict[Any, Any]) -> None:
    at = len(out)
    out += b"\0\0\0\0"
    for key, value in table.items():
        raw_key = key.encode() if isinstance(key, str) else bytes(key)
        if len(raw_key) > 255:
            raise FieldError(f"a table key longer than 255 bytes: {raw_key[:40]!r}...")
        out.append(len(raw_key))
        out += raw_key
        _encode_value(out, value)
    out[at:at + 4] = _I.pack(len(out) - at - 4)


def _encode_value(out: bytearray, value: Any) -> None:
    # The same types pika writes for the same values (bool before int: it is one).
    if isinstance(value, str):
        raw = value.encode()
        out += b"S" + _I.pack(len(raw)) + raw
    elif isinstance(value, bytes | bytearray):
        out += b"x" + _I.pack(len(value)) + value
    elif isinstance(value, bool):
        out += b"t\x01" if value else b"t\x00"
    elif isinstance(value, int):
        if -2**31 <= value < 2**31:
            out += b"I" + _i.pack(value)
        elif -2**63 <= value < 2**63:
            out += b"l" + _q.pack(value)
        else:
            raise FieldError(f"an integer too large for a field table: {value}")
    elif isinstance(value, dict):
        out += b"F"
        encode_table(out, value)
    elif isinstance(value, list | tuple):
        out += b"A"
        at = len(out)
        out += b"\0\0\0\0"
        for item in value:
            _encode_value(out, item)
        out[at:at + 4] = _I.pack(len(out) - at - 4)
    elif value is None:
        out += b"V"
    elif isinstance(value, float):
        out += b"d" + _d.pack(value)
    else:
        _encode_rare(out, value)


def _encode_rare(out: bytearray, value: Any) -> None:
    import calendar
    import decimal
    from datetime import datetime

    if isinstance(value, decimal.Decimal):
        exponent = int(value.normalize().as_tuple().exponent)
        places = max(0, -exponent)
        out += b"D" + bytes([places]) + _i.pack(int(value * (decimal.Decimal(10) ** places)))
    elif isinstance(value, datetime):
        out += b"T" + _Q.pack(calendar.timegm(value.utctimetuple()))
    else:
        raise FieldError(f"a value of type {type(value).__name__} cannot go in a field table")


# ------------------------------------------------------------ properties

# Basic's content properties, in the order of their flag bits (bit 15 first).
_SHORT, _TABLE, _OCTET, _LONGLONG = "shortstr", "table", "octet", "longlong"
PROPERTIES = (("content_type", _SHORT), ("content_encoding", _SHORT), ("headers", _TABLE),
              ("delivery_mode", _OCTET), ("priority", _OCTET), ("correlation_id", _SHORT),
              ("reply_to", _SHORT), ("expiration", _SHORT), ("message_id", _SHORT),
              ("timestamp", _LONGLONG), ("type", _SHORT), ("user_id", _SHORT),
              ("app_id", _SHORT), ("cluster_id", _SHORT))


class Properties:
    """A message's properties under pika's names (`BasicProperties`), so that code
    written against either reads them the same way."""

    __slots__ = tuple(name for name, _kind in PROPERTIES)

    def __init__(self, **given: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, given.pop(name, None))
        if given:
            raise TypeError(f"unknown message properties: {', '.join(given)}")

    def __repr__(self) -> str:
        shown = {n: getattr(self, n) for n in self.__slots__ if getattr(self, n) is not None}
        return f"Properties({shown})"

    def encode(self, out: bytearray) -> None:
        at = len(out)
        out += b"\0\0"
        flags = 0
        for bit, (name, kind) in enumerate(PROPERTIES):
            value = getattr(self, name)
            if value is None:
                continue
            flags |= 1 << (15 - bit)
            if kind == _SHORT:
                raw = value.encode() if isinstance(value, str) else bytes(value)
                if len(raw) > 255:
                    raise FieldError(f"property {name} longer than 255 bytes")
                out.append(len(raw))
                out += raw
            elif kind == _TABLE:
                encode_table(out, value)
            elif kind == _OCTET:
                out.append(int(value))
            else:
                out += _Q.pack(int(value))
        out[at:at + 2] = _H.pack(flags)

    @classmethod
    def decode(cls, data: bytes, offset: int) -> Properties:
        flags = _H.unpack_from(data, offset)[0]
        offset += 2
        if flags & 1:
            raise FieldError("more than 15 message properties")
        props = cls()
        for bit, (name, kind) in enumerate(PROPERTIES):
            if not flags & (1 << (15 - bit)):
                continue
            value: Any
            if kind == _SHORT:
                value, offset = _short_string(data, offset)
            elif kind == _TABLE:
                value, offset = decode_table(data, offset)
            elif kind == _OCTET:
                value = data[offset]
                offset += 1
            else:
                value = _Q.unpack_from(data, offset)[0]
                offset += 8
            setattr(props, name, value)
        return props
