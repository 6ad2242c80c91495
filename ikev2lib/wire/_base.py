"""Shared pieces of the codec: the payload base class, precompiled structs, error helpers."""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NoReturn

from ikev2lib.exceptions import LocalProtocolError, ParseError

# Generic payload header (RFC 7296 section 3.2): next payload, C + reserved, payload length.
GENERIC_HEADER = struct.Struct(">BBH")
CRITICAL_BIT = 0x80


def fail(message: str, offset: int, notify: int | None = None) -> NoReturn:
    """Raise the codec's only receive-side error."""
    raise ParseError(message, offset, notify=notify)


def local_fail(message: str) -> NoReturn:
    raise LocalProtocolError(message)


def check_body(body: bytes, what: str) -> bytes:
    """Serialize-side length check: a body must fit the 16-bit payload length."""
    if len(body) > 65535 - 4:
        local_fail(f"{what} body is {len(body)} bytes, more than a payload can carry")
    return body


def name(value: int) -> str:
    """`NAME` for an enum member, the number for an unknown value (for reprs)."""
    if isinstance(value, IntEnum):
        return value.name
    return str(value)


def short_hex(data: bytes, limit: int = 16) -> str:
    if len(data) <= limit:
        return data.hex()
    return f"{data[:limit].hex()}...({len(data)} bytes)"


class Payload:
    """Base of every payload. Subclasses set `payload_type` and implement `_parse`/`_body`.

    `critical` is the C bit of the generic header; it is kept on known payloads (RFC 7296 says a
    receiver ignores it there) so that a message round-trips byte-exact.
    """

    __slots__ = ()
    payload_type: int
    critical: bool

    def _body(self) -> bytes:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> Payload:  # pragma: no cover
        """Decode the body buf[pos:end] (bounds already checked against the buffer)."""
        raise NotImplementedError

    def pretty_lines(self) -> list[str]:
        """A readable description, one line per element (used by `Message.pretty`)."""
        return [repr(self)]
