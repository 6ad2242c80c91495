"""The trust configuration: anchors (self-signed roots, or CA certificates trusted as such, as in
strongSwan) and CRLs, checked once when the store is built (a LocalProtocolError names what cannot
serve), and kept indexed by DER subject / issuer name for validation (trust.py)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from cryptography import x509
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID

from ..exceptions import LocalProtocolError
from .credentials import load_certificate_dir, load_crl_dir
from .errors import DECODE_ERRORS
from .parsed import ParsedCert, decode_cert

__all__ = ["CrlRecord", "Revocation", "TrustStore"]

# CRL and CRL entry extensions understood here. A critical other one (delta CRL indicator, issuing
# distribution point, the certificate issuer of an indirect CRL) changes which certificates the CRL
# covers; such CRLs are refused at configuration rather than misread.
_CRL_HANDLED = frozenset(
    {
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        CRLEntryExtensionOID.CRL_REASON,
        CRLEntryExtensionOID.INVALIDITY_DATE,
    }
)


class Revocation(Enum):
    RELAXED = "relaxed"  # refuse only what a usable CRL lists (strongSwan's default)
    STRICT = "strict"  # also refuse a certificate that no usable CRL covers


@dataclass(frozen=True, slots=True, eq=False)
class CrlRecord:
    crl: x509.CertificateRevocationList
    last_update: datetime
    next_update: datetime | None
    revoked: frozenset[int]  # serial numbers


def _crl_record(crl: x509.CertificateRevocationList) -> CrlRecord:
    try:
        label = f"CRL of {crl.issuer.rfc4514_string()!r}"
        extensions = [crl.extensions]
        revoked = []
        for entry in crl:
            revoked.append(entry.serial_number)
            extensions.append(entry.extensions)
        record = CrlRecord(crl, crl.last_update_utc, crl.next_update_utc, frozenset(revoked))
    except DECODE_ERRORS as exc:
        raise LocalProtocolError(f"a CRL does not decode ({exc})") from exc
    unhandled = {
        e.oid.dotted_string for group in extensions for e in group if e.critical and e.oid not in _CRL_HANDLED
    }
    if unhandled:
        raise LocalProtocolError(f"{label} has unsupported critical extensions {sorted(unhandled)}")
    return record


def _anchor(cert: x509.Certificate) -> ParsedCert:
    try:
        anchor = decode_cert(cert, "trust anchor")
    except DECODE_ERRORS as exc:
        raise LocalProtocolError(f"a trust anchor does not decode ({exc})") from exc
    if anchor.key_issue is not None:
        raise LocalProtocolError(f"{anchor.label}: {anchor.key_issue[1]}")
    if not anchor.ca:
        raise LocalProtocolError(f"{anchor.label} is not a CA certificate (basicConstraints cA)")
    if anchor.key_usage is not None and not anchor.key_usage.key_cert_sign:
        raise LocalProtocolError(f"{anchor.label} has keyUsage without keyCertSign")
    if anchor.unhandled_critical:
        unhandled = ", ".join(anchor.unhandled_critical)
        raise LocalProtocolError(f"{anchor.label}: unsupported critical extensions {unhandled}")
    return anchor


class TrustStore:
    """Configured trust anchors and CRLs. `revocation` says what a certificate no usable CRL covers
    gets: accepted (RELAXED) or refused (STRICT)."""

    __slots__ = ("_anchors", "_crls", "revocation")

    def __init__(
        self,
        anchors: Iterable[x509.Certificate],
        crls: Iterable[x509.CertificateRevocationList] = (),
        *,
        revocation: Revocation = Revocation.RELAXED,
    ) -> None:
        self._anchors: dict[bytes, list[ParsedCert]] = {}
        self._crls: dict[bytes, list[CrlRecord]] = {}
        self.revocation = revocation
        for cert in anchors:
            anchor = _anchor(cert)
            self._anchors.setdefault(anchor.subject, []).append(anchor)
        for crl in crls:
            record = _crl_record(crl)
            self._crls.setdefault(crl.issuer.public_bytes(), []).append(record)

    @classmethod
    def from_directories(
        cls,
        ca_dir: str | os.PathLike[str],
        crl_dir: str | os.PathLike[str] | None = None,
        *,
        revocation: Revocation = Revocation.RELAXED,
    ) -> TrustStore:
        """Anchors from every file of `ca_dir` (swanctl's `x509ca/`), CRLs from `crl_dir` (`x509crl/`)."""
        crls = load_crl_dir(crl_dir) if crl_dir is not None else ()
        return cls(load_certificate_dir(ca_dir), crls, revocation=revocation)

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return tuple(anchor.cert for group in self._anchors.values() for anchor in group)

    def anchors_named(self, subject: bytes) -> tuple[ParsedCert, ...]:
        """The anchors whose DER subject is `subject`."""
        return tuple(self._anchors.get(subject, ()))

    def crls_of(self, issuer: bytes) -> tuple[CrlRecord, ...]:
        """The CRLs whose DER issuer name is `issuer` (not yet checked for signature or currency)."""
        return tuple(self._crls.get(issuer, ()))

    def __repr__(self) -> str:
        crls = sum(len(group) for group in self._crls.values())
        return f"TrustStore(anchors={len(self.anchors)}, crls={crls}, revocation={self.revocation.value})"
