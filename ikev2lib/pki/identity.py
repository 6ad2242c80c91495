"""Binding an IKE identity to an end-entity certificate (RFC 7296 3.5 and 2.15, RFC 4945 3.1).

The peer's IDi/IDr (as (ID type, identification data), see `identities.py`) must be in its certificate:

- ID_IPV4_ADDR / ID_IPV6_ADDR: an iPAddress subjectAltName equal to the 4 or 16 octets.
- ID_FQDN: a dNSName subjectAltName, compared case-insensitively (ASCII, DNS rules). Wildcards in the
  certificate are not expanded: an IKE identity names one host.
- ID_RFC822_ADDR: an rfc822Name subjectAltName; the domain part is case-insensitive, the local part
  exact (RFC 5280 7.5).
- ID_DER_ASN1_DN: the subject DN, compared as DER (the encoding of the certificate's subject). An empty
  DN never matches.

The subject's commonName is never used for the other types (RFC 4945 3.1.2 leaves that to local
policy; strongSwan does not either). Other ID types (KEY_ID, DER_ASN1_GN, FC_NAME, NULL) cannot be
bound to a certificate and never match.
"""

from __future__ import annotations

import ipaddress

from cryptography import x509

from ..wire.enums import IdType

__all__ = ["cert_matches_id"]

_ADDRESS_SIZES = {int(IdType.ID_IPV4_ADDR): 4, int(IdType.ID_IPV6_ADDR): 16}


def _alt_names(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _ascii(data: bytes) -> str | None:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        return None


def _mail_key(address: str) -> tuple[str, str] | None:
    """(local part, lower-case domain) of a mailbox, None for anything else (a bare domain)."""
    local, _, domain = address.rpartition("@")
    return (local, domain.lower()) if local and domain else None


def cert_matches_id(cert: x509.Certificate, id_type: int, data: bytes) -> bool:
    """Whether the certificate carries the IKE identity (id_type, data). The certificate must have
    been parsed (its extensions decode); trust.py does that before it asks."""
    if id_type == IdType.ID_DER_ASN1_DN:
        subject = cert.subject
        return len(subject) > 0 and subject.public_bytes() == bytes(data)
    names = _alt_names(cert)
    if names is None:
        return False
    if id_type in _ADDRESS_SIZES:
        if len(data) != _ADDRESS_SIZES[id_type]:
            return False
        address = ipaddress.ip_address(bytes(data))
        return address in names.get_values_for_type(x509.IPAddress)
    text = _ascii(bytes(data))
    if not text:
        return False
    if id_type == IdType.ID_FQDN:
        wanted = text.lower()
        return any(name.lower() == wanted for name in names.get_values_for_type(x509.DNSName))
    if id_type == IdType.ID_RFC822_ADDR:
        mail = _mail_key(text)
        return mail is not None and any(
            _mail_key(name) == mail for name in names.get_values_for_type(x509.RFC822Name)
        )
    return False
