"""SK payload protection (RFC 7296 3.14, RFC 5282, RFC 7634): vectors, round trips, tampering."""

from __future__ import annotations

import copy
import hashlib
import hmac
import pickle
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.crypto import AEAD_IV_LIMIT, MAX_SK_BODY, sk_cipher
from ikev2lib.crypto.sk import SKCipher
from ikev2lib.exceptions import IntegrityError, LocalProtocolError, RemoteProtocolError

AES_CBC, GCM8, GCM12, GCM16, CHACHA = 12, 18, 19, 20, 28
SHA1_96, SHA256_128, SHA384_192, SHA512_256 = 2, 12, 13, 14

# RFC 7634 Appendix B, "IKEv2 Example" (the same bytes strongSwan checks in
# src/libcharon/tests/suites/test_message_chapoly.c): an INFORMATIONAL request carrying a
# SET_WINDOW_SIZE notify, encrypted with ChaCha20-Poly1305.
RFC7634_KEY = bytes(range(0x80, 0xA0)) + bytes.fromhex("a0a1a2a3")  # key | salt
RFC7634_IV = 0x1011121314151617
RFC7634_MESSAGE = bytes.fromhex(
    "c0c1c2c3c4c5c6c7d0d1d2d3d4d5d6d7"  # SPIi, SPIr
    "2e202500000000090000004529000029"  # SK next, v2.0, INFORMATIONAL, msg id 9, length 69; SK hdr
    "1011121314151617"  # IV
    "610394701f8d017f7c12924889"  # ciphertext of the notify + pad length 0 (13 octets)
    "6b71bfe25236efd7cdc67066906315b2"  # ICV
)
RFC7634_INNER = bytes.fromhex("0000000c000040010000000a")  # Notify(SET_WINDOW_SIZE, 10)


def test_rfc7634_ikev2_example_encrypt() -> None:
    cipher = sk_cipher(CHACHA, None, None, RFC7634_KEY)
    cipher._next_iv = RFC7634_IV  # type: ignore[attr-defined]  # pin the counter to the vector
    aad = RFC7634_MESSAGE[:32]
    assert cipher.body_length(len(RFC7634_INNER)) == len(RFC7634_MESSAGE) - 32
    assert cipher.encrypt(aad, RFC7634_INNER) == RFC7634_MESSAGE[32:]


def test_rfc7634_ikev2_example_decrypt() -> None:
    cipher = sk_cipher(CHACHA, 256, 0, RFC7634_KEY)
    assert cipher.decrypt(RFC7634_MESSAGE[:32], RFC7634_MESSAGE[32:]) == RFC7634_INNER


# McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test cases 4 (AES-128) and 16
# (AES-256): 96-bit IV cafebabefacedbaddecaf888 = salt cafebabe | explicit IV facedbaddecaf888,
# exactly the RFC 4106/5282 nonce construction.
GCM_P = bytes.fromhex(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_A = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_K128 = bytes.fromhex("feffe9928665731c6d6a8f9467308308")
MCGREW = [
    (
        GCM_K128,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (
        GCM_K128 * 2,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]
SALT, EXPLICIT_IV = bytes.fromhex("cafebabe"), bytes.fromhex("facedbaddecaf888")


@pytest.mark.parametrize("key,ct,tag", MCGREW)
@pytest.mark.parametrize("encr,icv", [(GCM16, 16), (GCM12, 12), (GCM8, 8)])
def test_mcgrew_gcm_vectors(key: bytes, ct: str, tag: str, encr: int, icv: int) -> None:
    cipher = sk_cipher(encr, len(key) * 8, None, key + SALT)
    # RFC 4106 section 6 / RFC 5282: a truncated ICV is the leading octets of the full tag.
    sealed = bytes.fromhex(ct) + bytes.fromhex(tag)[:icv]
    assert cipher._seal(EXPLICIT_IV, GCM_A, GCM_P) == sealed  # type: ignore[attr-defined]
    assert cipher._open(EXPLICIT_IV, GCM_A, sealed) == GCM_P  # type: ignore[attr-defined]
    # Through the SK path: the vector plaintext's last octet (0x39 = 57) acts as the pad length.
    assert cipher.decrypt(GCM_A, EXPLICIT_IV + sealed) == GCM_P[: len(GCM_P) - 57 - 1]
    with pytest.raises(IntegrityError):
        cipher.decrypt(GCM_A[:-1] + b"\xd3", EXPLICIT_IV + sealed)


def test_cbc_hmac_layout_matches_independent_calculation() -> None:
    # RFC 7296 3.14: ICV = HMAC over IKE header .. ciphertext (aad | IV | ciphertext), truncated.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    enc_key, integ_key = b"\x01" * 16, b"\x02" * 32
    cipher = sk_cipher(AES_CBC, 128, SHA256_128, enc_key, integ_key)
    aad, plain = b"H" * 32, b"payload chain of 21 o"
    body = cipher.encrypt(aad, plain)
    assert len(body) == cipher.body_length(len(plain)) == 16 + 32 + 16
    iv, ct, icv = body[:16], body[16:-16], body[-16:]
    assert icv == hmac.new(integ_key, aad + iv + ct, hashlib.sha256).digest()[:16]
    dec = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
    padded = dec.update(ct) + dec.finalize()
    assert padded[: len(plain)] == plain and padded[-1] == len(padded) - len(plain) - 1


def _key_material(encr: int, bits: int | None, integ: int) -> tuple[bytes, bytes]:
    enc_len = {AES_CBC: (bits or 0) // 8, CHACHA: 36}.get(encr, (bits or 0) // 8 + 4)
    integ_len = {0: 0, SHA1_96: 20, SHA256_128: 32, SHA384_192: 48, SHA512_256: 64}[integ]
    return bytes((i * 7 + 3) & 0xFF for i in range(enc_len)), bytes((i * 5 + 1) & 0xFF for i in range(integ_len))


SUITES = [
    (GCM16, 128, 0),
    (GCM16, 256, 0),
    (GCM12, 192, 0),
    (GCM8, 128, 0),
    (CHACHA, None, 0),
    (AES_CBC, 128, SHA256_128),
    (AES_CBC, 256, SHA512_256),
    (AES_CBC, 192, SHA384_192),
    (AES_CBC, 128, SHA1_96),
]


def _pair(suite: tuple[int, int | None, int]) -> tuple[SKCipher, SKCipher]:
    encr, bits, integ = suite
    ek, ik = _key_material(encr, bits, integ)
    return sk_cipher(encr, bits, integ, ek, ik), sk_cipher(encr, bits, integ, ek, ik)


@settings(max_examples=150, deadline=None)
@given(suite=st.sampled_from(SUITES), aad=st.binary(min_size=0, max_size=40), plain=st.binary(max_size=600))
def test_round_trip(suite: tuple[int, int | None, int], aad: bytes, plain: bytes) -> None:
    sender, receiver = _pair(suite)
    body = sender.encrypt(aad, plain)
    assert len(body) == sender.body_length(len(plain))
    assert receiver.decrypt(aad, body) == plain


@settings(max_examples=200, deadline=None)
@given(
    suite=st.sampled_from(SUITES),
    aad=st.binary(min_size=1, max_size=36),
    plain=st.binary(max_size=200),
    data=st.data(),
)
def test_every_bit_flip_is_an_integrity_error(
    suite: tuple[int, int | None, int], aad: bytes, plain: bytes, data: st.DataObject
) -> None:
    sender, receiver = _pair(suite)
    body = sender.encrypt(aad, plain)
    in_aad = data.draw(st.booleans())
    target = bytearray(aad if in_aad else body)
    bit = data.draw(st.integers(min_value=0, max_value=len(target) * 8 - 1))
    target[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(IntegrityError):
        if in_aad:
            receiver.decrypt(bytes(target), body)
        else:
            receiver.decrypt(aad, bytes(target))


@settings(max_examples=150, deadline=None)
@given(suite=st.sampled_from(SUITES), plain=st.binary(max_size=100), data=st.data())
def test_truncated_or_garbage_bodies_give_typed_errors(
    suite: tuple[int, int | None, int], plain: bytes, data: st.DataObject
) -> None:
    sender, receiver = _pair(suite)
    body = sender.encrypt(b"aad", plain)
    cut = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    with pytest.raises(RemoteProtocolError):  # IntegrityError is a subclass
        receiver.decrypt(b"aad", body[:cut])
    garbage = data.draw(st.binary(max_size=300))
    with pytest.raises(RemoteProtocolError):
        receiver.decrypt(b"aad", garbage)


@pytest.mark.parametrize("suite", SUITES)
def test_short_bodies_are_malformed_not_integrity(suite: tuple[int, int | None, int]) -> None:
    _, receiver = _pair(suite)
    for size in range(receiver.iv_size + receiver.icv_size + 1):
        with pytest.raises(RemoteProtocolError) as err:
            receiver.decrypt(b"aad", bytes(size))
        assert not isinstance(err.value, IntegrityError)
        assert err.value.notify == 7


def test_cbc_body_not_block_aligned_is_malformed() -> None:
    _, receiver = _pair((AES_CBC, 128, SHA256_128))
    with pytest.raises(RemoteProtocolError) as err:
        receiver.decrypt(b"", bytes(16 + 17 + 16))
    assert not isinstance(err.value, IntegrityError)


def test_oversized_body_is_refused() -> None:
    _, receiver = _pair((GCM16, 128, 0))
    with pytest.raises(RemoteProtocolError):
        receiver.decrypt(b"", bytes(MAX_SK_BODY + 1))
    sender, _ = _pair((GCM16, 128, 0))
    with pytest.raises(LocalProtocolError):
        sender.encrypt(b"", bytes(MAX_SK_BODY))


@pytest.mark.parametrize("suite", [s for s in SUITES if s[0] != AES_CBC])
def test_bad_pad_length_after_authentication(suite: tuple[int, int | None, int]) -> None:
    sender, receiver = _pair(suite)
    iv = (123).to_bytes(8, "big")
    sealed = sender._seal(iv, b"aad", b"abc\x09")  # type: ignore[attr-defined]  # pad length 9 > 3
    with pytest.raises(RemoteProtocolError) as err:
        receiver.decrypt(b"aad", iv + sealed)
    assert not isinstance(err.value, IntegrityError)


def test_aead_iv_is_a_counter_owned_by_the_cipher() -> None:
    sender, _ = _pair((GCM16, 128, 0))
    ivs = [sender.encrypt(b"a", b"same")[:8] for _ in range(5)]
    assert ivs == [i.to_bytes(8, "big") for i in range(5)]
    sender._next_iv = AEAD_IV_LIMIT - 1  # type: ignore[attr-defined]
    assert sender.encrypt(b"a", b"x")[:8] == b"\xff" * 8
    with pytest.raises(LocalProtocolError):
        sender.encrypt(b"a", b"x")


AEAD_SUITES = [s for s in SUITES if s[0] != AES_CBC]
IV_THREADS, IV_MESSAGES = 4, 150  # messages protected by each thread


def _protect_from_threads(sender: SKCipher) -> list[bytes]:
    """Bodies protected by IV_THREADS threads at once with one cipher, all threads started together."""
    bodies: list[list[bytes]] = [[] for _ in range(IV_THREADS)]
    start = threading.Barrier(IV_THREADS)

    def work(i: int) -> None:
        start.wait(timeout=30)
        for n in range(IV_MESSAGES):
            bodies[i].append(sender.encrypt(b"aad", b"message %d from thread %d" % (n, i)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(IV_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(len(b) == IV_MESSAGES for b in bodies)
    return [body for part in bodies for body in part]


def _check_ivs(suite: tuple[int, int | None, int], bodies: list[bytes], receiver: SKCipher) -> None:
    ivs = sorted(int.from_bytes(body[:8], "big") for body in bodies)
    assert ivs == list(range(IV_THREADS * IV_MESSAGES)), "an AEAD IV was used twice (or skipped)"
    for body in bodies:
        receiver.decrypt(b"aad", body)


@pytest.mark.parametrize("suite", AEAD_SUITES)
def test_aead_iv_is_never_reused_by_concurrent_threads(suite: tuple[int, int | None, int]) -> None:
    sender, receiver = _pair(suite)
    _check_ivs(suite, _protect_from_threads(sender), receiver)


class _PreemptedCounter:
    """Wraps the cipher's `_next_iv` slot so that every read gives the GIL up: another thread then runs
    between the read and the write of the counter, as it can at any point on a free-threaded build."""

    def __init__(self, slot: Any) -> None:
        self.slot = slot

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self.slot.__get__(obj, owner)
        time.sleep(0.0002)
        return value

    def __set__(self, obj: object, value: int) -> None:
        self.slot.__set__(obj, value)


@pytest.mark.parametrize("suite", [(GCM16, 128, 0), (CHACHA, None, 0)])
def test_aead_iv_is_never_reused_when_threads_are_preempted(
    suite: tuple[int, int | None, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, receiver = _pair(suite)
    cls = type(sender)
    monkeypatch.setattr(cls, "_next_iv", _PreemptedCounter(cls.__dict__["_next_iv"]))
    _check_ivs(suite, _protect_from_threads(sender), receiver)


def test_aead_padding_is_minimal_and_cbc_is_block_aligned() -> None:
    gcm, _ = _pair((GCM16, 128, 0))
    assert [gcm.body_length(n) for n in (0, 1, 15, 16)] == [8 + 1 + 16, 8 + 2 + 16, 8 + 16 + 16, 8 + 17 + 16]
    cbc, _ = _pair((AES_CBC, 128, SHA256_128))
    assert [cbc.body_length(n) for n in (0, 14, 15, 16, 31)] == [48, 48, 48, 64, 64]


def test_cbc_ivs_are_random() -> None:
    sender, _ = _pair((AES_CBC, 128, SHA256_128))
    ivs = {sender.encrypt(b"a", b"same")[:16] for _ in range(8)}
    assert len(ivs) == 8


@pytest.mark.parametrize(
    "encr,bits,integ,ek,ik",
    [
        (GCM16, 128, None, 16, 0),  # salt missing
        (GCM16, 128, SHA256_128, 20, 32),  # AEAD with integrity
        (AES_CBC, 128, None, 16, 0),  # CBC without integrity
        (AES_CBC, 128, SHA256_128, 16, 20),  # wrong integrity key length
        (AES_CBC, 128, 5, 16, 16),  # AES-XCBC integrity: not for IKE SK here
        (CHACHA, 128, None, 36, 0),
        (13, 128, SHA256_128, 20, 32),  # AES-CTR is ESP only
        (3, 192, SHA1_96, 24, 20),  # 3DES not supported
    ],
)
def test_bad_configuration_is_a_local_error(encr: int, bits: int | None, integ: int | None, ek: int, ik: int) -> None:
    with pytest.raises(LocalProtocolError):
        sk_cipher(encr, bits, integ, bytes(ek), bytes(ik))


def test_repr_hides_keys() -> None:
    cipher = sk_cipher(GCM16, 128, None, b"\x42" * 20)
    assert repr(cipher) == "SKCipher(encr_id=20, icv_size=16)"


@pytest.mark.parametrize("duplicate", [copy.copy, copy.deepcopy, pickle.dumps])
def test_sk_cipher_refuses_to_be_duplicated(duplicate) -> None:  # type: ignore[no-untyped-def]
    # a duplicate would count IVs on its own and reuse them under the same key
    cipher = sk_cipher(20, 128, None, bytes(20), b"")
    with pytest.raises(LocalProtocolError):
        duplicate(cipher)
