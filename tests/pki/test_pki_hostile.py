"""Hostile bytes: whatever a peer puts in CERT and CERTREQ payloads, validation ends in a result or
a CertificateError (CERTREQ: a ParseError), never another exception (the fuzz invariant)."""

from __future__ import annotations

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2lib.exceptions import LocalProtocolError, ParseError
from ikev2lib.pki import CertFailure, CertificateError, TrustStore, parse_certreq, parse_private_key, validate_chain
from ikev2lib.wire import IdType

from .certs import EE_DNS, NOW, Pki, der

FQDN = (int(IdType.ID_FQDN), EE_DNS.encode())
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def outcome(store: TrustStore, ee: bytes, inter: list[bytes]) -> CertFailure | None:
    try:
        validate_chain(store, ee, inter, now=NOW, identity=FQDN)
    except CertificateError as error:
        return error.reason
    return None


@pytest.mark.parametrize("cut", [0, 1, 2, 10, 100, -1])
def test_truncated_der_is_malformed(pki: Pki, store: TrustStore, cut: int) -> None:
    ee = der(pki.ee)
    assert outcome(store, ee[:cut], [der(pki.inter)]) is CertFailure.MALFORMED
    assert outcome(store, ee, [der(pki.inter)[:cut]]) is CertFailure.MALFORMED
    assert outcome(store, ee + b"\x00", [der(pki.inter)]) is CertFailure.MALFORMED  # trailing data


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(pki: Pki, store: TrustStore, data: bytes) -> None:
    assert outcome(store, data, [der(pki.inter)]) is CertFailure.MALFORMED
    assert outcome(store, der(pki.ee), [data]) in (CertFailure.MALFORMED, None)


@st.composite
def mutations(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.sampled_from([0x00, 0x01, 0x30, 0x7F, 0x80, 0x81, 0x82, 0xA0, 0xFF]))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return bytes(data)


def _same_signed_part(mutated: bytes, original: x509.Certificate) -> bool:
    return x509.load_der_x509_certificate(mutated).tbs_certificate_bytes == original.tbs_certificate_bytes


@SETTINGS
@given(st.data())
def test_mutated_end_entity(pki: Pki, store: TrustStore, data: st.DataObject) -> None:
    """A mutated certificate is refused with the typed error; it may validate only when the mutation
    left the signed part (TBSCertificate) as it was."""
    ee = data.draw(mutations(der(pki.ee)))
    result = outcome(store, ee, [der(pki.inter)])
    assert result is None or isinstance(result, CertFailure)
    if result is None:
        assert _same_signed_part(ee, pki.ee)


@SETTINGS
@given(st.data())
def test_mutated_intermediate(pki: Pki, store: TrustStore, data: st.DataObject) -> None:
    inter = data.draw(mutations(der(pki.inter)))
    result = outcome(store, der(pki.ee), [inter])
    assert result is None or isinstance(result, CertFailure)
    if result is None:
        assert _same_signed_part(inter, pki.inter)


@SETTINGS
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_many_garbage_intermediates(pki: Pki, store: TrustStore, pool: list[bytes]) -> None:
    result = outcome(store, der(pki.ee), pool + [der(pki.inter)])
    assert result in (None, CertFailure.MALFORMED, CertFailure.TOO_LARGE)


@SETTINGS
@given(st.binary(max_size=4096))
def test_certreq_bytes(data: bytes) -> None:
    try:
        hashes = parse_certreq(data)
    except ParseError:
        assert len(data) % 20
    else:
        assert len(data) % 20 == 0
        assert all(len(h) == 20 for h in hashes) and len(set(hashes)) == len(hashes)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.sampled_from([None, "pw"]))
def test_garbage_key_bytes_are_a_local_error(data: bytes, passphrase: str | None) -> None:
    with pytest.raises(LocalProtocolError):
        parse_private_key(data, passphrase)
