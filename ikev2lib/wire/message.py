"""The IKE message: the 28-octet header (RFC 7296 section 3.1) and its payload chain.

Version check: a major version other than 2 raises `InvalidMajorVersion` (a ParseError whose notify is
INVALID_MAJOR_VERSION, RFC 7296 section 2.5) before any payload is read; `Message.parse_header` does not
check it, so a responder can still read the SPIs to answer. The minor version is kept as received
(RFC 7296: receivers ignore it) so that it round-trips.

Length check: the header's Length field must equal the size of the datagram (or RFC 8229 frame);
trailing bytes are an error rather than silently dropped.

Flags: `is_initiator` (I, 0x08) and `is_response` (R, 0x20) are decoded; every other bit, the Version
bit (0x10) included, is kept as received in `flags_extra`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from ikev2lib.exceptions import InvalidMajorVersion
from ikev2lib.wire._base import Payload, fail, local_fail, name
from ikev2lib.wire.chain import parse_chain, serialize_payloads
from ikev2lib.wire.enums import EXCHANGE_LOOKUP, PAYLOAD_LOOKUP
from ikev2lib.wire.limits import MAX_MESSAGE_SIZE
from ikev2lib.wire.payloads import Notify

HEADER = struct.Struct(">8s8sBBBBII")
HEADER_SIZE = HEADER.size  # 28
FLAG_INITIATOR = 0x08
FLAG_VERSION = 0x10
FLAG_RESPONSE = 0x20
IKE_MAJOR_VERSION = 2
_ROLE_FLAGS = FLAG_INITIATOR | FLAG_RESPONSE
_P = TypeVar("_P", bound=Payload)


class Header(NamedTuple):
    """The fixed IKE header, decoded without looking at the payloads (for demultiplexing by SPI).
    Immutable; a NamedTuple because every datagram builds one (several times cheaper than a frozen
    dataclass)."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    major_version: int
    minor_version: int
    exchange_type: int
    flags: int
    message_id: int
    length: int

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)


_new_header = tuple.__new__  # NamedTuple construction without the Python-level __new__


@dataclass(slots=True, repr=False)
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange_type: int
    message_id: int
    payloads: list[Payload] = field(default_factory=list)
    is_initiator: bool = True
    is_response: bool = False
    major_version: int = IKE_MAJOR_VERSION
    minor_version: int = 0
    flags_extra: int = 0

    @staticmethod
    def parse_header(data: bytes) -> Header:
        """Decode only the 28 fixed octets. Raises ParseError if there are fewer."""
        if len(data) < HEADER_SIZE:
            fail(f"{len(data)} octets is shorter than the IKE header", len(data))
        spi_i, spi_r, first, version, exchange, flags, message_id, length = HEADER.unpack_from(data, 0)
        return _new_header(
            Header,
            (
                spi_i,
                spi_r,
                PAYLOAD_LOOKUP.get(first, first),
                version >> 4,
                version & 0x0F,
                EXCHANGE_LOOKUP.get(exchange, exchange),
                flags,
                message_id,
                length,
            ),
        )

    @classmethod
    def parse(cls, data: bytes) -> Message:
        """Decode a whole IKE message. Raises only ParseError (and its subclasses)."""
        buf = data if type(data) is bytes else bytes(data)
        size = len(buf)
        if size < HEADER_SIZE:
            fail(f"{size} octets is shorter than the IKE header", size)
        spi_i, spi_r, first, version, exchange, flags, message_id, length = HEADER.unpack_from(buf, 0)
        major = version >> 4
        if major != IKE_MAJOR_VERSION:
            raise InvalidMajorVersion(major, 17)
        if length != size:
            fail(f"header length {length} does not match the message size {size}", 24)
        if size > MAX_MESSAGE_SIZE:
            fail(f"message of {size} octets exceeds {MAX_MESSAGE_SIZE}", 24)
        payloads = parse_chain(buf, HEADER_SIZE, size, first, True)
        return cls(
            spi_i,
            spi_r,
            EXCHANGE_LOOKUP.get(exchange, exchange),
            message_id,
            payloads,
            bool(flags & FLAG_INITIATOR),
            bool(flags & FLAG_RESPONSE),
            major,
            version & 0x0F,
            flags & ~_ROLE_FLAGS,
        )

    def serialize(self) -> bytes:
        """Encode the message; Length and every Next Payload field are computed."""
        if len(self.spi_i) != 8 or len(self.spi_r) != 8:
            local_fail("IKE SPIs are 8 octets")
        first, chain = serialize_payloads(self.payloads)
        total = HEADER_SIZE + len(chain)
        if total > MAX_MESSAGE_SIZE:
            local_fail(f"message of {total} octets exceeds {MAX_MESSAGE_SIZE}")
        if not (0 <= self.major_version <= 0x0F and 0 <= self.minor_version <= 0x0F):
            local_fail("IKE version numbers are 4 bits")
        flags = self.flags_extra & ~_ROLE_FLAGS
        if self.is_initiator:
            flags |= FLAG_INITIATOR
        if self.is_response:
            flags |= FLAG_RESPONSE
        try:
            header = HEADER.pack(
                self.spi_i,
                self.spi_r,
                first,
                (self.major_version << 4) | self.minor_version,
                self.exchange_type,
                flags,
                self.message_id,
                total,
            )
        except struct.error as exc:
            local_fail(f"a header field does not fit its wire format: {exc}")
        return header + chain

    # Convenience accessors for the engine.
    def find(self, kind: type[_P]) -> _P | None:
        """The first payload of class `kind`, or None."""
        for payload in self.payloads:
            if isinstance(payload, kind):
                return payload
        return None

    def find_all(self, kind: type[_P]) -> list[_P]:
        return [p for p in self.payloads if isinstance(p, kind)]

    def notify(self, notify_type: int) -> Notify | None:
        """The first Notify of `notify_type`, or None."""
        for payload in self.payloads:
            if isinstance(payload, Notify) and payload.notify_type == notify_type:
                return payload
        return None

    def __repr__(self) -> str:
        role = ("I" if self.is_initiator else "") + ("R" if self.is_response else "")
        return (
            f"Message({name(self.exchange_type)} {'response' if self.is_response else 'request'} "
            f"id={self.message_id} flags={role or '-'} spi_i={self.spi_i.hex()} spi_r={self.spi_r.hex()}, "
            f"{self.payloads!r})"
        )

    def pretty(self) -> str:
        """A readable multi-line tree: header, then one block per payload."""
        role = "initiator" if self.is_initiator else "responder"
        kind = "response" if self.is_response else "request"
        lines = [
            f"IKEv{self.major_version}.{self.minor_version} {name(self.exchange_type)} {kind} from {role}, "
            f"message ID {self.message_id}",
            f"  SPIi {self.spi_i.hex()}  SPIr {self.spi_r.hex()}"
            + (f"  extra flags 0x{self.flags_extra:02x}" if self.flags_extra else ""),
        ]
        for payload in self.payloads:
            block = payload.pretty_lines()
            crit = " [critical]" if payload.critical else ""
            lines.append(f"  {block[0]}{crit}")
            lines.extend(f"  {line}" for line in block[1:])
        return "\n".join(lines)
