"""IKE_TRANSFORMS is exactly what the IKE SA crypto runs: every entry builds (an SK cipher that round
trips, a PRF, a key exchange both sides agree on), and every transform left out fails to build."""

from __future__ import annotations

import os

import pytest

from ikev2lib.crypto import IKE_TRANSFORMS, KeyExchange, Prf, derive_ike_keys, ike_key_lengths, sk_cipher
from ikev2lib.exceptions import IntegrityError, LocalProtocolError
from ikev2lib.wire.enums import EncrId, IntegId, KeyExchangeId, PrfId, TransformType

ENCR, PRF, INTEG, KE = (int(t) for t in (TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.KE))
AAD = bytes(32)


def _entries(ttype: int) -> list[tuple[int, int, int | None]]:
    return sorted((k for k in IKE_TRANSFORMS if k[0] == ttype), key=lambda k: (k[1], k[2] or 0))


def _round_trip(encr: int, bits: int | None, integ: int | None) -> None:
    enc_len, integ_len = ike_key_lengths(encr, bits, integ)
    enc_key, integ_key = os.urandom(enc_len), os.urandom(integ_len)
    sender = sk_cipher(encr, bits, integ, enc_key, integ_key)
    receiver = sk_cipher(encr, bits, integ, enc_key, integ_key)
    body = sender.encrypt(AAD, b"payload chain")
    assert receiver.decrypt(AAD, body) == b"payload chain"
    with pytest.raises(IntegrityError):
        receiver.decrypt(AAD, body[:-1] + bytes((body[-1] ^ 1,)))


@pytest.mark.parametrize("entry", _entries(ENCR), ids=str)
def test_every_encryption_entry_protects_sk_payloads(entry: tuple[int, int, int | None]) -> None:
    _, encr, bits = entry
    if encr == EncrId.AES_CBC:
        for _, integ, _ in _entries(INTEG):
            _round_trip(encr, bits, integ)
    else:
        _round_trip(encr, bits, None)


@pytest.mark.parametrize("entry", _entries(INTEG), ids=str)
def test_every_integrity_entry_protects_sk_payloads(entry: tuple[int, int, int | None]) -> None:
    _round_trip(EncrId.AES_CBC, 128, entry[1])


@pytest.mark.parametrize("entry", _entries(PRF), ids=str)
def test_every_prf_entry_derives_ike_keys(entry: tuple[int, int, int | None]) -> None:
    prf = entry[1]
    assert len(Prf(prf).plus(b"key", b"seed", 100)) == 100
    _, keys = derive_ike_keys(prf, EncrId.AES_GCM_16, 128, None, os.urandom(32), os.urandom(32), os.urandom(32),
                              os.urandom(8), os.urandom(8))  # fmt: skip
    assert len(keys.sk_ei) == 20 and len(keys.sk_d) == Prf(prf).key_size


@pytest.mark.parametrize("entry", _entries(KE), ids=str)
def test_every_key_exchange_entry_agrees_on_a_secret(entry: tuple[int, int, int | None]) -> None:
    group = entry[1]
    initiator = KeyExchange.generate(group)
    responder, secret = KeyExchange.respond(group, initiator.public_bytes())
    assert initiator.shared_secret(responder.public_bytes()) == secret and any(secret)


def test_transforms_left_out_do_not_build() -> None:
    """The table is complete: any other encryption/integrity/PRF/KE id (and key length) fails."""
    for encr in EncrId:
        for bits in (None, 64, 128, 192, 256):
            if (ENCR, int(encr), bits) in IKE_TRANSFORMS:
                continue
            with pytest.raises(LocalProtocolError):
                enc_len, _ = ike_key_lengths(encr, bits, None if encr != EncrId.AES_CBC else IntegId.HMAC_SHA2_256_128)
                sk_cipher(encr, bits, None, bytes(enc_len))
    for integ in IntegId:
        if integ != IntegId.NONE and (INTEG, int(integ), None) not in IKE_TRANSFORMS:
            with pytest.raises(LocalProtocolError):
                sk_cipher(EncrId.AES_CBC, 128, integ, bytes(16), bytes(64))
    for prf in PrfId:
        if (PRF, int(prf), None) not in IKE_TRANSFORMS:
            with pytest.raises(LocalProtocolError):
                Prf(prf)
    for group in KeyExchangeId:
        if group != KeyExchangeId.NONE and (KE, int(group), None) not in IKE_TRANSFORMS:
            with pytest.raises(LocalProtocolError):
                KeyExchange.generate(group)


@pytest.mark.parametrize(
    "ttype, ident, bits",
    [(ENCR, EncrId.AES_CCM_16, 128), (ENCR, EncrId.AES_CTR, 128), (ENCR, EncrId.TRIPLE_DES, None),
     (ENCR, EncrId.NULL, None), (ENCR, EncrId.NULL_AUTH_AES_GMAC, 128), (INTEG, IntegId.AES_XCBC_96, None),
     (INTEG, IntegId.HMAC_MD5_96, None), (PRF, PrfId.HMAC_MD5, None), (KE, KeyExchangeId.MODP_1024, None),
     (KE, KeyExchangeId.ECP_192, None), (KE, KeyExchangeId.ML_KEM_512, None)],
)  # fmt: skip
def test_the_issues_examples_are_not_in_the_table(ttype: int, ident: int, bits: int | None) -> None:
    assert (ttype, int(ident), bits) not in IKE_TRANSFORMS
