"""Payload chains: the registry {payload type: class} and the iterative chain walker.

A chain is a sequence of generic payload headers linked by their Next Payload fields. It is walked
in a loop (never recursively), bounded by MAX_PAYLOADS, and every length is checked against the
buffer. An SK or SKF payload ends the outer chain: its Next Payload field names the first payload
inside the ciphertext, and nothing may follow it (RFC 7296 section 3.14, RFC 7383 section 2.5).
"""

from __future__ import annotations

import struct
from typing import Sequence

from ikev2lib.exceptions import ParseError, UnsupportedCriticalPayload
from ikev2lib.wire._base import CRITICAL_BIT, GENERIC_HEADER, Payload, fail, local_fail
from ikev2lib.wire.limits import MAX_MESSAGE_SIZE, MAX_PAYLOADS
from ikev2lib.wire.payloads import (
    EAP,
    KE,
    Auth,
    Cert,
    CertReq,
    Configuration,
    Delete,
    Encrypted,
    EncryptedFragment,
    IDi,
    IDr,
    Nonce,
    Notify,
    UnknownPayload,
    VendorID,
)
from ikev2lib.wire.sa import SA
from ikev2lib.wire.ts import TSi, TSr

# Payload classes decoded by this codec (everything else becomes UnknownPayload).
PAYLOAD_CLASSES: dict[int, type[Payload]] = {
    int(cls.payload_type): cls
    for cls in (SA, KE, IDi, IDr, Cert, CertReq, Auth, Nonce, Notify, Delete, VendorID, TSi, TSr, Configuration, EAP)
}
_SK = int(Encrypted.payload_type)
_SKF = int(EncryptedFragment.payload_type)


def parse_chain(buf: bytes, pos: int, end: int, next_type: int, outer: bool) -> list[Payload]:
    """Decode the chain in buf[pos:end] starting with `next_type`; offsets in errors are buf offsets.

    `outer` allows SK/SKF (the message level); a decrypted inner chain may not hold them.
    """
    payloads: list[Payload] = []
    append = payloads.append
    classes = PAYLOAD_CLASSES
    unpack = GENERIC_HEADER.unpack_from
    while next_type:
        if len(payloads) >= MAX_PAYLOADS:
            fail(f"more than {MAX_PAYLOADS} payloads", pos)
        if end - pos < 4:
            fail(f"missing payload of type {next_type}", pos)
        following, flags, length = unpack(buf, pos)
        pend = pos + length
        if length < 4 or pend > end:
            fail(f"bad payload length {length}", pos)
        critical = flags >= CRITICAL_BIT
        cls = classes.get(next_type)
        if cls is not None:
            append(cls._parse(buf, pos + 4, pend, critical))
        elif next_type == _SK or next_type == _SKF:
            if not outer:
                fail("encrypted payload inside an encrypted payload", pos)
            if pend != end:
                fail("data after the encrypted payload", pend)
            sk = Encrypted if next_type == _SK else EncryptedFragment
            append(sk._parse(buf, pos + 4, pend, critical, following))
            return payloads
        elif critical:
            raise UnsupportedCriticalPayload(next_type, pos)
        else:
            append(UnknownPayload(next_type, buf[pos + 4 : pend], False))
        pos = pend
        next_type = following
    if pos != end:
        fail("data after the last payload", pos)
    return payloads


def parse_payloads(first_type: int, data: bytes, base_offset: int = 0) -> list[Payload]:
    """Decode a decrypted SK/SKF body (the inner chain). Errors report `base_offset` + position."""
    buf = data if type(data) is bytes else bytes(data)
    if len(buf) > MAX_MESSAGE_SIZE:
        fail(f"payload chain of {len(buf)} octets", base_offset)
    if not base_offset:
        return parse_chain(buf, 0, len(buf), first_type, False)
    try:
        return parse_chain(buf, 0, len(buf), first_type, False)
    except UnsupportedCriticalPayload as exc:
        raise UnsupportedCriticalPayload(exc.payload_type, exc.offset + base_offset) from None
    except ParseError as exc:
        message = str(exc).rsplit(" (at byte ", 1)[0]
        raise ParseError(message, exc.offset + base_offset, notify=exc.notify) from None


def serialize_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """Encode a chain: (type of the first payload, bytes). Lengths and Next Payload are computed."""
    count = len(payloads)
    if count > MAX_PAYLOADS:
        local_fail(f"more than {MAX_PAYLOADS} payloads in one chain")
    parts: list[bytes] = []
    pack = GENERIC_HEADER.pack
    try:
        for i, payload in enumerate(payloads):
            body = payload._body()
            if isinstance(payload, (Encrypted, EncryptedFragment)):
                if i != count - 1:
                    local_fail("an SK/SKF payload must be the last payload of a message")
                following = payload.first_payload_type
            else:
                following = payloads[i + 1].payload_type if i + 1 < count else 0
            parts.append(pack(following, CRITICAL_BIT if payload.critical else 0, len(body) + 4))
            parts.append(body)
    except struct.error as exc:
        local_fail(f"a field value does not fit its wire format: {exc}")
    return (payloads[0].payload_type if payloads else 0), b"".join(parts)
