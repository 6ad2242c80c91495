"""A test PKI valid around the real current time (strongSwan checks certificates against its own
clock), written out as a swanctl directory expects it: `x509ca/` (trust anchors), `x509/` (our
certificate and intermediates), `private/` (PKCS#8 keys), `x509crl/`.

Certificates come from `cryptography` (tests/pki/certs.py builds them); the other side of every
interop test, strongSwan, parses and checks them independently.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ikev2lib.pki import Credential, PrivateKey, TrustStore

from pki.certs import KeyPool, issue, make_crl, name

UTC = dt.timezone.utc
VALIDITY = dt.timedelta(days=30)
_KEYS = KeyPool(rsa_count=1)  # for its other key types, which it makes fresh each time


def _new_key(kind: str) -> PrivateKey:
    """A fresh key: never one a CA of the PKI holds too. (A leaf with its issuer's key makes
    strongSwan take the leaf for the issuer when it builds its own chain, and not send the real one.)"""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _KEYS.new(kind)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class InteropPki:
    """root CA -> intermediate CA -> leaves, every key of `kind` (p256, rsa, ed25519, ...)."""

    kind: str
    root: x509.Certificate
    root_key: PrivateKey
    inter: x509.Certificate
    inter_key: PrivateKey

    def leaf(self, dns: str, *, kind: str | None = None, start: dt.timedelta = -VALIDITY,
             end: dt.timedelta = VALIDITY) -> Credential:
        """An end-entity credential for FQDN `dns` (its only subjectAltName), valid from now+start to now+end."""
        key = _new_key(kind or self.kind)
        now = dt.datetime.now(UTC)
        cert = issue(name(dns), key, self.inter, self.inter_key, ca=False,
                     san=x509.SubjectAlternativeName([x509.DNSName(dns)]),
                     not_before=now + start, not_after=now + end)
        return Credential(key, cert, (self.inter,))

    def crl(self, *revoked: Credential) -> x509.CertificateRevocationList:
        now = dt.datetime.now(UTC)
        return make_crl(self.inter, self.inter_key, [c.certificate.serial_number for c in revoked],
                        last_update=now - dt.timedelta(hours=1), next_update=now + dt.timedelta(days=7))

    def trust(self, *crls: x509.CertificateRevocationList) -> TrustStore:
        return TrustStore([self.root], crls)


def build_pki(kind: str, tag: str = "") -> InteropPki:
    now = dt.datetime.now(UTC)
    root_key, inter_key = _new_key(kind), _new_key(kind)
    root = issue(name(f"Interop Root {kind}{tag}"), root_key, None, root_key, ca=True,
                 not_before=now - VALIDITY, not_after=now + 10 * VALIDITY)
    inter = issue(name(f"Interop Intermediate {kind}{tag}"), inter_key, root, root_key, ca=True, path_len=0,
                  not_before=now - VALIDITY, not_after=now + 10 * VALIDITY)
    return InteropPki(kind, root, root_key, inter, inter_key)


def write_swanctl_credentials(swanctl_dir: Path, own: Credential, anchors: list[x509.Certificate],
                              crls: list[x509.CertificateRevocationList] = (), *, stem: str = "own") -> str:
    """Our credential and the trust anchors into a swanctl directory; returns the certificate's file
    name for `local.certs`. Intermediates go to `x509/` (sent with our certificate, not trusted)."""
    for sub in ("x509", "x509ca", "private", "x509crl"):
        (swanctl_dir / sub).mkdir(parents=True, exist_ok=True)
    (swanctl_dir / "x509" / f"{stem}.pem").write_bytes(pem(own.certificate))
    for i, cert in enumerate(own.chain):
        (swanctl_dir / "x509" / f"{stem}-chain-{i}.pem").write_bytes(pem(cert))
    (swanctl_dir / "private" / f"{stem}.pem").write_bytes(key_pem(own.key))
    for i, cert in enumerate(anchors):
        (swanctl_dir / "x509ca" / f"anchor-{i}.pem").write_bytes(pem(cert))
    for i, crl in enumerate(crls):
        (swanctl_dir / "x509crl" / f"crl-{i}.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return f"{stem}.pem"
