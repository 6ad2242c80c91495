"""Identities as IKE carries them (RFC 7296 3.5): configured strings against IDi/IDr payloads.

A configured identity is written as strongSwan writes it:

- an IP address: ID_IPV4_ADDR / ID_IPV6_ADDR;
- a distinguished name, any string with "=" ("C=CH, O=Example, CN=gw.example.org", RDNs in DER
  order, separated by "," or "/"): ID_DER_ASN1_DN;
- "user@host": ID_RFC822_ADDR; "@name": ID_FQDN "name" (the "@" keeps a name that looks like an
  address or a mail address an FQDN); "@#hex": ID_KEY_ID; anything else: ID_FQDN.

Distinguished names are compared by attribute type and value, not by encoding: a peer's certificate
may hold PrintableString where our string says UTF8String (that is what `cryptography.x509.Name`
equality does). Without a certificate, a DN identity is compared as the DER this module makes.
"""

from __future__ import annotations

import functools
import ipaddress
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from .exceptions import LocalProtocolError
from .wire import IDi, IDr, IdType

__all__ = ["dn_from_text", "dn_text", "id_body", "id_matches", "id_text", "own_id", "parse_identity"]

IDENTITY_CACHE = 1024  # configured identity strings kept parsed

# strongSwan's DN attribute keywords (identification.c's x501rdns), the ones X.509 PKIs use
DN_KEYWORDS: dict[str, x509.ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "SN": NameOID.SURNAME,
    "G": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
}
_KEYWORD_OF = {oid: keyword for keyword, oid in reversed(DN_KEYWORDS.items())}
_RDN_SEPARATOR = re.compile(r"\s*[,/]\s*")


def dn_from_text(text: str) -> x509.Name:
    """A distinguished name from strongSwan's notation (RDNs in DER order, "," or "/" between them)."""
    attributes = []
    for part in _RDN_SEPARATOR.split(text.strip().lstrip("/")):
        keyword, equals, value = part.partition("=")
        oid = DN_KEYWORDS.get(keyword.strip().upper())
        if not equals or oid is None or not value.strip():
            raise LocalProtocolError(f"identity {text!r}: {part!r} is not a KEYWORD=value attribute we know")
        try:
            attributes.append(x509.NameAttribute(oid, value.strip()))
        except ValueError as exc:  # e.g. a country name that is not two letters
            raise LocalProtocolError(f"identity {text!r}: {exc}") from exc
    return x509.Name(attributes)


def dn_text(name: x509.Name) -> str:
    """A name in strongSwan's notation (DER order, ", " between attributes)."""
    parts = []
    for attribute in name:
        keyword = _KEYWORD_OF.get(attribute.oid, attribute.oid.dotted_string)
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        parts.append(f"{keyword}={value}")
    return ", ".join(parts)


def parse_identity(text: str) -> tuple[int, bytes]:
    """(ID type, identification data) of a configured identity string; LocalProtocolError if unusable."""
    if not text:
        raise LocalProtocolError("an identity must not be empty")
    if "=" in text:
        return int(IdType.ID_DER_ASN1_DN), dn_from_text(text).public_bytes()
    if text.startswith("@#"):
        try:
            return int(IdType.ID_KEY_ID), bytes.fromhex(text[2:])
        except ValueError as exc:
            raise LocalProtocolError(f"identity {text!r}: the key ID after '@#' is not hex") from exc
    if text.startswith("@"):
        return int(IdType.ID_FQDN), text[1:].encode("utf-8")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        kind = IdType.ID_RFC822_ADDR if "@" in text else IdType.ID_FQDN
        return int(kind), text.encode("utf-8")
    kind = IdType.ID_IPV4_ADDR if address.version == 4 else IdType.ID_IPV6_ADDR
    return int(kind), address.packed


@functools.lru_cache(maxsize=IDENTITY_CACHE)
def _parsed(text: str) -> tuple[int, bytes, x509.Name | None]:
    id_type, data = parse_identity(text)
    name = dn_from_text(text) if id_type == IdType.ID_DER_ASN1_DN else None
    return id_type, data, name


def id_body(payload: IDi | IDr) -> bytes:
    """"RestOfInitIDPayload" (RFC 7296 2.15): ID type, three reserved octets, identification data."""
    return bytes((int(payload.id_type), 0, 0, 0)) + bytes(payload.data)


def id_matches(payload: IDi | IDr, expected: str, certificate: x509.Certificate | None = None) -> bool:
    """Whether the peer's ID payload is the configured identity `expected`. `certificate`: the peer's
    validated end-entity certificate, whose subject an ID_DER_ASN1_DN payload was already bound to; it
    lets a DN compare by attribute values rather than by encoding."""
    id_type, data, name = _parsed(expected)
    if int(payload.id_type) != id_type:
        return False
    if name is not None and certificate is not None and certificate.subject.public_bytes() == bytes(payload.data):
        return certificate.subject == name
    return bytes(payload.data) == data


def own_id(kind: type[IDi] | type[IDr], text: str, certificate: x509.Certificate | None = None) -> IDi | IDr:
    """Our ID payload for a configured identity. A DN equal to our certificate's subject is sent in the
    certificate's own encoding, so that the peer finds it byte for byte in the certificate."""
    id_type, data, name = _parsed(text)
    if name is not None and certificate is not None and certificate.subject == name:
        data = certificate.subject.public_bytes()
    return kind(id_type, data)


def id_text(payload: IDi | IDr, certificate: x509.Certificate | None = None) -> str:
    """The peer's identity as strongSwan prints it (a DN through the certificate that carries it)."""
    if payload.id_type == IdType.ID_DER_ASN1_DN and certificate is not None:
        if certificate.subject.public_bytes() == bytes(payload.data):
            return dn_text(certificate.subject)
    return payload.display()
