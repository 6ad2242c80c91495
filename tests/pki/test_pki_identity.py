"""Binding the peer's IKE identity to its certificate (ikev2lib/pki/identity.py), directly and
through validate_chain."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from ikev2lib.pki import CertFailure, CertificateError, TrustStore, cert_matches_id, validate_chain
from ikev2lib.wire import IDi, IdType

from .certs import EE_DNS, EE_IPV4, EE_IPV6, EE_MAIL, NOW, Pki, issue, name

V4, V6, FQDN, MAIL, DN = (int(t) for t in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR, IdType.ID_FQDN,
                                           IdType.ID_RFC822_ADDR, IdType.ID_DER_ASN1_DN))

MATCHES = [
    (V4, EE_IPV4.packed),
    (V6, EE_IPV6.packed),
    (FQDN, EE_DNS.encode()),
    (FQDN, EE_DNS.upper().encode()),
    (MAIL, EE_MAIL.encode()),
    (MAIL, b"alice@example.org"),  # domain part is case-insensitive
]
MISMATCHES = [
    (V4, ipaddress.ip_address("192.0.2.11").packed),
    (V4, EE_IPV6.packed),  # IPv6 data under the IPv4 type
    (V4, EE_IPV4.packed + b"\x00"),
    (V6, ipaddress.ip_address("2001:db8::11").packed),
    (V6, ipaddress.IPv6Address("::ffff:192.0.2.10").packed),  # mapped address is a different SAN
    (FQDN, b"other.example.org"),
    (FQDN, b"vpn.example.org."),
    (FQDN, b"example.org"),
    (FQDN, b"vpn.example.org\xff"),
    (FQDN, b""),
    (MAIL, b"Alice@example.org"),  # local part is exact
    (MAIL, b"bob@example.org"),
    (MAIL, b"example.org"),
    (MAIL, b"@example.org"),
    (DN, b"\x30\x00"),
    (DN, b"garbage"),
    (int(IdType.ID_KEY_ID), b"vpn.example.org"),
    (int(IdType.ID_DER_ASN1_GN), b""),
    (int(IdType.ID_NULL), b""),
]


@pytest.mark.parametrize("identity", MATCHES, ids=lambda i: f"{i[0]}:{i[1]!r}")
def test_identity_matches(pki: Pki, store: TrustStore, identity: tuple[int, bytes]) -> None:
    assert cert_matches_id(pki.ee, *identity)
    ee, inter = pki.sent
    assert validate_chain(store, ee, inter, now=NOW, identity=identity).end_entity == pki.ee


@pytest.mark.parametrize("identity", MISMATCHES, ids=lambda i: f"{i[0]}:{i[1]!r}")
def test_identity_mismatch(pki: Pki, store: TrustStore, identity: tuple[int, bytes]) -> None:
    assert not cert_matches_id(pki.ee, *identity)
    ee, inter = pki.sent
    with pytest.raises(CertificateError) as info:
        validate_chain(store, ee, inter, now=NOW, identity=identity)
    assert info.value.reason is CertFailure.IDENTITY_MISMATCH


def test_distinguished_name(pki: Pki, other_pki: Pki) -> None:
    assert cert_matches_id(pki.ee, DN, pki.ee.subject.public_bytes())
    assert not cert_matches_id(pki.ee, DN, pki.inter.subject.public_bytes())
    assert not cert_matches_id(pki.ee, DN, name(EE_DNS, org="someone else").public_bytes())


def test_empty_subject_never_matches_an_empty_dn(pki: Pki) -> None:
    empty = issue(x509.Name([]), pki.ee_key, pki.inter, pki.inter_key, ca=False)
    assert empty.subject.public_bytes() == x509.Name([]).public_bytes()
    assert not cert_matches_id(empty, DN, x509.Name([]).public_bytes())
    assert cert_matches_id(empty, FQDN, EE_DNS.encode())  # its SANs still bind


def test_no_subject_alt_name_binds_only_the_dn(pki: Pki) -> None:
    bare, _ = pki.leaf(san=None)
    assert cert_matches_id(bare, DN, bare.subject.public_bytes())
    # the subject's commonName is "leaf p256"; it is never read for FQDN identities
    assert not cert_matches_id(bare, FQDN, b"leaf p256")
    assert not cert_matches_id(bare, V4, EE_IPV4.packed)


def test_wildcards_in_certificates_are_literal(pki: Pki) -> None:
    wild, _ = pki.leaf(san=x509.SubjectAlternativeName([x509.DNSName("*.example.org")]))
    assert not cert_matches_id(wild, FQDN, b"vpn.example.org")
    assert cert_matches_id(wild, FQDN, b"*.example.org")


@pytest.mark.parametrize("text", [EE_DNS, EE_MAIL, str(EE_IPV4), str(EE_IPV6)])
def test_ids_as_the_codec_builds_them(pki: Pki, text: str) -> None:
    """The (type, data) pairs IDi.from_value makes for configured strings bind as expected."""
    payload = IDi.from_value(text)
    assert cert_matches_id(pki.ee, int(payload.id_type), bytes(payload.data))
