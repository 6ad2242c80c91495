"""CERTREQ hashes and chain selection (ikev2lib/pki/certreq.py), RFC 7296 3.7."""

from __future__ import annotations

import hashlib
import time

import pytest
from cryptography.hazmat.primitives import serialization

from ikev2lib.exceptions import LocalProtocolError, ParseError, RemoteProtocolError
from ikev2lib.pki import (
    MAX_CERTREQ_HASHES,
    Credential,
    ca_key_hash,
    certreq_data,
    certreq_hashes,
    chain_ca_hashes,
    parse_certreq,
    select_credential,
)
from ikev2lib.wire import CertEncoding, CertReq, NotifyType

from .certs import OpensslPki, Pki, openssl


def test_ca_key_hash_is_sha1_of_the_subject_public_key_info(pki: Pki) -> None:
    spki = pki.root.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ca_key_hash(pki.root) == hashlib.sha1(spki).digest()
    assert len(ca_key_hash(pki.root)) == 20
    assert ca_key_hash(pki.root) != ca_key_hash(pki.inter)


def test_ca_key_hash_against_openssl(ossl: OpensslPki) -> None:
    """openssl's own SPKI DER of the root (`x509 -pubkey` then `pkey -pubin -outform DER`)."""
    pem = openssl("x509", "-in", "root.pem", "-noout", "-pubkey", cwd=ossl.dir)
    (ossl.dir / "root.pub").write_text(pem)
    openssl("pkey", "-pubin", "-in", "root.pub", "-outform", "DER", "-out", "root.pub.der", cwd=ossl.dir)
    spki = (ossl.dir / "root.pub.der").read_bytes()
    assert ca_key_hash(ossl.cert("root.pem")) == hashlib.sha1(spki).digest()


def test_parse_certreq() -> None:
    hashes = [bytes([i]) * 20 for i in range(3)]
    assert parse_certreq(b"".join(hashes)) == tuple(hashes)
    assert parse_certreq(b"".join(hashes + hashes[:1])) == tuple(hashes)  # repeats dropped, order kept
    assert parse_certreq(b"") == ()
    assert parse_certreq(memoryview(hashes[0])) == (hashes[0],)


@pytest.mark.parametrize("size", [1, 19, 21, 39, 41, 2_000_001])
def test_certreq_length_not_a_multiple_of_20(size: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_certreq(b"\x00" * size)
    assert isinstance(info.value, RemoteProtocolError)
    assert info.value.notify == NotifyType.INVALID_SYNTAX
    assert info.value.offset == size - size % 20


def test_certreq_with_100000_hashes_is_cut_and_cheap() -> None:
    body = b"".join(i.to_bytes(20, "big") for i in range(100_000))
    start = time.perf_counter()
    found = parse_certreq(body)
    elapsed = time.perf_counter() - start
    assert found == tuple(i.to_bytes(20, "big") for i in range(MAX_CERTREQ_HASHES))
    assert elapsed < 0.05  # bounded work: only the first MAX_CERTREQ_HASHES are read


def test_certreq_hashes_across_payloads() -> None:
    one, two = b"\x01" * 20, b"\x02" * 20
    payloads = [
        CertReq(CertEncoding.X509_SIGNATURE, one),
        CertReq(CertEncoding.PGP, b"not hashes at all"),  # other encodings are skipped, not parsed
        CertReq(CertEncoding.X509_SIGNATURE, two + one),
    ]
    assert certreq_hashes(payloads) == (one, two)
    many = [CertReq(CertEncoding.X509_SIGNATURE, b"".join(bytes([p, i]) * 10 for i in range(50))) for p in range(10)]
    assert len(certreq_hashes(many)) == MAX_CERTREQ_HASHES
    with pytest.raises(ParseError):
        certreq_hashes([CertReq(CertEncoding.X509_SIGNATURE, b"\x00" * 30)])


def test_certreq_data_round_trip(pki: Pki, other_pki: Pki) -> None:
    body = certreq_data([pki.root, other_pki.root, pki.root])
    assert parse_certreq(body) == (ca_key_hash(pki.root), ca_key_hash(other_pki.root))


@pytest.fixture(scope="module")
def credentials(pki: Pki, other_pki: Pki) -> tuple[Credential, Credential]:
    return Credential(pki.ee_key, pki.ee, (pki.inter,)), Credential(other_pki.ee_key, other_pki.ee, (other_pki.inter,))


def test_chain_ca_hashes(pki: Pki, credentials: tuple[Credential, Credential]) -> None:
    mine = credentials[0]
    assert chain_ca_hashes(mine) == {ca_key_hash(pki.inter)}
    # through our trust anchors up to the root, which is what a peer usually names
    assert chain_ca_hashes(mine, [pki.root]) == {ca_key_hash(pki.inter), ca_key_hash(pki.root)}


def test_select_credential(pki: Pki, other_pki: Pki, credentials: tuple[Credential, Credential]) -> None:
    first, second = credentials
    cas = [pki.root, other_pki.root]
    assert select_credential(credentials, [ca_key_hash(other_pki.root)], cas) is second
    assert select_credential(credentials, [ca_key_hash(other_pki.inter)]) is second
    assert select_credential(credentials, [b"\x00" * 20, ca_key_hash(pki.root)], cas) is first
    # nothing asked for, or nothing we have: the default (first) credential
    assert select_credential(credentials, [], cas) is first
    assert select_credential(credentials[::-1], [b"\x07" * 20], cas) is second
    # the root is not in the chain and not given as a CA: no way to know it chains there
    assert select_credential(credentials, [ca_key_hash(other_pki.root)]) is first


def test_select_credential_needs_one() -> None:
    with pytest.raises(LocalProtocolError):
        select_credential([], [b"\x00" * 20])
