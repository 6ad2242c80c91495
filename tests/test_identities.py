"""Configured identity strings (strongSwan's notation) to ID payloads, and matching peers' IDs."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.identities import dn_from_text, id_matches, id_text, own_id, parse_identity
from ikev2lib.wire import IDi, IDr, IdType


@pytest.mark.parametrize(
    "text, id_type, data",
    [
        ("192.0.2.1", IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
        ("2001:db8::1", IdType.ID_IPV6_ADDR, bytes.fromhex("20010db8" + "00" * 11 + "01")),
        ("gw.example.org", IdType.ID_FQDN, b"gw.example.org"),
        ("alice@example.org", IdType.ID_RFC822_ADDR, b"alice@example.org"),
        ("@192.0.2.1", IdType.ID_FQDN, b"192.0.2.1"),  # "@" keeps it a name
        ("@#0a0B", IdType.ID_KEY_ID, b"\x0a\x0b"),
    ],
)
def test_identity_notation(text: str, id_type: int, data: bytes) -> None:
    assert parse_identity(text) == (id_type, data)


def test_distinguished_names_in_der_order() -> None:
    name = dn_from_text("C=CH, O=strongSwan Project, CN=moon.strongswan.org")
    assert [a.oid for a in name] == [NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME]
    assert dn_from_text("/C=CH/O=strongSwan Project/CN=moon.strongswan.org") == name
    id_type, data = parse_identity("C=CH, O=strongSwan Project, CN=moon.strongswan.org")
    assert id_type == IdType.ID_DER_ASN1_DN and data == name.public_bytes()


@pytest.mark.parametrize("text", ["", "XX=1", "CN=", "C=Switzerland, CN=x", "@#zz", "CN=a, junk"])
def test_bad_identities_name_the_problem(text: str) -> None:
    with pytest.raises(LocalProtocolError):
        parse_identity(text)


def test_dn_matching_goes_through_the_certificate_subject() -> None:
    from cryptography.x509.name import _ASN1Type

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw", _ASN1Type.PrintableString)])

    class FakeCert:  # only `subject` is read
        pass

    cert = FakeCert()
    cert.subject = subject  # type: ignore[attr-defined]
    payload = IDr(IdType.ID_DER_ASN1_DN, subject.public_bytes())
    assert not id_matches(payload, "CN=gw")  # different string type: the DER differs
    assert id_matches(payload, "CN=gw", cert)  # type: ignore[arg-type]
    assert not id_matches(payload, "CN=other", cert)  # type: ignore[arg-type]
    assert own_id(IDi, "CN=gw", cert).data == subject.public_bytes()  # type: ignore[arg-type]
    assert id_text(payload, cert) == "CN=gw"  # type: ignore[arg-type]


@given(st.text(max_size=80))
def test_any_string_is_an_identity_or_a_local_error(text: str) -> None:
    try:
        id_type, data = parse_identity(text)
    except LocalProtocolError:
        return
    assert isinstance(data, bytes) and 0 < id_type < 256
