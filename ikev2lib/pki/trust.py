"""Validating a peer's certificate chain (RFC 7296 3.6 and 2.15; RFC 5280 section 6, simplified).

Input: the end-entity certificate and intermediates as DER, from CERT payloads of encoding 4 (X.509
Certificate - Signature), the time `now` (a timezone-aware datetime or a UNIX timestamp; this module
never reads the clock), the peer's IKE identity, and a `TrustStore` of configured trust anchors and
CRLs. Output: a `ValidatedChain`, or a `CertificateError` whose `reason` names the failed check.

By hand, on `cryptography` primitives (DER decoding, extension decoding, `verify_directly_issued_by`,
`CertificateRevocationList.is_signature_valid`), in this order:

1. Sizes: at most MAX_CERT_PAYLOADS certificates of at most MAX_CERT_SIZE octets each; anything that
   does not decode (lazily decoded fields included) is `malformed`.
2. Path building: from the end-entity certificate up, each issuer is a trust anchor if one by that
   name signed it, else an unused peer certificate by that name that signed it; at most
   MAX_CHAIN_DEPTH certificates, anchor included. An anchor may be a self-signed root or an
   intermediate CA configured as trusted (as in strongSwan): the path ends at the first anchor.
   A certificate signed with MD5 or SHA-1 is refused before its signature is tried.
3. Every certificate of the path (anchor included) is valid at `now`; every non-anchor key passes
   `keys.key_problem`; a critical extension other than those
   checked here (basicConstraints, keyUsage, extendedKeyUsage, subjectAltName, key identifiers)
   refuses the certificate, so nameConstraints and policies are refused rather than ignored.
4. CAs: basicConstraints cA, keyCertSign if keyUsage is present, pathLenConstraint (self-issued
   intermediates not counted). End entity: digitalSignature or nonRepudiation if keyUsage is present;
   if extendedKeyUsage is present it must hold one of IKE_EKUS.
5. Revocation by CRL, for every certificate below the anchor: the CRLs of its issuer's name that the
   issuer's key signed (cRLSign if the issuer has keyUsage) and that are current at `now` (thisUpdate
   passed, nextUpdate not); a CRL that fails any of that is ignored. A listed serial is `revoked`.
   Revocation.RELAXED (the default, strongSwan's) accepts a certificate no usable CRL covers;
   Revocation.STRICT refuses it (`revocation_unknown`).
6. Identity binding (`identity.py`).

Why not `cryptography.x509.verification`: its policy is the CA/Browser Forum web PKI (no Ed25519 or
Ed448, a SAN required, validity and extension rules of public TLS CAs, no intermediate-as-anchor
configuration), and it has no CRL support. IKE PKIs are private ones, as strongSwan sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ..exceptions import LocalProtocolError
from .errors import CertFailure, CertificateError
from .identity import cert_matches_id
from .keys import PublicKey
from .limits import MAX_CERT_PAYLOADS, MAX_CERT_SIZE, MAX_CHAIN_DEPTH
from .parsed import LABEL_LIMIT, ParsedCert, issued_by, parse_der
from .store import CrlRecord, Revocation, TrustStore

__all__ = [
    "IKE_EKUS",
    "ID_KP_IKE_INTERMEDIATE",
    "ID_KP_IPSEC_IKE",
    "MAX_CERT_PAYLOADS",
    "MAX_CERT_SIZE",
    "MAX_CHAIN_DEPTH",
    "ValidatedChain",
    "to_datetime",
    "validate_chain",
]

ID_KP_IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")  # RFC 4945 5.1.3.12
ID_KP_IKE_INTERMEDIATE = ObjectIdentifier("1.3.6.1.5.5.8.2.2")  # issued by Windows and Apple PKIs
# End-entity extendedKeyUsage purposes accepted for IKE. RFC 4945 wants ipsecIKE or anyExtendedKeyUsage;
# strongSwan also accepts serverAuth and clientAuth (what most CAs issue VPN certificates with), and
# the IKE intermediate purpose is common in Windows PKIs. A certificate whose EKU names none of these
# (codeSigning or emailProtection only) was not issued for IKE.
IKE_EKUS = frozenset(
    {
        ID_KP_IPSEC_IKE,
        ID_KP_IKE_INTERMEDIATE,
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    }
)
# What verify_directly_issued_by and is_signature_valid raise for a signature that does not verify,
# an algorithm they do not run, or a key of the wrong type for the signature.
_SIGNATURE_ERRORS = (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidatedChain:
    """What validation established: the peer's certificate, the key its AUTH payload must verify
    under, and the path (end-entity first, trust anchor last)."""

    end_entity: x509.Certificate
    public_key: PublicKey
    path: tuple[x509.Certificate, ...]

    @property
    def anchor(self) -> x509.Certificate:
        return self.path[-1]


def _fail(reason: CertFailure, message: str) -> CertificateError:
    return CertificateError(reason, message)


def to_datetime(now: datetime | float) -> datetime:
    """`now` as an aware UTC datetime, from an aware datetime or a UNIX timestamp."""
    if isinstance(now, datetime):
        if now.utcoffset() is None:
            raise LocalProtocolError("now must be a timezone-aware datetime (or a UNIX timestamp)")
        return now.astimezone(timezone.utc)
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise LocalProtocolError(f"now must be a datetime or a UNIX timestamp, not {now!r}")
    try:
        return datetime.fromtimestamp(now, timezone.utc)
    except (OverflowError, OSError, ValueError) as exc:
        raise LocalProtocolError(f"UNIX timestamp {now!r} is out of range") from exc


def _signed_by(cert: ParsedCert, issuer: ParsedCert) -> bool:
    return issued_by(cert.cert, issuer.cert)


def _build_path(store: TrustStore, ee: ParsedCert, pool: Sequence[ParsedCert]) -> list[ParsedCert]:
    path = [ee]
    used: set[int] = set()
    current = ee
    while True:
        if len(path) >= MAX_CHAIN_DEPTH:
            raise _fail(CertFailure.PATH_TOO_LONG, f"no anchor within {MAX_CHAIN_DEPTH} certificates")
        if current.weak_hash:  # cryptography 50 verifies no SHA-1 signature: say why, not "bad signature"
            raise _fail(CertFailure.WEAK_ALGORITHM, f"{current.label} is signed with MD5 or SHA-1")
        named = False
        for anchor in store.anchors_named(current.issuer):
            named = True
            if _signed_by(current, anchor):
                path.append(anchor)
                return path
        for index, candidate in enumerate(pool):
            if index in used or candidate.subject != current.issuer:
                continue
            named = True
            if _signed_by(current, candidate):
                used.add(index)
                path.append(candidate)
                current = candidate
                break
        else:
            issuer = current.cert.issuer.rfc4514_string()[:LABEL_LIMIT]
            if named:
                why = f"{current.label}: no key of {issuer!r} verifies its signature"
                raise _fail(CertFailure.BAD_SIGNATURE, why)
            raise _fail(CertFailure.UNTRUSTED, f"{current.label}: issuer {issuer!r} neither trusted nor sent")


def _check_validity(cert: ParsedCert, when: datetime) -> None:
    if when < cert.not_before:
        raise _fail(CertFailure.NOT_YET_VALID, f"{cert.label} is valid from {cert.not_before.isoformat()}")
    if when > cert.not_after:
        raise _fail(CertFailure.EXPIRED, f"{cert.label} expired at {cert.not_after.isoformat()}")


def _check_algorithms(cert: ParsedCert) -> None:
    if cert.key_issue is not None:
        weak, why = cert.key_issue
        reason = CertFailure.WEAK_ALGORITHM if weak else CertFailure.UNSUPPORTED_ALGORITHM
        raise _fail(reason, f"{cert.label}: {why}")


def _check_end_entity(cert: ParsedCert) -> None:
    usage = cert.key_usage
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        why = f"{cert.label}: keyUsage allows neither digitalSignature nor nonRepudiation"
        raise _fail(CertFailure.BAD_KEY_USAGE, why)
    if cert.eku is not None and not cert.eku & IKE_EKUS:
        raise _fail(CertFailure.BAD_KEY_USAGE, f"{cert.label}: extendedKeyUsage has no IKE purpose")


def _check_ca(cert: ParsedCert, below: int) -> None:
    if not cert.ca:
        raise _fail(CertFailure.NOT_A_CA, f"{cert.label} issued a certificate but is not a CA")
    if cert.key_usage is not None and not cert.key_usage.key_cert_sign:
        raise _fail(CertFailure.BAD_KEY_USAGE, f"{cert.label}: keyUsage lacks keyCertSign")
    if cert.path_len is not None and below > cert.path_len:
        raise _fail(
            CertFailure.PATH_LEN_EXCEEDED,
            f"{cert.label}: {below} intermediate CAs below it, pathLenConstraint is {cert.path_len}",
        )


def _check_path(path: Sequence[ParsedCert], when: datetime) -> None:
    below = 0  # non-self-issued intermediate CAs between the end entity and the CA being checked
    for index, cert in enumerate(path):
        _check_validity(cert, when)
        if index == len(path) - 1:
            _check_ca(cert, below)  # the rest was checked at configuration; pathLen depends on the path
            break
        if cert.unhandled_critical:
            raise _fail(
                CertFailure.UNSUPPORTED_CRITICAL_EXTENSION,
                f"{cert.label} has critical extensions not processed: {', '.join(cert.unhandled_critical)}",
            )
        _check_algorithms(cert)
        if index == 0:
            _check_end_entity(cert)
            continue
        _check_ca(cert, below)
        if cert.subject != cert.issuer:
            below += 1


def _crl_usable(record: CrlRecord, issuer: ParsedCert, when: datetime) -> bool:
    if record.last_update > when or (record.next_update is not None and when > record.next_update):
        return False
    if issuer.key_usage is not None and not issuer.key_usage.crl_sign:
        return False
    if issuer.public_key is None:
        return False
    try:
        return record.crl.is_signature_valid(issuer.public_key)
    except _SIGNATURE_ERRORS:
        return False


def _check_revocation(store: TrustStore, path: Sequence[ParsedCert], when: datetime) -> None:
    for cert, issuer in zip(path, path[1:]):
        covered = False
        for record in store.crls_of(cert.issuer):
            if not _crl_usable(record, issuer, when):
                continue
            covered = True
            if cert.cert.serial_number in record.revoked:
                serial = cert.cert.serial_number
                raise _fail(CertFailure.REVOKED, f"{cert.label} (serial {serial:#x}) is revoked")
        if not covered and store.revocation is Revocation.STRICT:
            raise _fail(CertFailure.REVOCATION_UNKNOWN, f"{cert.label}: no current CRL of its issuer")


def validate_chain(
    store: TrustStore,
    end_entity: bytes,
    intermediates: Sequence[bytes] = (),
    *,
    now: datetime | float,
    identity: tuple[int, bytes],
) -> ValidatedChain:
    """Validate a peer's certificates (DER, from its CERT payloads) at `now` against `store`, and bind
    its IKE identity (ID type, identification data) to the end-entity certificate."""
    when = to_datetime(now)
    if 1 + len(intermediates) > MAX_CERT_PAYLOADS:
        count = 1 + len(intermediates)
        raise _fail(CertFailure.TOO_LARGE, f"{count} certificates exceed {MAX_CERT_PAYLOADS}")
    ee = parse_der(end_entity, 0)
    pool = [parse_der(der, index) for index, der in enumerate(intermediates, 1)]
    path = _build_path(store, ee, pool)
    _check_path(path, when)
    _check_revocation(store, path, when)
    id_type, data = identity
    if not cert_matches_id(ee.cert, id_type, data):
        why = f"{ee.label} does not carry the peer's IKE identity (ID type {id_type})"
        raise _fail(CertFailure.IDENTITY_MISMATCH, why)
    if ee.public_key is None:  # _check_algorithms refused every other key type; this narrows it
        raise _fail(CertFailure.UNSUPPORTED_ALGORITHM, f"{ee.label}: unsupported key type")
    return ValidatedChain(end_entity=ee.cert, public_key=ee.public_key, path=tuple(c.cert for c in path))
