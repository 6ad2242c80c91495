"""The data of RFC 5685's REDIRECT and REDIRECTED_FROM notifies: a gateway identity, and in a REDIRECT
answering IKE_SA_INIT the initiator's nonce (RFC 5685 8.1, 8.2).

    GW Ident Type (1 octet) | GW Ident Len (1 octet) | New Responder GW Identity | Nonce Data (optional)

Identity types: 1 an IPv4 address (4 octets), 2 an IPv6 address (16), 3 an FQDN (1..255 octets).
`decode` raises ParseError (INVALID_SYNTAX) on anything else; an FQDN must be a plausible DNS name,
so a peer cannot hand our user a string with control characters or spaces to resolve.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from ikev2lib.exceptions import ParseError
from ikev2lib.wire.enums import NotifyType

__all__ = ["GatewayType", "Gateway", "encode", "decode", "MAX_FQDN", "MAX_NONCE"]

MAX_FQDN = 255  # octets of a DNS name
MAX_NONCE = 256  # RFC 7296 3.9: a nonce is 16..256 octets
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class GatewayType(enum.IntEnum):
    IPV4 = 1
    IPV6 = 2
    FQDN = 3


@dataclass(frozen=True, slots=True)
class Gateway:
    """Where a gateway sends its client: an IP address or a DNS name (`kind` says which)."""

    kind: GatewayType
    value: str  # the address as text, or the name

    @classmethod
    def parse(cls, text: str) -> Gateway:
        """An address or a DNS name as an operator writes it (ValueError if it is neither)."""
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            if not _valid_fqdn(text):
                raise ValueError(f"{text!r} is neither an IP address nor a DNS name") from None
            return cls(GatewayType.FQDN, text.rstrip("."))
        return cls(GatewayType.IPV4 if address.version == 4 else GatewayType.IPV6, str(address))

    @property
    def is_address(self) -> bool:
        return self.kind is not GatewayType.FQDN

    def __str__(self) -> str:
        return self.value


def _valid_fqdn(name: str) -> bool:
    name = name.rstrip(".")
    if not name or len(name) > MAX_FQDN - 1:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def encode(gateway: Gateway, nonce: bytes = b"") -> bytes:
    if gateway.kind is GatewayType.FQDN:
        identity = gateway.value.encode("ascii")
    else:
        identity = ipaddress.ip_address(gateway.value).packed
    return bytes((int(gateway.kind), len(identity))) + identity + nonce


def decode(data: bytes) -> tuple[Gateway, bytes]:
    """The gateway and the nonce data (empty when there is none) of a REDIRECT/REDIRECTED_FROM."""
    if len(data) < 2:
        raise ParseError("redirect data shorter than its header", len(data), notify=NotifyType.INVALID_SYNTAX)
    kind, length = data[0], data[1]
    identity, nonce = data[2 : 2 + length], bytes(data[2 + length :])
    if len(identity) != length:
        raise ParseError("redirect gateway identity truncated", len(data), notify=NotifyType.INVALID_SYNTAX)
    if len(nonce) > MAX_NONCE:
        raise ParseError("redirect nonce data too long", 2 + length, notify=NotifyType.INVALID_SYNTAX)
    if kind == GatewayType.IPV4 and length == 4:
        return Gateway(GatewayType.IPV4, str(ipaddress.IPv4Address(identity))), nonce
    if kind == GatewayType.IPV6 and length == 16:
        return Gateway(GatewayType.IPV6, str(ipaddress.IPv6Address(identity))), nonce
    if kind == GatewayType.FQDN:
        try:
            name = identity.decode("ascii")
        except UnicodeDecodeError:
            name = ""
        if _valid_fqdn(name):
            return Gateway(GatewayType.FQDN, name.rstrip(".")), nonce
        raise ParseError("redirect FQDN is not a DNS name", 2, notify=NotifyType.INVALID_SYNTAX)
    raise ParseError(f"redirect gateway identity type {kind} with length {length}", 0, notify=NotifyType.INVALID_SYNTAX)
