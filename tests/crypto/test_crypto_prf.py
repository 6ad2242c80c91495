"""PRF and prf+ (RFC 7296 2.13) against published vectors and an independent prf+ loop."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.crypto import PRF_PLUS_MAX_ITERATIONS, Prf
from ikev2lib.exceptions import LocalProtocolError

SHA256, SHA384, SHA512 = 5, 6, 7
SHA1, XCBC, CMAC = 2, 4, 8

_LONG_KEY = b"\xaa" * 131
# RFC 4868 section 2.7.1 "Test Vectors for PRF": PRF-1..PRF-6 (the RFC 4231 inputs).
RFC4868_PRF_VECTORS = [
    (  # PRF-1
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
        "faea9ea9076ede7f4af152e8b2fa9cb6",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    ),
    (  # PRF-2
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
        "8e2240ca5e69e2c78b3239ecfab21649",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ),
    (  # PRF-3
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b"
        "2a5ab39dc13814b94e3ab6e101a34f27",
        "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
        "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
    ),
    (  # PRF-4
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e"
        "6801dd23c4a7d679ccf8a386c674cffb",
        "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
        "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
    ),
    (  # PRF-5: key longer than the hash block
        _LONG_KEY,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c6"
        "0c2ef6ab4030fe8296248df163f44952",
        "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
        "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
    ),
    (  # PRF-6
        _LONG_KEY,
        b"This is a test using a larger than block-size key and a larger than block-size data. "
        b"The key needs to be hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5"
        "a678cc31e799176d3860e6110c46523e",
        "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
        "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
    ),
]


@pytest.mark.parametrize("key,data,sha256,sha384,sha512", RFC4868_PRF_VECTORS)
def test_rfc4868_prf_vectors(key: bytes, data: bytes, sha256: str, sha384: str, sha512: str) -> None:
    assert Prf(SHA256).compute(key, data).hex() == sha256
    assert Prf(SHA384).compute(key, data).hex() == sha384
    assert Prf(SHA512).compute(key, data).hex() == sha512


def test_rfc2202_hmac_sha1_prf() -> None:
    # RFC 2202 section 3, test cases 1 and 2 (PRF_HMAC_SHA1 is HMAC-SHA1, RFC 7296 3.3.2).
    assert Prf(SHA1).compute(b"\x0b" * 20, b"Hi There").hex() == "b617318655057264e28bc0b6fb378c8ef146be00"
    assert (
        Prf(SHA1).compute(b"Jefe", b"what do ya want for nothing?").hex()
        == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    )


_AES_PRF_MSG = bytes(range(20))


@pytest.mark.parametrize(
    "key,expected",
    [
        # RFC 4434 section 2.1: AES-XCBC-PRF-128 with 16-, 10- and 18-octet keys.
        (bytes(range(16)), "47f51b4564966215b8985c63055ed308"),
        (bytes(range(10)), "0fa087af7d866e7653434e602fdde835"),
        (bytes(range(16)) + b"\xed\xcb", "8cd3c93ae598a9803006ffb67c40e9e4"),
    ],
)
def test_rfc4434_aes_xcbc_prf(key: bytes, expected: str) -> None:
    assert Prf(XCBC).compute(key, _AES_PRF_MSG).hex() == expected


@pytest.mark.parametrize(
    "data,expected",
    [
        # RFC 3566 section 4.6, test cases 1, 2, 3 and 5 (key 000102..0f): message lengths
        # 0, 3, 16 and 32 exercise the padded, partial and full final-block paths.
        (b"", "75f0251d528ac01c4573dfd584d79f29"),
        (bytes(range(3)), "5b376580ae2f19afe7219ceef172756f"),
        (bytes(range(16)), "d2a246fa349b68a79998a4394ff7a263"),
        (bytes(range(32)), "f54f0ec8d2b9f3d36807734bd5283fd4"),
    ],
)
def test_rfc3566_aes_xcbc_mac(data: bytes, expected: str) -> None:
    assert Prf(XCBC).compute(bytes(range(16)), data).hex() == expected


@pytest.mark.parametrize(
    "key,expected",
    [
        # RFC 4615 section 4: AES-CMAC-PRF-128 with 18-, 16- and 10-octet keys.
        (bytes(range(16)) + b"\xed\xcb", "84a348a4a45d235babfffc0d2b4da09a"),
        (bytes(range(16)), "980ae87b5f4c9c5214f5b6a8455e4c2d"),
        (bytes(range(10)), "290d9e112edb09ee141fcf64c0b72f3d"),
    ],
)
def test_rfc4615_aes_cmac_prf(key: bytes, expected: str) -> None:
    assert Prf(CMAC).compute(key, _AES_PRF_MSG).hex() == expected


def test_sizes() -> None:
    assert [(Prf(i).output_size, Prf(i).key_size) for i in (SHA1, SHA256, SHA384, SHA512, XCBC, CMAC)] == [
        (20, 20),
        (32, 32),
        (48, 48),
        (64, 64),
        (16, 16),
        (16, 16),
    ]


def test_unknown_prf_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        Prf(1)  # PRF_HMAC_MD5: not implemented on purpose
    with pytest.raises(LocalProtocolError):
        Prf(99)


_HASHLIB = {SHA1: "sha1", SHA256: "sha256", SHA384: "sha384", SHA512: "sha512"}


def reference_prf_plus(hash_name: str, key: bytes, seed: bytes, length: int) -> bytes:
    """RFC 7296 2.13 written out with the standard library only."""
    out = b""
    t = b""
    n = 1
    while len(out) < length:
        t = hmac.new(key, t + seed + bytes([n]), hash_name).digest()
        out += t
        n += 1
    return out[:length]


@settings(max_examples=60, deadline=None)
@given(
    prf_id=st.sampled_from(sorted(_HASHLIB)),
    key=st.binary(max_size=80),
    seed=st.binary(max_size=300),
    length=st.integers(min_value=0, max_value=700),
)
def test_prf_plus_matches_reference(prf_id: int, key: bytes, seed: bytes, length: int) -> None:
    got = Prf(prf_id).plus(key, seed, length)
    assert got == reference_prf_plus(_HASHLIB[prf_id], key, seed, length)


def test_prf_plus_first_block_is_prf_of_seed_and_one() -> None:
    key, seed = b"k" * 32, b"seed"
    assert Prf(SHA256).plus(key, seed, 32) == hmac.new(key, seed + b"\x01", hashlib.sha256).digest()


@pytest.mark.parametrize("prf_id", [SHA1, SHA256, SHA512, XCBC])
def test_prf_plus_is_bounded_to_255_iterations(prf_id: int) -> None:
    prf = Prf(prf_id)
    limit = PRF_PLUS_MAX_ITERATIONS * prf.output_size
    assert len(prf.plus(b"key", b"seed", limit)) == limit
    with pytest.raises(LocalProtocolError):
        prf.plus(b"key", b"seed", limit + 1)
    with pytest.raises(LocalProtocolError):
        prf.plus(b"key", b"seed", -1)
