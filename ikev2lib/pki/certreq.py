"""CERTREQ (RFC 7296 3.7): the CA key hashes a peer asks for, ours, and choosing our chain by them.

The Certification Authority field of an X.509 CERTREQ (encoding 4) is "a concatenated list of SHA-1
hashes of the public keys of trusted Certification Authorities ... the SHA-1 hash of the Subject
Public Key Info element". `ca_key_hash` hashes the DER SubjectPublicKeyInfo as `cryptography` encodes
the key (as strongSwan hashes its own encoding); for RSA, EC, Ed25519 and Ed448 keys that is the
certificate's own SubjectPublicKeyInfo.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ..exceptions import LocalProtocolError, ParseError
from ..wire import CertEncoding, CertReq
from .credentials import Credential
from .limits import MAX_CERTREQ_HASHES, MAX_CHAIN_DEPTH
from .parsed import issued_by

__all__ = [
    "CERTREQ_HASH_SIZE",
    "MAX_CERTREQ_HASHES",
    "ca_key_hash",
    "certreq_data",
    "certreq_hashes",
    "chain_ca_hashes",
    "parse_certreq",
    "select_credential",
]

CERTREQ_HASH_SIZE = 20  # SHA-1


def ca_key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the DER SubjectPublicKeyInfo of a CA certificate's key: its CERTREQ entry."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA1())
    digest.update(spki)
    return digest.finalize()


def parse_certreq(data: bytes | memoryview) -> tuple[bytes, ...]:
    """The CA hashes of one X.509 CERTREQ body (the field after the encoding octet), in order and
    without repeats, at most MAX_CERTREQ_HASHES (the rest is not read). An empty body names no CA.
    A length that is not a multiple of 20 is a ParseError."""
    view = memoryview(data)
    extra = len(view) % CERTREQ_HASH_SIZE
    if extra:
        raise ParseError(
            f"CERTREQ certification authority field of {len(view)} octets is not a list of "
            f"{CERTREQ_HASH_SIZE}-octet hashes",
            len(view) - extra,
        )
    count = min(len(view) // CERTREQ_HASH_SIZE, MAX_CERTREQ_HASHES)
    hashes_ = (bytes(view[i * CERTREQ_HASH_SIZE : (i + 1) * CERTREQ_HASH_SIZE]) for i in range(count))
    return tuple(dict.fromkeys(hashes_))


def certreq_hashes(payloads: Iterable[CertReq]) -> tuple[bytes, ...]:
    """The CA hashes of all X.509 CERTREQ payloads of a message, at most MAX_CERTREQ_HASHES in all.
    CERTREQs of other encodings are skipped (RFC 7296 3.7 lets a peer ignore what it does not know)."""
    found: dict[bytes, None] = {}
    for payload in payloads:
        if payload.encoding != CertEncoding.X509_SIGNATURE:
            continue
        for digest in parse_certreq(payload.data):
            if len(found) >= MAX_CERTREQ_HASHES:
                return tuple(found)
            found[digest] = None
    return tuple(found)


def certreq_data(cas: Iterable[x509.Certificate]) -> bytes:
    """Our CERTREQ body: the hashes of the CAs we trust (at most MAX_CERTREQ_HASHES, which is what a
    peer like us reads)."""
    ours = tuple(dict.fromkeys(ca_key_hash(cert) for cert in cas))
    return b"".join(ours[:MAX_CERTREQ_HASHES])




def chain_ca_hashes(credential: Credential, cas: Sequence[x509.Certificate] = ()) -> frozenset[bytes]:
    """Key hashes of the CAs above a credential's certificate: its chain, and further up through the
    CA certificates we hold (`cas`, usually our trust anchors), which a peer is likely to ask for."""
    pool = list(credential.chain) + list(cas)
    found: set[bytes] = set()
    current = credential.certificate
    for _ in range(MAX_CHAIN_DEPTH):
        issuer = next((ca for ca in pool if ca.subject == current.issuer and issued_by(current, ca)), None)
        if issuer is None:
            break
        digest = ca_key_hash(issuer)
        if digest in found:  # a self-signed root, or a loop of cross-certificates
            break
        found.add(digest)
        current = issuer
    return frozenset(found)


def select_credential(
    credentials: Sequence[Credential], requested: Iterable[bytes], cas: Sequence[x509.Certificate] = ()
) -> Credential:
    """The first credential that chains to a CA the peer asked for, else the first one (the peer may
    trust our CA without saying so, or have sent no CERTREQ at all)."""
    if not credentials:
        raise LocalProtocolError("no certificate credential is configured")
    wanted = frozenset(requested)
    if wanted:
        for credential in credentials:
            if wanted & chain_ca_hashes(credential, cas):
                return credential
    return credentials[0]
