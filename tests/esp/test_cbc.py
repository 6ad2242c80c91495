"""AES-CBC + HMAC-SHA1/SHA2 ESP SAs (RFC 3602, RFC 2404, RFC 4868) on both back ends.

Published vectors: RFC 3602 section 4 cases #5-#8 (AES-CBC ESP packets, no ICV: the test appends an
HMAC-SHA-256-128 ICV computed independently) and RFC 4868 section 2.7.2.1 (AUTH256-1/-2, which validate the
reference ICV function used here). Cross-decryption with scapy both ways, hostile input, and a Hypothesis
differential test of the C core against the pure-Python back end.
"""

from __future__ import annotations

import hashlib
import hmac
from types import ModuleType

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

from ikev2lib.esp import EspError, EspUsageError, Status, backends, errors
from ikev2lib.esp.params import ALGORITHMS
from tests.esp.helpers import CBC_ALGS, ipv4, ipv6, keymat, out_arrays, pack, pair

SPI = 0x2000
HASHES = {"sha1": (hashlib.sha1, 12), "sha256": (hashlib.sha256, 16), "sha384": (hashlib.sha384, 24),
          "sha512": (hashlib.sha512, 32)}  # fmt: skip


def ref_icv(alg: str, integ_key: bytes, signed: bytes, seq_hi: bytes = b"") -> bytes:
    """RFC 2404 / RFC 4868 ICV: HMAC over SPI..ciphertext (|| ESN high half), leftmost bits kept."""
    digest, icv_len = HASHES[alg.split("-")[1]]
    return hmac.new(integ_key, signed + seq_hi, digest).digest()[:icv_len]


def split(alg: str, key: bytes) -> tuple[bytes, bytes]:
    n = ALGORITHMS[alg].key_len
    return key[:n], key[n:]


# ---- RFC 4868 2.7.2.1: the reference ICV function against the published authenticators ----------------

@pytest.mark.parametrize("key, data, auth", [
    (b"\x0b" * 32, b"Hi There", "198a607eb44bfbc69903a0f1cf2bbdc5"),  # AUTH256-1
    (b"Jefe" * 8, b"what do ya want for nothing?", "167f928588c5cc2eef8e3093caa0e87c"),  # AUTH256-2
])  # fmt: skip
def test_rfc4868_auth256_vectors(key: bytes, data: bytes, auth: str) -> None:
    assert ref_icv("aes128-sha256", key, data).hex() == auth


# ---- RFC 3602 section 4, cases #5-#8 -----------------------------------------------------------------

RFC3602 = [  # (name, key, spi, seq, payload, next header, packet without ICV)
    ("case5", "90d382b410eeba7ad938c46cec1a82bf", 0x4321, 1,
     "08000ebda70a00008e9c083db95b070008090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
     "202122232425262728292a2b2c2d2e2f3031323334353637", 1,
     "0000432100000001e96e8c08ab465763fd098d45dd3ff893f663c25d325c18c6a9453e194e120849"
     "a4870b66cc6b9965330013b4898dc856a4699e523a55db080b59ec3a8e4b7e52775b07d1db34ed9c"
     "538ab50c551b874aa269add047ad2d5913ac19b7cfbad4a6"),
    ("case6", "90d382b410eeba7ad938c46cec1a82bf", 0x4321, 8,
     "0800b5e8a80a0500a69c083d0b660e00777777777777777777777777", 1,
     "000043210000000869d08df7d203329db093fc4924e5bd80f51995881ec4e0c4488987ce742e8109"
     "689bb379d2d750c0d915dca346a89f75"),
    ("case7", "0123456789abcdef0123456789abcdef", 0x8765, 2,
     "45000054090400004001f988c0a87b03c0a87bc808009f76a90a0100b49c083d02a2040008090a0b"
     "0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30313233"
     "34353637", 4,
     "0000876500000002f4e765244f6407adf13dc1380f673f37773b5241a4c449225e4f3ce5ed611b0c"
     "237ca96cf74a93013c1b0ea1a0cf70f8e4ecaec78ac53aad7a0f022b859243c647752e94a859352b"
     "8a4d4d2decd136e5c177f132ad3fbfb2201ac9904c74ee0a109e0ca1e4dfe9d5a100b842f1c22f0d"),
    ("case8", "0123456789abcdef0123456789abcdef", 0x8765, 5,
     "45000044090c00004001f990c0a87b03c0a87bc80800d63caa0a0200c69c083da3de0300ffffffff"
     "ffffffffffffffffffffffffffffffffffffffffffffffffffffffff", 4,
     "000087650000000585d47224b5f3dd5d2101d4ea8dffab2215b92683819596a8047232cc00f7048f"
     "e45318e11f8a0f62ede3c3fc61203bb50f980a08c9843fd3a1b06d5c07ff9639b7eb7dfb3512e5de"
     "435e7207ed971ef3d2726d9b5ef6affc6d17a0decbb13892"),
]
INTEG_KEY = bytes(range(0x40, 0x60))  # any 32-byte HMAC-SHA-256 key: the RFC 3602 cases carry no ICV


@pytest.mark.parametrize("case", RFC3602, ids=lambda c: c[0])
def test_rfc3602_vector_transcription(case: tuple) -> None:
    _, key, spi, seq, payload, nh, packet = case
    raw = bytes.fromhex(packet)
    assert raw[:8] == spi.to_bytes(4, "big") + seq.to_bytes(4, "big")
    dec = Cipher(algorithms.AES(bytes.fromhex(key)), modes.CBC(raw[8:24])).decryptor()
    plain = dec.update(raw[24:]) + dec.finalize()
    pad = plain[-2]
    assert plain[-1] == nh and plain[: len(plain) - 2 - pad] == bytes.fromhex(payload)
    assert plain[len(plain) - 2 - pad : -2] == bytes(range(1, pad + 1))


@pytest.mark.parametrize("case", RFC3602, ids=lambda c: c[0])
def test_rfc3602_vector_decap(backend: ModuleType, case: tuple) -> None:
    _, key, spi, seq, payload, nh, packet = case
    raw = bytes.fromhex(packet)
    wire = raw + ref_icv("aes128-sha256", INTEG_KEY, raw)
    # Transport mode: the result is the payload and its next header, whatever the payload is.
    sa = backend.EspSA(spi, "aes128-sha256", bytes.fromhex(key) + INTEG_KEY, "inbound", "transport")
    if seq > 1:
        sa.advance_sequence(seq)
    assert sa.decap(wire) == (nh, bytes.fromhex(payload))
    assert sa.highest_sequence == seq
    with pytest.raises(errors.EspReplayError):
        sa.decap(wire)
    bad = backend.EspSA(spi, "aes128-sha256", bytes.fromhex(key) + bytes(32), "inbound", "transport")
    with pytest.raises(errors.EspAuthenticationError):  # same packet, another integrity key
        bad.decap(wire)


@pytest.mark.parametrize("case", RFC3602[2:], ids=lambda c: c[0])
def test_rfc3602_tunnel_vectors_decap_in_tunnel_mode(backend: ModuleType, case: tuple) -> None:
    _, key, spi, seq, payload, _, packet = case
    raw = bytes.fromhex(packet)
    sa = backend.EspSA(spi, "aes128-sha256", bytes.fromhex(key) + INTEG_KEY, "inbound", "tunnel")
    assert sa.decap(raw + ref_icv("aes128-sha256", INTEG_KEY, raw)) == (4, bytes.fromhex(payload))


# ---- our packets against an independent model ----------------------------------------------------------

@pytest.mark.parametrize("alg", CBC_ALGS)
@pytest.mark.parametrize("esn", [False, True])
def test_encap_matches_the_rfc_construction(backend: ModuleType, alg: str, esn: bool) -> None:
    key = keymat(alg)
    enc_key, integ_key = split(alg, key)
    sa = backend.EspSA(SPI, alg, key, "outbound", "transport", esn=esn)
    seq = (5 << 32) + 9 if esn else 9
    sa.advance_sequence(seq)
    payload = b"x" * 37
    packet = sa.encap(payload, next_header=17)
    icv_len = HASHES[alg.split("-")[1]][1]
    pad = -(len(payload) + 2) % 16  # RFC 3602 2.4: whole AES blocks, minimal RFC 4303 padding
    assert len(packet) == 8 + 16 + len(payload) + pad + 2 + icv_len == sa.encap_size(len(payload))
    assert packet[:8] == SPI.to_bytes(4, "big") + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    signed, icv = packet[:-icv_len], packet[-icv_len:]
    assert icv == ref_icv(alg, integ_key, signed, (seq >> 32).to_bytes(4, "big") if esn else b"")
    dec = Cipher(algorithms.AES(enc_key), modes.CBC(packet[8:24])).decryptor()
    assert dec.update(signed[24:]) + dec.finalize() == payload + bytes(range(1, pad + 1)) + bytes((pad, 17))


def test_iv_is_random_and_never_the_sequence_number(backend: ModuleType) -> None:
    out, inb = pair(backend, "aes256-sha256", spi=SPI)
    packets = [out.encap(ipv4(b"same")) for _ in range(20)]
    ivs = {p[8:24] for p in packets}
    assert len(ivs) == 20  # fresh CSPRNG output each time (RFC 3602 section 3: unpredictable IV)
    assert all(iv[8:] != p[4:8] and iv != bytes(16) for iv, p in zip((p[8:24] for p in packets), packets))
    assert [inb.decap(p)[1] for p in packets] == [ipv4(b"same")] * 20


def test_esn_high_half_is_authenticated_not_sent(backend: ModuleType) -> None:
    out, inb = pair(backend, "aes128-sha256", spi=SPI, esn=True)
    out.advance_sequence((1 << 32) + 3)
    packet = out.encap(ipv4())
    wrong = backend.EspSA(SPI, "aes128-sha256", keymat("aes128-sha256"), "inbound", esn=True)
    with pytest.raises(errors.EspAuthenticationError):  # infers high half 0: another ICV input
        wrong.decap(packet)
    inb.advance_sequence((1 << 32) + 1)
    assert inb.decap(packet)[1] == ipv4() and inb.highest_sequence == (1 << 32) + 3


def test_key_material_layout(backend: ModuleType) -> None:
    # RFC 7296 2.17: encryption key then integrity key; keywords as strongSwan spells them.
    for alg, n in (("aes128-sha256", 48), ("aes256-sha384", 80), ("aes256-sha512", 96), ("aes192-sha1", 44)):
        assert ALGORITHMS[alg].keymat_len == n
        with pytest.raises(EspUsageError):
            backend.EspSA(SPI, alg, bytes(n - 1), "outbound")
        with pytest.raises(EspUsageError):
            backend.EspSA(SPI, alg, bytes(n + 4), "outbound")
    out = backend.EspSA(SPI, "aes256-sha2_256", keymat("aes256-sha256"), "outbound")
    inb = backend.EspSA(SPI, "aes256-sha256", keymat("aes256-sha256"), "inbound")
    assert inb.decap(out.encap(ipv6()))[1] == ipv6()
    assert keymat("aes256-sha256")[:8].hex() not in repr(out)


# ---- scapy, both ways -----------------------------------------------------------------------------------

SCAPY_AUTH = {"sha1": "HMAC-SHA1-96", "sha256": "SHA2-256-128", "sha384": "SHA2-384-192", "sha512": "SHA2-512-256"}
SCAPY_CASES = ["aes128-sha256", "aes256-sha256", "aes192-sha384", "aes256-sha512", "aes128-sha1"]


def scapy_sa(alg: str, esn: bool = False, nat_t: bool = False) -> SecurityAssociation:
    enc_key, integ_key = split(alg, keymat(alg))
    return SecurityAssociation(ESP, spi=SPI, crypt_algo="AES-CBC", crypt_key=enc_key,
                               auth_algo=SCAPY_AUTH[alg.split("-")[1]], auth_key=integ_key,
                               tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"),
                               nat_t_header=UDP(sport=4500, dport=4500) if nat_t else None,
                               esn_en=esn, esn=0)  # fmt: skip


def inner_v4() -> IP:
    return IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(id=7, seq=1) / Raw(b"ping" * 20)


@pytest.mark.parametrize("alg", SCAPY_CASES)
@pytest.mark.parametrize("esn", [False, True])
def test_scapy_encrypts_we_decrypt(backend: ModuleType, alg: str, esn: bool) -> None:
    ssa = scapy_sa(alg, esn)
    ours = backend.EspSA(SPI, alg, keymat(alg), "inbound", "tunnel", esn=esn)
    for _ in range(3):
        inner = inner_v4()
        assert ours.decap(bytes(ssa.encrypt(inner)[ESP])) == (4, bytes(inner))
    assert ours.highest_sequence == 3


@pytest.mark.parametrize("alg", SCAPY_CASES)
@pytest.mark.parametrize("esn", [False, True])
def test_we_encrypt_scapy_decrypts(backend: ModuleType, alg: str, esn: bool) -> None:
    ssa = scapy_sa(alg, esn)
    ours = backend.EspSA(SPI, alg, keymat(alg), "outbound", "tunnel", esn=esn)
    for _ in range(3):
        inner = inner_v4()
        packet = IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / Raw(ours.encap(bytes(inner)))))
        assert bytes(ssa.decrypt(packet)) == bytes(inner)


def test_scapy_udp_encapsulation_both_ways(backend: ModuleType) -> None:
    ssa = scapy_sa("aes256-sha256", nat_t=True)
    key = keymat("aes256-sha256")
    inb = backend.EspSA(SPI, "aes256-sha256", key, "inbound", "tunnel", udp_encap=(4500, 4500))
    out = backend.EspSA(SPI, "aes256-sha256", key, "outbound", "tunnel", udp_encap=(4500, 4500))
    inner = inner_v4()
    assert inb.decap(bytes(ssa.encrypt(inner)[UDP])) == (4, bytes(inner))
    frame = out.encap(bytes(inner))
    assert int.from_bytes(frame[4:6], "big") == len(frame)
    assert bytes(ssa.decrypt(IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(frame))))) == bytes(inner)


# ---- hostile input ------------------------------------------------------------------------------------

def seal_cbc(alg: str, key: bytes, seq: int, plaintext: bytes) -> bytes:
    """An authentic packet around any (block-aligned) plaintext, built the way a peer with the keys would."""
    enc_key, integ_key = split(alg, key)
    iv = bytes(range(16))
    enc = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).encryptor()
    signed = SPI.to_bytes(4, "big") + seq.to_bytes(4, "big") + iv + enc.update(plaintext) + enc.finalize()
    return signed + ref_icv(alg, integ_key, signed)


@pytest.mark.parametrize(
    "plaintext, exc",
    [
        (ipv4(b"abcdef") + b"\x01\x02\x03\x05\x04\x04", errors.EspPaddingError),  # pad bytes not 1..4
        (b"\x00" * 14 + b"\x0f\x04", errors.EspPaddingError),  # pad length 15 > 14 bytes before it
        (ipv4(b"abcdefghi") + b"\x01\x01\x11", errors.EspMalformedError),  # next header 17 in tunnel mode
        (ipv4(b"abcdefghi") + b"\x01\x01\x3b", errors.EspDummyPacket),  # next header 59
    ],
)
def test_authentic_but_bad_trailer(backend: ModuleType, plaintext: bytes, exc: type[EspError]) -> None:
    assert len(plaintext) % 16 == 0
    key = keymat("aes256-sha256")
    sa = backend.EspSA(SPI, "aes256-sha256", key, "inbound", "tunnel")
    buf = bytearray(b"\xaa" * 512)
    with pytest.raises(exc):
        sa.decap_into(seal_cbc("aes256-sha256", key, 1, plaintext), buf)
    assert set(buf) <= {0xAA, 0x00} and sa.stats.packets == 0


def test_ciphertext_not_whole_blocks_is_malformed(backend: ModuleType) -> None:
    _, inb = pair(backend, "aes128-sha256", spi=SPI)
    key = keymat("aes128-sha256")
    good = seal_cbc("aes128-sha256", key, 1, ipv4(b"abcdefghi") + b"\x01\x01\x04")
    for bad in (good[:8 + 16 + 8] + good[-16:], good[:-16] + b"\x00" * 3 + good[-16:], good[:8 + 16 + 16]):
        with pytest.raises(errors.EspMalformedError):
            inb.decap(bad)
    assert inb.decap(good)[1] == ipv4(b"abcdefghi")


def test_icv_is_checked_before_anything_is_decrypted(backend: ModuleType) -> None:
    out, inb = pair(backend, "aes256-sha512", spi=SPI)
    packet = bytearray(out.encap(ipv4(b"S" * 200)))
    packet[-1] ^= 1  # only the ICV is wrong: the ciphertext itself would decrypt to the real plaintext
    buf = bytearray(b"\xaa" * 2048)
    with pytest.raises(errors.EspAuthenticationError):
        inb.decap_into(bytes(packet), buf)
    assert buf == bytearray(b"\xaa" * 2048)  # not even wiped: nothing was ever written
    assert inb.stats.drops == {"auth_failed": 1}


def test_batches(backend: ModuleType) -> None:
    out1, in1 = pair(backend, "aes128-sha256", spi=0x1111)
    out2, in2 = pair(backend, "aes128gcm16", spi=0x2222)  # CBC and AEAD SAs in one table
    inners = [ipv4(bytes([i]) * i) for i in range(8)]
    buf, offs, lens = pack(inners)
    o_buf, o_offs, o_lens, _, sts = out_arrays(8, 64 * 1024)
    assert out1.encap_batch(buf, offs, lens, o_buf, o_offs, o_lens, sts) == 8
    frames = [bytes(o_buf[o : o + n]) for o, n in zip(o_offs, o_lens)]
    corrupt = bytearray(frames[2])
    corrupt[30] ^= 4
    wire = frames[:2] + [bytes(corrupt), out2.encap(ipv4(b"gcm")), frames[0]] + frames[2:]
    table = backends()[backend.BACKEND].SATable([in1, in2])
    w_buf, w_offs, w_lens = pack(wire)
    d_buf, d_offs, d_lens, nhs, d_sts = out_arrays(len(wire), 64 * 1024)
    assert table.decap_batch(w_buf, w_offs, w_lens, d_buf, d_offs, d_lens, nhs, d_sts) == 9
    assert list(d_sts) == [0, 0, Status.AUTH_FAILED, 0, Status.REPLAYED] + [0] * 6
    got = [bytes(d_buf[o : o + n]) for o, n, s in zip(d_offs, d_lens, d_sts) if s == 0]
    assert got == inners[:2] + [ipv4(b"gcm")] + inners[2:]


MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 40), st.just(0)),
    st.tuples(st.just("replay"), st.just(0), st.just(0)),
    st.tuples(st.just("keep"), st.just(0), st.just(0)),
)


@given(
    alg=st.sampled_from(CBC_ALGS),
    esn=st.booleans(),
    window=st.sampled_from([0, 32, 1024]),
    stream=st.lists(st.tuples(st.binary(max_size=300), st.integers(0, 3), st.booleans(), MUTATIONS),
                    min_size=1, max_size=20),  # fmt: skip
    order=st.randoms(use_true_random=False),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_differential_c_vs_python(alg: str, esn: bool, window: int, stream: list, order: object) -> None:
    """Random IVs make packets differ, so each back end's packets go to both receivers: same verdicts."""
    found = backends()
    key = keymat(alg, seed=3)
    outs = {n: found[n].EspSA(SPI, alg, key, "outbound", "tunnel", esn=esn) for n in ("c", "python")}
    ins = {n: found[n].EspSA(SPI, alg, key, "inbound", "tunnel", esn=esn, replay_window=window)
           for n in ("c", "python")}  # fmt: skip
    packets = []
    for payload, tfc, from_c, (kind, a, b) in stream:
        inner = ipv4(payload) if tfc % 2 == 0 else ipv6(payload)
        pkt = bytearray(outs["c" if from_c else "python"].encap(inner, tfc_padding=tfc * 10))
        outs["python" if from_c else "c"].advance_sequence(outs["c" if from_c else "python"].next_sequence)
        if kind == "flip":
            pkt[a % len(pkt)] ^= 1 << b
        elif kind == "cut":
            pkt = pkt[: a % len(pkt)]
        elif kind == "extend":
            pkt += bytes(a)
        packets.append(bytes(pkt))
        if kind == "replay":
            packets.append(bytes(pkt))
    order.shuffle(packets)  # type: ignore[attr-defined]
    for pkt in packets:
        results = []
        for n in ("c", "python"):
            try:
                results.append(("ok", ins[n].decap(pkt)))
            except EspError as exc:
                results.append((type(exc).__name__, None))
        assert results[0] == results[1]
    assert ins["c"].stats == ins["python"].stats
    assert ins["c"].highest_sequence == ins["python"].highest_sequence


def test_lifetimes_and_sequence_overflow(backend: ModuleType) -> None:
    from ikev2lib.esp import Lifetime, LifetimeState

    out, inb = pair(backend, "aes128-sha256", spi=SPI, lifetime=Lifetime(soft_packets=1, hard_packets=2))
    packets = [out.encap(ipv4()) for _ in range(2)]
    assert out.lifetime_state is LifetimeState.HARD
    with pytest.raises(errors.EspLifetimeExpiredError):
        out.encap(ipv4())
    inb.decap(packets[0])
    assert inb.lifetime_state is LifetimeState.SOFT
    inb.decap(packets[1])
    with pytest.raises(errors.EspLifetimeExpiredError):
        inb.decap(packets[1])
    top = backend.EspSA(SPI, "aes256-sha512", keymat("aes256-sha512"), "outbound")
    top.advance_sequence(2**32 - 1)
    top.encap(ipv4())
    with pytest.raises(errors.SequenceOverflowError):
        top.encap(ipv4())
