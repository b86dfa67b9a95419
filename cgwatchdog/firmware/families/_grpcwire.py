"""The Protocol Buffers wire format by hand, for the few messages the Braiins OS gRPC API
needs (no generated code, no .proto files).

A message is a run of fields, each a key (``field number << 3 | wire type``, a varint)
and a value: a varint (wire type 0: ints, bools, enums), 8 or 4 fixed bytes (types 1
and 5: doubles, fixed ints) or a length-prefixed run of bytes (type 2: strings, bytes,
nested messages, each item of a repeated string or message). proto3 leaves out fields
at their default value (``""``, 0, false) unless the field is ``optional``; a reader
keeps the last value of a singular field and skips fields it does not know. Source:
the public encoding guide, https://protobuf.dev/programming-guides/encoding/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

__all__ = [
    "Fields",
    "WireError",
    "decode",
    "field_bool",
    "field_bytes",
    "field_string",
    "field_varint",
    "varint",
]

VARINT: Final = 0
I64: Final = 1
LEN: Final = 2
I32: Final = 5
_MAX_VARINT_BYTES: Final = 10


class WireError(ValueError):
    """Bytes that are not a Protocol Buffers message."""


def varint(value: int) -> bytes:
    """``value`` (0 .. 2**64-1) as a base-128 varint, low group first."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def field_varint(number: int, value: int, *, keep_default: bool = False) -> bytes:
    """An integer or enum field (left out at 0 unless ``keep_default``: proto3
    ``optional``)."""
    if value == 0 and not keep_default:
        return b""
    return _key(number, VARINT) + varint(value)


def field_bool(number: int, value: bool, *, keep_default: bool = False) -> bytes:
    """A bool field: a varint 1 or 0 (left out when false unless ``keep_default``)."""
    return field_varint(number, int(value), keep_default=keep_default)


def field_bytes(number: int, value: bytes, *, keep_default: bool = False) -> bytes:
    """A length-delimited field: bytes, or a nested message already encoded."""
    if not value and not keep_default:
        return b""
    return _key(number, LEN) + varint(len(value)) + value


def field_string(number: int, value: str, *, keep_default: bool = False) -> bytes:
    """A string field, UTF-8."""
    return field_bytes(number, value.encode(), keep_default=keep_default)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= len(data):
            raise WireError("message ends inside a varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos
    raise WireError("varint longer than 10 bytes")


def _read_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type in (I64, I32):
            size = 8 if wire_type == I64 else 4
            value, pos = data[pos : pos + size], pos + size
            if len(value) != size:
                raise WireError("message ends inside a fixed-size field")
        elif wire_type == LEN:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
            if len(value) != size:
                raise WireError("message ends inside a length-delimited field")
        else:
            raise WireError(f"unsupported wire type {wire_type} (field {number})")
        yield number, wire_type, value


class Fields:
    """One decoded message: each field number's values in the order they came."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[int, list[int | bytes]]) -> None:
        self._values = values

    def __contains__(self, number: int) -> bool:
        return number in self._values

    def _last(self, number: int) -> int | bytes | None:
        values = self._values.get(number)
        return values[-1] if values else None

    def integer(self, number: int) -> int:
        """A varint field (0 when absent, proto3's default)."""
        value = self._last(number)
        return value if isinstance(value, int) else 0

    def flag(self, number: int) -> bool:
        """A bool field (false when absent)."""
        return self.integer(number) != 0

    def raw(self, number: int) -> bytes | None:
        """A length-delimited or fixed field's bytes as sent (None when absent)."""
        value = self._last(number)
        return value if isinstance(value, bytes) else None

    def text(self, number: int) -> str:
        """A string field ("" when absent)."""
        value = self.raw(number)
        return "" if value is None else value.decode("utf-8", "replace")

    def texts(self, number: int) -> list[str]:
        """A repeated string field."""
        return [
            v.decode("utf-8", "replace")
            for v in self._values.get(number, ())
            if isinstance(v, bytes)
        ]

    def messages(self, number: int) -> list[Fields]:
        """A repeated (or singular) nested message field, each decoded."""
        return [decode(v) for v in self._values.get(number, ()) if isinstance(v, bytes)]


def decode(data: bytes) -> Fields:
    """The fields of one message; WireError when ``data`` is not one."""
    values: dict[int, list[int | bytes]] = {}
    for number, _wire_type, value in _read_fields(data):
        values.setdefault(number, []).append(value)
    return Fields(values)
