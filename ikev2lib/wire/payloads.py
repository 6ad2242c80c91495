"""The payloads of RFC 7296 section 3 (except SA and TS, in `sa.py` and `ts.py`) and SKF (RFC 7383).

Each class decodes its body with `_parse(buf, start, end, critical)` (offsets are absolute, so errors
name the faulty byte of the datagram) and encodes it with `_body()`; the generic header is the
chain's job (`chain.py`). RESERVED fields are ignored on receipt and sent as zero (RFC 7296 section 3:
"MUST be sent as zero; MUST be ignored on receipt"), so a message round-trips byte-exact whenever its
sender followed that rule; other messages are accepted and re-encoded with zeroed RESERVED fields.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from ikev2lib.wire._base import Payload, check_body, fail, local_fail, name, short_hex
from ikev2lib.wire.enums import (
    AUTH_LOOKUP,
    CERT_LOOKUP,
    CONFIG_ATTR_LOOKUP,
    CONFIG_TYPE_LOOKUP,
    ID_TYPE_LOOKUP,
    KE_LOOKUP,
    NOTIFY_LOOKUP,
    PAYLOAD_LOOKUP,
    PROTOCOL_LOOKUP,
    IdType,
    NotifyType,
    PayloadType,
)
from ikev2lib.wire.limits import (
    MAX_CONFIG_ATTRIBUTES,
    MAX_DELETE_SPIS,
    MAX_NONCE_SIZE,
    MIN_NONCE_SIZE,
)

_KE = struct.Struct(">H2x")  # group, reserved
_TYPE_RESERVED3 = struct.Struct(">B3x")  # ID type / auth method / CFG type, reserved
_NOTIFY = struct.Struct(">BBH")  # protocol ID, SPI size, notify type
_DELETE = struct.Struct(">BBH")  # protocol ID, SPI size, number of SPIs
_SKF = struct.Struct(">HH")  # fragment number, total fragments
_CFG_ATTR = struct.Struct(">HH")  # R + type, length
_EAP_HEADER = struct.Struct(">BBH")  # code, identifier, length (RFC 3748)
_I = TypeVar("_I", bound="_Identification")
_C = TypeVar("_C", bound="_CertLike")


@dataclass(slots=True, repr=False)
class KE(Payload):
    payload_type = PayloadType.KE
    group: int
    data: bytes
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        return f"KE({name(self.group)}, {short_hex(self.data)})"

    def _body(self) -> bytes:
        return check_body(_KE.pack(self.group) + self.data, "KE")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> KE:
        if end - pos < 4:
            fail("truncated KE payload", pos)
        (group,) = _KE.unpack_from(buf, pos)
        return cls(KE_LOOKUP.get(group, group), buf[pos + 4 : end], critical=critical)


@dataclass(slots=True, repr=False)
class _Identification(Payload):
    id_type: int
    data: bytes
    critical: bool = field(default=False, kw_only=True)
    _label: ClassVar[str] = "ID"

    @classmethod
    def from_value(cls: type[_I], value: str) -> _I:
        """ID_IPV4_ADDR/ID_IPV6_ADDR for an address, ID_RFC822_ADDR for user@host, else ID_FQDN."""
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            kind = IdType.ID_RFC822_ADDR if "@" in value else IdType.ID_FQDN
            return cls(kind, value.encode("utf-8"))
        kind = IdType.ID_IPV4_ADDR if addr.version == 4 else IdType.ID_IPV6_ADDR
        return cls(kind, addr.packed)

    def display(self) -> str:
        """The identity as strongSwan prints it (addresses and names as text, others as hex)."""
        if self.id_type in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR) and len(self.data) in (4, 16):
            return str(ipaddress.ip_address(self.data))
        if self.id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
            return self.data.decode("utf-8", "backslashreplace")
        return self.data.hex()

    def __repr__(self) -> str:
        return f"{self._label}({name(self.id_type)}, {self.display()!r})"

    def _body(self) -> bytes:
        return check_body(_TYPE_RESERVED3.pack(self.id_type) + self.data, self._label)

    @classmethod
    def _parse(cls: type[_I], buf: bytes, pos: int, end: int, critical: bool) -> _I:
        if end - pos < 4:
            fail("truncated identification payload", pos)
        kind = buf[pos]
        return cls(ID_TYPE_LOOKUP.get(kind, kind), buf[pos + 4 : end], critical=critical)


@dataclass(slots=True, repr=False)
class IDi(_Identification):
    payload_type = PayloadType.IDi
    _label: ClassVar[str] = "IDi"


@dataclass(slots=True, repr=False)
class IDr(_Identification):
    payload_type = PayloadType.IDr
    _label: ClassVar[str] = "IDr"


@dataclass(slots=True, repr=False)
class _CertLike(Payload):
    encoding: int
    data: bytes
    critical: bool = field(default=False, kw_only=True)
    _label: ClassVar[str] = "CERT"

    def __repr__(self) -> str:
        return f"{self._label}({name(self.encoding)}, {short_hex(self.data)})"

    def _body(self) -> bytes:
        if not 0 <= self.encoding <= 0xFF:
            local_fail(f"certificate encoding {self.encoding} does not fit one octet")
        return check_body(bytes((self.encoding,)) + self.data, self._label)

    @classmethod
    def _parse(cls: type[_C], buf: bytes, pos: int, end: int, critical: bool) -> _C:
        if end - pos < 1:
            fail("truncated certificate payload", pos)
        kind = buf[pos]
        return cls(CERT_LOOKUP.get(kind, kind), buf[pos + 1 : end], critical=critical)


@dataclass(slots=True, repr=False)
class Cert(_CertLike):
    payload_type = PayloadType.CERT
    _label: ClassVar[str] = "CERT"


@dataclass(slots=True, repr=False)
class CertReq(_CertLike):
    payload_type = PayloadType.CERTREQ
    _label: ClassVar[str] = "CERTREQ"


@dataclass(slots=True, repr=False)
class Auth(Payload):
    payload_type = PayloadType.AUTH
    method: int
    data: bytes
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        # Lengths only: AUTH data is derived from the PSK/EAP MSK and travels encrypted.
        return f"Auth({name(self.method)}, {len(self.data)} bytes)"

    def _body(self) -> bytes:
        return check_body(_TYPE_RESERVED3.pack(self.method) + self.data, "AUTH")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> Auth:
        if end - pos < 4:
            fail("truncated AUTH payload", pos)
        method = buf[pos]
        return cls(AUTH_LOOKUP.get(method, method), buf[pos + 4 : end], critical=critical)


@dataclass(slots=True, repr=False)
class Nonce(Payload):
    payload_type = PayloadType.NONCE
    data: bytes
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        # Lengths only: nonces feed the key derivation (RFC 7296 2.14, 2.17) and are kept out of logs.
        return f"Nonce({len(self.data)} bytes)"

    def _body(self) -> bytes:
        return self.data

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> Nonce:
        if not MIN_NONCE_SIZE <= end - pos <= MAX_NONCE_SIZE:
            fail(f"nonce of {end - pos} octets (must be {MIN_NONCE_SIZE}..{MAX_NONCE_SIZE})", pos)
        return cls(buf[pos:end], critical=critical)


@dataclass(slots=True, repr=False)
class Notify(Payload):
    payload_type = PayloadType.NOTIFY
    notify_type: int
    data: bytes = b""
    protocol_id: int = 0
    spi: bytes = b""
    critical: bool = field(default=False, kw_only=True)

    @property
    def is_error(self) -> bool:
        """Error types are 1..16383 (RFC 7296 section 3.10.1)."""
        return self.notify_type < 16384

    def __repr__(self) -> str:
        extra = ""
        if self.protocol_id or self.spi:
            extra += f", protocol={name(self.protocol_id)}, spi={self.spi.hex()}"
        data = f", {short_hex(self.data)}" if self.data else ""
        return f"Notify({name(self.notify_type)}{data}{extra})"

    def _body(self) -> bytes:
        if len(self.spi) > 0xFF:
            local_fail("notify SPI longer than 255 octets")
        return check_body(_NOTIFY.pack(self.protocol_id, len(self.spi), self.notify_type) + self.spi + self.data, "N")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> Notify:
        if end - pos < 4:
            fail("truncated Notify payload", pos)
        protocol, spi_size, kind = _NOTIFY.unpack_from(buf, pos)
        data_start = pos + 4 + spi_size
        if data_start > end:
            fail(f"notify SPI size {spi_size} exceeds the payload", pos)
        return cls(
            NOTIFY_LOOKUP.get(kind, kind),
            buf[data_start:end],
            PROTOCOL_LOOKUP.get(protocol, protocol),
            buf[pos + 4 : data_start],
            critical=critical,
        )

    @classmethod
    def signature_hash_algorithms(cls, algorithms: list[int]) -> Notify:
        """RFC 7427 SIGNATURE_HASH_ALGORITHMS with the given hash algorithm IDs."""
        return cls(NotifyType.SIGNATURE_HASH_ALGORITHMS, b"".join(struct.pack(">H", a) for a in algorithms))

    def hash_algorithms(self) -> list[int]:
        """The 16-bit values of a SIGNATURE_HASH_ALGORITHMS notify (a trailing odd octet is ignored)."""
        data = self.data
        return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)]


@dataclass(slots=True, repr=False)
class Delete(Payload):
    """Delete payload. All SPIs share one size; an IKE SA delete has no SPIs (size 0, count 0).

    A Delete announcing SPIs of size 0, or a non-zero SPI size with no SPIs, is rejected: neither can
    be represented (nor round-trip) and neither has a meaning (RFC 7296 section 3.11).
    """

    payload_type = PayloadType.DELETE
    protocol_id: int
    spis: list[bytes] = field(default_factory=list)
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        return f"Delete({name(self.protocol_id)}, [{', '.join(s.hex() for s in self.spis)}])"

    def _body(self) -> bytes:
        spis = self.spis
        if len(spis) > MAX_DELETE_SPIS:
            local_fail(f"more than {MAX_DELETE_SPIS} SPIs in a Delete payload")
        size = len(spis[0]) if spis else 0
        if any(len(s) != size for s in spis) or (spis and size == 0) or size > 0xFF:
            local_fail("Delete SPIs must all have the same non-zero size")
        return check_body(_DELETE.pack(self.protocol_id, size, len(spis)) + b"".join(spis), "D")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> Delete:
        if end - pos < 4:
            fail("truncated Delete payload", pos)
        protocol, size, count = _DELETE.unpack_from(buf, pos)
        if (size == 0) != (count == 0):
            fail(f"Delete with SPI size {size} and {count} SPIs", pos)
        if count > MAX_DELETE_SPIS:
            fail(f"more than {MAX_DELETE_SPIS} SPIs in a Delete payload", pos)
        start = pos + 4
        if end - start != size * count:
            fail(f"Delete payload length does not match {count} SPIs of {size} octets", pos)
        spis = [buf[i : i + size] for i in range(start, end, size)] if size else []
        return cls(PROTOCOL_LOOKUP.get(protocol, protocol), spis, critical=critical)


@dataclass(slots=True, repr=False)
class VendorID(Payload):
    payload_type = PayloadType.VENDOR_ID
    data: bytes
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        return f"VendorID({short_hex(self.data, 20)})"

    def _body(self) -> bytes:
        return check_body(self.data, "V")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> VendorID:
        return cls(buf[pos:end], critical=critical)


@dataclass(slots=True, repr=False)
class Encrypted(Payload):
    """SK payload. `data` is IV || ciphertext || ICV, opaque here; the crypto layer opens it and
    `parse_payloads(first_payload_type, plaintext)` decodes the inner chain."""

    payload_type = PayloadType.SK
    first_payload_type: int
    data: bytes
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        return f"Encrypted(first={name(self.first_payload_type)}, {len(self.data)} bytes)"

    def _body(self) -> bytes:
        return check_body(self.data, "SK")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool, first: int = 0) -> Encrypted:
        return cls(PAYLOAD_LOOKUP.get(first, first), buf[pos:end], critical=critical)


@dataclass(slots=True, repr=False)
class EncryptedFragment(Payload):
    """SKF payload (RFC 7383 section 2.5). `first_payload_type` is non-zero only in fragment 1."""

    payload_type = PayloadType.SKF
    first_payload_type: int
    fragment_number: int
    total_fragments: int
    data: bytes
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        return (
            f"EncryptedFragment({self.fragment_number}/{self.total_fragments}, "
            f"first={name(self.first_payload_type)}, {len(self.data)} bytes)"
        )

    def _body(self) -> bytes:
        return check_body(_SKF.pack(self.fragment_number, self.total_fragments) + self.data, "SKF")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool, first: int = 0) -> EncryptedFragment:
        if end - pos < 4:
            fail("truncated SKF payload", pos)
        number, total = _SKF.unpack_from(buf, pos)
        # RFC 7383 section 2.5: numbering starts at 1 and never exceeds the total.
        if number == 0 or number > total:
            fail(f"fragment number {number} of {total}", pos)
        return cls(PAYLOAD_LOOKUP.get(first, first), number, total, buf[pos + 4 : end], critical=critical)


@dataclass(slots=True, repr=False)
class ConfigAttribute:
    """A configuration attribute (RFC 7296 section 3.15.1); the R bit is RESERVED and sent as zero."""

    attr_type: int
    value: bytes = b""

    def __repr__(self) -> str:
        value = self.value
        if len(value) in (4, 16) and self.attr_type in (1, 2, 3, 4, 6, 8, 10, 12, 20, 21):
            shown = str(ipaddress.ip_address(value))
        elif len(value) == 17 and self.attr_type in (8, 15):
            shown = f"{ipaddress.ip_address(value[:16])}/{value[16]}"
        else:
            shown = short_hex(value)
        return f"ConfigAttribute({name(self.attr_type)}, {shown!r})"


@dataclass(slots=True, repr=False)
class Configuration(Payload):
    payload_type = PayloadType.CP
    cfg_type: int
    attributes: list[ConfigAttribute] = field(default_factory=list)
    critical: bool = field(default=False, kw_only=True)

    def __repr__(self) -> str:
        return f"Configuration({name(self.cfg_type)}, {self.attributes!r})"

    def _body(self) -> bytes:
        if len(self.attributes) > MAX_CONFIG_ATTRIBUTES:
            local_fail(f"more than {MAX_CONFIG_ATTRIBUTES} configuration attributes")
        parts = [_TYPE_RESERVED3.pack(self.cfg_type)]
        for attr in self.attributes:
            if attr.attr_type > 0x7FFF:
                local_fail(f"configuration attribute type {attr.attr_type} does not fit 15 bits")
            parts.append(_CFG_ATTR.pack(attr.attr_type, len(attr.value)))
            parts.append(attr.value)
        return check_body(b"".join(parts), "CP")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> Configuration:
        if end - pos < 4:
            fail("truncated Configuration payload", pos)
        kind = buf[pos]
        pos += 4
        attrs: list[ConfigAttribute] = []
        while pos < end:
            if len(attrs) >= MAX_CONFIG_ATTRIBUTES:
                fail(f"more than {MAX_CONFIG_ATTRIBUTES} configuration attributes", pos)
            if end - pos < 4:
                fail("truncated configuration attribute", pos)
            atype, length = _CFG_ATTR.unpack_from(buf, pos)
            aend = pos + 4 + length
            if aend > end:
                fail("configuration attribute length exceeds the payload", pos)
            atype &= 0x7FFF
            attrs.append(ConfigAttribute(CONFIG_ATTR_LOOKUP.get(atype, atype), buf[pos + 4 : aend]))
            pos = aend
        return cls(CONFIG_TYPE_LOOKUP.get(kind, kind), attrs, critical=critical)


@dataclass(slots=True, repr=False)
class EAP(Payload):
    """EAP payload: `data` is one whole EAP message (RFC 3748), whose own length must match."""

    payload_type = PayloadType.EAP
    data: bytes
    critical: bool = field(default=False, kw_only=True)

    @property
    def code(self) -> int:
        return self.data[0] if self.data else 0

    def __repr__(self) -> str:
        # Lengths only: EAP methods carry credentials (EAP-GTC sends the password in clear).
        return f"EAP(code={self.code}, {len(self.data)} bytes)"

    def _body(self) -> bytes:
        return check_body(self.data, "EAP")

    @classmethod
    def _parse(cls, buf: bytes, pos: int, end: int, critical: bool) -> EAP:
        if end - pos < 4:
            fail("truncated EAP message", pos)
        _, _, length = _EAP_HEADER.unpack_from(buf, pos)
        if length != end - pos:
            fail(f"EAP length {length} does not match the payload ({end - pos} octets)", pos)
        return cls(buf[pos:end], critical=critical)


@dataclass(slots=True, repr=False)
class UnknownPayload(Payload):
    """A payload type this codec does not decode (non-critical on receipt; kept for round trips)."""

    payload_type: int
    data: bytes = b""
    critical: bool = False

    def __repr__(self) -> str:
        crit = ", critical" if self.critical else ""
        return f"UnknownPayload({name(self.payload_type)}, {short_hex(self.data)}{crit})"

    def _body(self) -> bytes:
        return check_body(self.data, "unknown")
