"""Certificates with every field the checks read decoded up front.

`cryptography` decodes a certificate lazily: a duplicate extension or an undecodable name surfaces
only when that field is first read. Reading everything here, once, turns every such fault into one
`malformed` failure (or a configuration error for our own anchors) before any check runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, ObjectIdentifier

from .errors import DECODE_ERRORS, CertFailure, CertificateError
from .keys import PublicKey, as_public_key, key_problem
from .limits import MAX_CERT_SIZE

__all__ = ["HANDLED_EXTENSIONS", "LABEL_LIMIT", "ParsedCert", "decode_cert", "issued_by", "parse_der"]

_SIGNATURE_ERRORS = (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError)

# Certificate extensions the checks of trust.py process; any other one marked critical refuses the
# certificate (RFC 5280 4.2), so nameConstraints and policy extensions are refused, not ignored.
HANDLED_EXTENSIONS = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
)
LABEL_LIMIT = 120  # characters of a peer-chosen subject DN quoted in a message
# Signature hashes with practical collision attacks: a CA signature over them proves nothing.
_WEAK_HASHES = (hashes.MD5, hashes.SHA1)


@dataclass(frozen=True, slots=True, eq=False)
class ParsedCert:
    cert: x509.Certificate
    label: str  # role and subject, for messages
    subject: bytes  # DER
    issuer: bytes  # DER
    not_before: datetime
    not_after: datetime
    ca: bool
    path_len: int | None
    key_usage: x509.KeyUsage | None
    eku: frozenset[ObjectIdentifier] | None
    unhandled_critical: tuple[str, ...]  # dotted OIDs
    public_key: PublicKey | None  # None: a key type none of the IKE methods uses
    key_issue: tuple[bool, str] | None  # keys.key_problem of the public key
    weak_hash: bool


def _extension(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def decode_cert(cert: x509.Certificate, role: str) -> ParsedCert:
    """Decode every field read later; raises one of DECODE_ERRORS if the certificate is damaged."""
    subject = cert.subject
    label = f"{role} {subject.rfc4514_string()[:LABEL_LIMIT]!r}"
    extensions = cert.extensions
    basic = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    eku = _extension(cert, x509.ExtendedKeyUsage)
    names = _extension(cert, x509.SubjectAlternativeName)
    if isinstance(names, x509.SubjectAlternativeName):
        list(names)
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        digest = None  # the signature check refuses it
    public_key = cert.public_key()
    return ParsedCert(
        cert=cert,
        label=label,
        subject=subject.public_bytes(),
        issuer=cert.issuer.public_bytes(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        ca=isinstance(basic, x509.BasicConstraints) and basic.ca,
        path_len=basic.path_length if isinstance(basic, x509.BasicConstraints) else None,
        key_usage=usage if isinstance(usage, x509.KeyUsage) else None,
        eku=frozenset(eku) if isinstance(eku, x509.ExtendedKeyUsage) else None,
        unhandled_critical=tuple(
            ext.oid.dotted_string for ext in extensions if ext.critical and ext.oid not in HANDLED_EXTENSIONS
        ),
        public_key=as_public_key(public_key),
        key_issue=key_problem(public_key),
        weak_hash=isinstance(digest, _WEAK_HASHES),
    )


def parse_der(der: bytes, position: int) -> ParsedCert:
    """A peer's certificate (position 0: the end-entity one); CertificateError `too_large` or
    `malformed`, never another exception."""
    role = "end-entity certificate" if position == 0 else f"certificate {position}"
    if len(der) > MAX_CERT_SIZE:
        raise CertificateError(CertFailure.TOO_LARGE, f"{role} of {len(der)} octets exceeds {MAX_CERT_SIZE}")
    try:
        return _decoded(bytes(der), role)
    except DECODE_ERRORS as exc:
        why = f"{role} does not decode as DER X.509 ({exc})"
        raise CertificateError(CertFailure.MALFORMED, why) from None


# Peers present the same certificates at every handshake: decoding is kept for the most recent ones
# (the result depends on the bytes alone; failures are not kept). Bounded, so that a peer sending new
# certificates each time only evicts.
DECODED_CACHE = 1024


@functools.lru_cache(maxsize=DECODED_CACHE)
def _decoded(der: bytes, role: str) -> ParsedCert:
    return decode_cert(x509.load_der_x509_certificate(der), role)


@functools.lru_cache(maxsize=DECODED_CACHE)
def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s key made `cert`'s signature (and the names chain). Certificates hash and
    compare by their DER, so a pair seen before is answered without a signature check."""
    try:
        cert.verify_directly_issued_by(issuer)
    except _SIGNATURE_ERRORS:
        return False
    return True
