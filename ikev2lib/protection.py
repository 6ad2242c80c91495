"""Building and opening SK-protected IKE messages (RFC 7296 3.14) on top of the codec and crypto.

The SK payload is always the last (and here the only) outer payload, so the AAD is the 28-octet IKE
header followed by the 4-octet SK generic payload header, both with their final lengths.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from collections.abc import Sequence

from .crypto import SKCipher
from .exceptions import LocalProtocolError, RemoteProtocolError
from .wire import Encrypted, EncryptedFragment, Message, Payload, PayloadType, parse_payloads, serialize_payloads
from .wire.limits import MAX_MESSAGE_SIZE
from .wire.message import FLAG_INITIATOR, FLAG_RESPONSE, HEADER, IKE_MAJOR_VERSION

__all__ = ["protect", "unprotect", "protect_fragments", "open_fragment", "Reassembly", "MAX_FRAGMENTS", "MAX_REASSEMBLED"]

MAX_FRAGMENTS = 64  # fragments of one IKE message we send or reassemble (RFC 7383 allows 65535)
MAX_REASSEMBLED = 65_535  # octets of one reassembled SKF message (RFC 7383)

_HEADER = 28
_SK_HEADER = 4
_SK = int(PayloadType.SK)
_SK_GENERIC = struct.Struct(">BBH")  # next payload (the first inner one), flags, length


def protect(
    cipher: SKCipher,
    *,
    spi_i: bytes,
    spi_r: bytes,
    exchange_type: int,
    message_id: int,
    is_initiator: bool,
    is_response: bool,
    payloads: Sequence[Payload],
) -> bytes:
    """The wire bytes of a message whose payloads travel inside one SK payload."""
    first, plain = serialize_payloads(list(payloads))
    return _seal(cipher, spi_i, spi_r, exchange_type, message_id, is_initiator, is_response, first, plain)


def _seal(
    cipher: SKCipher,
    spi_i: bytes,
    spi_r: bytes,
    exchange_type: int,
    message_id: int,
    is_initiator: bool,
    is_response: bool,
    first: int,
    plain: bytes,
) -> bytes:
    body_len = cipher.body_length(len(plain))
    total = _HEADER + _SK_HEADER + body_len
    if total > MAX_MESSAGE_SIZE or len(spi_i) != 8 or len(spi_r) != 8:
        raise LocalProtocolError("protected message too large or bad SPIs")
    flags = (FLAG_INITIATOR if is_initiator else 0) | (FLAG_RESPONSE if is_response else 0)
    # the header and SK payload header are the AAD, so they are built first, with final lengths
    aad = HEADER.pack(
        spi_i, spi_r, _SK, IKE_MAJOR_VERSION << 4, exchange_type, flags, message_id, total
    ) + _SK_GENERIC.pack(first, 0, _SK_HEADER + body_len)
    body = cipher.encrypt(aad, plain)
    return aad + body


def unprotect(cipher: SKCipher, data: bytes, message: Message) -> list[Payload]:
    """The inner payloads of a parsed protected message. Raises RemoteProtocolError (IntegrityError
    when the ICV does not verify, ParseError for a bad inner chain)."""
    if not message.payloads or not isinstance(message.payloads[-1], Encrypted):
        raise RemoteProtocolError("message is not protected by an SK payload")
    if len(message.payloads) != 1:
        # Unprotected payloads next to SK would be unauthenticated; nothing legitimate sends them.
        raise RemoteProtocolError("unexpected payloads outside the SK payload")
    sk = message.payloads[-1]
    body = sk.data
    aad = bytes(data[: len(data) - len(body)])
    if len(aad) != _HEADER + _SK_HEADER:
        raise RemoteProtocolError("SK payload is not where it should be")
    plain = cipher.decrypt(aad, bytes(body))
    return parse_payloads(int(sk.first_payload_type), plain)


_SKF_HEADER = 8  # generic payload header + Fragment Number + Total Fragments (RFC 7383 2.5)


def protect_fragments(
    cipher: SKCipher,
    *,
    spi_i: bytes,
    spi_r: bytes,
    exchange_type: int,
    message_id: int,
    is_initiator: bool,
    is_response: bool,
    payloads: Sequence[Payload],
    max_message: int,
) -> list[bytes]:
    """The message as one datagram if it fits `max_message` octets, else as SKF fragments
    (RFC 7383 2.5), each protected on its own with AAD = IKE header + SKF header + numbers."""
    first, plain = serialize_payloads(list(payloads))
    overhead = _HEADER + _SK_HEADER + cipher.body_length(0)
    if overhead + len(plain) <= max_message:
        return [_seal(cipher, spi_i, spi_r, exchange_type, message_id, is_initiator, is_response, first, plain)]
    # room for plaintext in one fragment: the body grows by padding up to one block
    room = max_message - _HEADER - _SKF_HEADER - cipher.body_length(0) - 16
    if room < 16:
        raise LocalProtocolError("fragment size too small for this cipher")
    chunks = [plain[i : i + room] for i in range(0, len(plain), room)]
    if len(chunks) > MAX_FRAGMENTS:
        raise LocalProtocolError("message needs too many fragments")
    out = []
    for number, chunk in enumerate(chunks, start=1):
        shell = Message(
            spi_i=spi_i,
            spi_r=spi_r,
            exchange_type=exchange_type,
            message_id=message_id,
            payloads=[
                EncryptedFragment(
                    first_payload_type=first if number == 1 else 0,
                    fragment_number=number,
                    total_fragments=len(chunks),
                    data=bytes(cipher.body_length(len(chunk))),
                )
            ],
            is_initiator=is_initiator,
            is_response=is_response,
        ).serialize()
        aad = shell[: _HEADER + _SKF_HEADER]
        out.append(aad + cipher.encrypt(aad, chunk))
    return out


def open_fragment(cipher: SKCipher, data: bytes, message: Message) -> tuple[int, int, int, bytes]:
    """(fragment number, total, first payload type, plaintext chunk) of one authenticated SKF datagram."""
    if len(message.payloads) != 1 or not isinstance(message.payloads[0], EncryptedFragment):
        raise RemoteProtocolError("unexpected payloads next to the SKF payload")
    fragment = message.payloads[0]
    body = bytes(fragment.data)
    aad = bytes(data[: len(data) - len(body)])
    if len(aad) != _HEADER + _SKF_HEADER:
        raise RemoteProtocolError("SKF payload is not where it should be")
    plain = cipher.decrypt(aad, body)
    return fragment.fragment_number, fragment.total_fragments, int(fragment.first_payload_type), plain


@dataclass(eq=False)
class _Parts:
    total: int
    first: int = 0
    size: int = 0
    chunks: dict[int, bytes] = field(default_factory=dict)


class Reassembly:
    """The SKF fragments (RFC 7383 2.6) of the messages of one IKE SA still being reassembled: at most
    one request and one response at a time, keyed by (is response, message ID)."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[tuple[bool, int], _Parts] = {}

    def add(self, cipher: SKCipher, data: bytes, message: Message, is_response: bool) -> list[Payload] | None:
        """Authenticate one SKF datagram; the inner payloads once the message is complete, else None."""
        number, total, first, plain = open_fragment(cipher, data, message)
        if total > MAX_FRAGMENTS:
            raise RemoteProtocolError(f"message in {total} fragments (limit {MAX_FRAGMENTS})")
        key = (is_response, message.message_id)
        parts = self._parts.get(key)
        if parts is None or parts.total != total:
            # RFC 7383 2.6.2: a retransmission may use a different fragmentation; start over
            self._parts = {k: v for k, v in self._parts.items() if k[0] != is_response}
            parts = self._parts[key] = _Parts(total)
        if number in parts.chunks:
            return None
        parts.size += len(plain)
        if parts.size > MAX_REASSEMBLED:
            del self._parts[key]
            raise RemoteProtocolError("reassembled message too large")
        parts.chunks[number] = plain
        if number == 1:
            parts.first = first
        if len(parts.chunks) < total:
            return None
        del self._parts[key]
        return parse_payloads(parts.first, b"".join(parts.chunks[i] for i in range(1, total + 1)))
