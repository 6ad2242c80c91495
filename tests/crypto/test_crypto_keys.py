"""SKEYSEED / SK_* / KEYMAT derivation (RFC 7296 2.14, 2.17, 2.18)."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.crypto import (
    ChildKeys,
    IkeKeys,
    child_key_lengths,
    derive_child_keymat,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    split_child_keymat,
)
from ikev2lib.crypto.prf import Prf
from ikev2lib.exceptions import LocalProtocolError

PRF_SHA1, PRF_XCBC, PRF_SHA256, PRF_SHA384, PRF_SHA512, PRF_CMAC = 2, 4, 5, 6, 7, 8
ENCR_NULL, AES_CBC, AES_CTR, GCM8, GCM12, GCM16, GMAC, CHACHA = 11, 12, 13, 18, 19, 20, 21, 28
SHA1_96, XCBC_96, CMAC_96, SHA256_128, SHA384_192, SHA512_256 = 2, 5, 8, 12, 13, 14

# NIST CAVP IKEv2 KDF sample for SHA-256 (SP 800-135 section 4.1.2), as carried in NSS's
# gtests ike-sha256-vectors.h (cases 6-9): g^ir, nonces, SPIs, SKEYSEED, prf+ output,
# rekey g^ir and rekey SKEYSEED.
NIST_GIR = bytes.fromhex("0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29")
NIST_NI = bytes.fromhex("3f302be1abcb28e1")
NIST_NR = bytes.fromhex("8c332ee006064c9b")
NIST_SPII = bytes.fromhex("40dac39e1e1a8640")
NIST_SPIR = bytes.fromhex("8619a1cf9a6e4c07")
NIST_SKEYSEED = bytes.fromhex("5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe")
NIST_DKM = bytes.fromhex(
    "0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ec"
    "e98aca531188d16041b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6"
    "cdf6854379e31be72b8d3d1fa990cf9c5b015ca9f918a7df6253c958114a09d4"
    "e1c19bdcd4db14b29d98db1a74ad405c588662c14a04d0d36aa4ab55e90f8986"
    "d12d4aad"
)
NIST_REKEY_GIR = bytes.fromhex("25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c")
NIST_REKEY_SKEYSEED = bytes.fromhex("2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398")


def _concat(keys: IkeKeys) -> bytes:
    return keys.sk_d + keys.sk_ai + keys.sk_ar + keys.sk_ei + keys.sk_er + keys.sk_pi + keys.sk_pr


def test_nist_skeyseed_and_dkm() -> None:
    skeyseed, keys = derive_ike_keys(
        PRF_SHA256, AES_CBC, 256, SHA256_128, NIST_GIR, NIST_NI, NIST_NR, NIST_SPII, NIST_SPIR
    )
    assert skeyseed == NIST_SKEYSEED
    # Order SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr is one prf+ stream.
    assert _concat(keys)[: len(NIST_DKM)] == NIST_DKM
    assert keys.sk_d == NIST_DKM[:32]
    assert keys.sk_ai == NIST_DKM[32:64] and keys.sk_ar == NIST_DKM[64:96]
    assert [len(k) for k in (keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr)] == [32, 32, 32, 32]


def test_nist_rekey_skeyseed() -> None:
    skeyseed, _ = derive_rekeyed_ike_keys(
        PRF_SHA256, GCM16, 128, None, NIST_DKM[:32], NIST_REKEY_GIR, NIST_NI, NIST_NR, NIST_SPII, NIST_SPIR
    )
    assert skeyseed == NIST_REKEY_SKEYSEED


def _ref_prf(prf_id: int, key: bytes, data: bytes) -> bytes:
    name = {PRF_SHA1: "sha1", PRF_SHA256: "sha256", PRF_SHA384: "sha384", PRF_SHA512: "sha512"}[prf_id]
    return hmac.new(key, data, name).digest()


def _ref_prf_plus(prf_id: int, key: bytes, seed: bytes, length: int) -> bytes:
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = _ref_prf(prf_id, key, t + seed + bytes([n]))
        out += t
        n += 1
    return out[:length]


# (encr, key bits, integ, SK_e length incl. salt, SK_a length)
IKE_SUITES = [
    (AES_CBC, 128, SHA256_128, 16, 32),
    (AES_CBC, 256, SHA512_256, 32, 64),
    (AES_CBC, 192, SHA384_192, 24, 48),
    (AES_CBC, 128, SHA1_96, 16, 20),
    (GCM16, 128, None, 20, 0),
    (GCM12, 256, 0, 36, 0),
    (GCM8, 192, None, 28, 0),
    (CHACHA, None, None, 36, 0),
]


@settings(max_examples=40, deadline=None)
@given(
    prf_id=st.sampled_from([PRF_SHA1, PRF_SHA256, PRF_SHA384, PRF_SHA512]),
    suite=st.sampled_from(IKE_SUITES),
    gir=st.binary(min_size=1, max_size=512),
    ni=st.binary(min_size=16, max_size=64),
    nr=st.binary(min_size=16, max_size=64),
    spi_i=st.binary(min_size=8, max_size=8),
    spi_r=st.binary(min_size=8, max_size=8),
)
def test_ike_keys_match_independent_calculation(
    prf_id: int,
    suite: tuple[int, int | None, int | None, int, int],
    gir: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> None:
    encr, bits, integ, enc_len, integ_len = suite
    skeyseed, keys = derive_ike_keys(prf_id, encr, bits, integ, gir, ni, nr, spi_i, spi_r)
    want_seed = _ref_prf(prf_id, ni + nr, gir)  # RFC 7296 2.14: key = Ni | Nr (full nonces)
    assert skeyseed == want_seed
    prf_len = Prf(prf_id).output_size
    sizes = [prf_len, integ_len, integ_len, enc_len, enc_len, prf_len, prf_len]
    stream = _ref_prf_plus(prf_id, want_seed, ni + nr + spi_i + spi_r, sum(sizes))
    assert _concat(keys) == stream
    assert [len(k) for k in vars(keys).values()] == sizes


def test_fixed_key_prf_uses_first_64_bits_of_each_nonce() -> None:
    ni, nr = bytes(range(32)), bytes(range(100, 132))
    for prf_id in (PRF_XCBC, PRF_CMAC):
        skeyseed, keys = derive_ike_keys(prf_id, GCM16, 128, None, b"g" * 32, ni, nr, b"i" * 8, b"r" * 8)
        assert skeyseed == Prf(prf_id).compute(ni[:8] + nr[:8], b"g" * 32)
        assert len(keys.sk_d) == len(keys.sk_pi) == 16  # PRF key size, not output length rule
        assert keys.sk_d == Prf(prf_id).plus(skeyseed, ni + nr + b"i" * 8 + b"r" * 8, 16)


def test_rekey_uses_old_prf_for_skeyseed_and_new_prf_for_keys() -> None:
    old_sk_d = b"\x11" * 48
    gir, ni, nr = b"\x22" * 32, b"\x33" * 32, b"\x44" * 32
    spi_i, spi_r = b"\x55" * 8, b"\x66" * 8
    skeyseed, keys = derive_rekeyed_ike_keys(
        PRF_SHA256, GCM16, 256, None, old_sk_d, gir, ni, nr, spi_i, spi_r, old_prf_id=PRF_SHA384
    )
    assert skeyseed == _ref_prf(PRF_SHA384, old_sk_d, gir + ni + nr)
    assert keys.sk_d == _ref_prf_plus(PRF_SHA256, skeyseed, ni + nr + spi_i + spi_r, 32)
    same_seed, _ = derive_rekeyed_ike_keys(PRF_SHA256, GCM16, 256, None, old_sk_d, gir, ni, nr, spi_i, spi_r)
    assert same_seed == _ref_prf(PRF_SHA256, old_sk_d, gir + ni + nr)


def test_child_keymat_with_and_without_pfs() -> None:
    sk_d, ni, nr, gir = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 256
    assert derive_child_keymat(PRF_SHA256, sk_d, ni, nr, 72) == _ref_prf_plus(PRF_SHA256, sk_d, ni + nr, 72)
    assert derive_child_keymat(PRF_SHA256, sk_d, ni, nr, 72, shared_secret=gir) == _ref_prf_plus(
        PRF_SHA256, sk_d, gir + ni + nr, 72
    )


@pytest.mark.parametrize(
    "encr,bits,integ,expected",
    [
        (GCM16, 128, None, (20, 0)),  # RFC 4106 8.1: key + 4-octet salt
        (GCM8, 256, 0, (36, 0)),
        (GMAC, 192, None, (28, 0)),  # RFC 4543 3.2
        (CHACHA, None, None, (36, 0)),  # RFC 7634 section 4
        (AES_CTR, 128, SHA256_128, (20, 32)),  # RFC 3686 5.1: key + 4-octet nonce
        (AES_CBC, 256, SHA512_256, (32, 64)),
        (AES_CBC, 128, XCBC_96, (16, 16)),
        (AES_CBC, 128, CMAC_96, (16, 16)),
        (ENCR_NULL, None, SHA256_128, (0, 32)),
    ],
)
def test_child_key_lengths(encr: int, bits: int | None, integ: int | None, expected: tuple[int, int]) -> None:
    assert child_key_lengths(encr, bits, integ) == expected


@pytest.mark.parametrize(
    "encr,bits,integ",
    [
        (GCM16, 128, SHA256_128),  # AEAD with an integrity transform
        (AES_CBC, 128, None),  # no integrity at all
        (ENCR_NULL, None, None),
        (AES_CBC, 100, SHA256_128),  # bad key length
        (CHACHA, 128, None),
        (3, 192, SHA1_96),  # 3DES not implemented
        (GCM16, 128, 1),  # MD5 not implemented
    ],
)
def test_child_key_lengths_refuses_bad_suites(encr: int, bits: int | None, integ: int | None) -> None:
    with pytest.raises(LocalProtocolError):
        child_key_lengths(encr, bits, integ)


def test_split_child_keymat_order() -> None:
    # RFC 7296 2.17: i->r encryption, i->r integrity, then r->i encryption, r->i integrity.
    keymat = b"A" * 16 + b"B" * 32 + b"C" * 16 + b"D" * 32
    keys = split_child_keymat(keymat, 16, 32)
    assert keys == ChildKeys(b"A" * 16, b"B" * 32, b"C" * 16, b"D" * 32)
    with pytest.raises(LocalProtocolError):
        split_child_keymat(keymat[:-1], 16, 32)


def test_key_objects_do_not_reveal_keys() -> None:
    _, keys = derive_ike_keys(PRF_SHA256, GCM16, 128, None, b"\x99" * 32, b"n" * 32, b"m" * 32, b"i" * 8, b"r" * 8)
    text = repr(keys) + str(keys)
    assert keys.sk_d.hex() not in text and repr(keys.sk_d) not in text
    assert "32 bytes" in text
    child = split_child_keymat(b"\x77" * 40, 20, 0)
    assert "\\x77" not in repr(child) and "77777777" not in repr(child)


def test_bad_spi_length_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        derive_ike_keys(PRF_SHA256, GCM16, 128, None, b"g", b"n" * 16, b"m" * 16, b"i" * 4, b"r" * 8)


def test_ike_refuses_esp_only_ciphers() -> None:
    for encr in (AES_CTR, GMAC, ENCR_NULL):
        with pytest.raises(LocalProtocolError):
            derive_ike_keys(PRF_SHA256, encr, 128, SHA256_128, b"g", b"n" * 16, b"m" * 16, b"i" * 8, b"r" * 8)


def test_additional_key_exchange_secrets_follow_the_nonces() -> None:
    # RFC 9370 2.2.4: KEYMAT = prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n))
    import hmac as _hmac

    from ikev2lib.crypto import derive_child_keymat

    sk_d, ni, nr, sk0, sk1 = b"d" * 32, b"i" * 32, b"r" * 32, b"0" * 32, b"1" * 32
    seed = sk0 + ni + nr + sk1
    expected = _hmac.new(sk_d, seed + b"\x01", "sha256").digest()
    assert derive_child_keymat(5, sk_d, ni, nr, 32, sk0, additional_secrets=sk1) == expected


def test_parse_errors_pickle() -> None:
    import pickle

    from ikev2lib.exceptions import InvalidMajorVersion, ParseError, UnsupportedCriticalPayload

    for error in (ParseError("bad", 3, notify=7), UnsupportedCriticalPayload(99, 12), InvalidMajorVersion(3, 0)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.offset == error.offset and copy.notify == error.notify
