"""Shared-key AUTH (RFC 7296 2.15) against an independent calculation."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.crypto import KEY_PAD, psk_auth_data, signed_octets, verify_psk_auth
from ikev2lib.exceptions import LocalProtocolError

PRF_SHA1, PRF_SHA256, PRF_SHA384, PRF_SHA512 = 2, 5, 6, 7
_NAMES = {PRF_SHA1: "sha1", PRF_SHA256: "sha256", PRF_SHA384: "sha384", PRF_SHA512: "sha512"}


def test_key_pad_is_the_17_ascii_octets() -> None:
    assert KEY_PAD == b"Key Pad for IKEv2" and len(KEY_PAD) == 17


@settings(max_examples=60, deadline=None)
@given(
    prf_id=st.sampled_from(sorted(_NAMES)),
    psk=st.binary(min_size=1, max_size=80),
    sk_p=st.binary(min_size=16, max_size=64),
    message=st.binary(min_size=28, max_size=400),
    nonce=st.binary(min_size=16, max_size=256),
    id_body=st.binary(min_size=4, max_size=80),
)
def test_auth_matches_independent_calculation(
    prf_id: int, psk: bytes, sk_p: bytes, message: bytes, nonce: bytes, id_body: bytes
) -> None:
    h = _NAMES[prf_id]
    octets = signed_octets(prf_id, sk_p, message, nonce, id_body)
    # RealMessage | NonceOfPeer | prf(SK_p, RestOfIDPayload)
    assert octets == message + nonce + hmac.new(sk_p, id_body, h).digest()
    # AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)
    want = hmac.new(hmac.new(psk, b"Key Pad for IKEv2", h).digest(), octets, h).digest()
    assert psk_auth_data(prf_id, psk, octets) == want
    assert verify_psk_auth(prf_id, psk, octets, want)


def test_verify_rejects_any_change() -> None:
    id_body = bytes([2, 0, 0, 0]) + b"initiator.example"  # ID_FQDN, reserved, data
    octets = signed_octets(PRF_SHA256, b"\x01" * 32, b"M" * 300, b"N" * 32, id_body)
    auth = psk_auth_data(PRF_SHA256, b"secret", octets)
    assert verify_psk_auth(PRF_SHA256, b"secret", octets, auth)
    assert not verify_psk_auth(PRF_SHA256, b"Secret", octets, auth)
    assert not verify_psk_auth(PRF_SHA256, b"secret", octets[:-1] + b"\x00", auth)
    assert not verify_psk_auth(PRF_SHA256, b"secret", octets, auth[:-1])
    assert not verify_psk_auth(PRF_SHA256, b"secret", octets, b"")
    flipped = bytes([auth[0] ^ 0x80]) + auth[1:]
    assert not verify_psk_auth(PRF_SHA256, b"secret", octets, flipped)


def test_empty_psk_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        psk_auth_data(PRF_SHA256, b"", b"octets")
