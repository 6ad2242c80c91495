"""Hostile input: every bad packet is refused with a typed error and a counted reason; never a crash,
never plaintext before (or without) a verified ICV; the two back ends agree packet by packet."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2lib.esp import EspError, backends, errors
from tests.esp.crafted import seal
from tests.esp.helpers import ALGS, ipv4, ipv6, keymat, pair

SPI = 0x1000


@pytest.mark.parametrize("alg", ["aes128gcm16", "aes256gcm8", "aes192gcm12", "chacha20poly1305", "aes128-sha1",
                                 "aes256-sha256", "aes192-sha384", "aes256-sha512"])  # fmt: skip
def test_every_single_bit_flip_is_rejected(backend: ModuleType, alg: str) -> None:
    out, inb = pair(backend, alg, spi=SPI)
    out.advance_sequence(5)  # no flip of 5 gives 0, so every flipped number passes the window pre-check
    packet = out.encap(ipv4(b"secret payload"))
    for bit in range(len(packet) * 8):
        bad = bytearray(packet)
        bad[bit // 8] ^= 0x80 >> (bit % 8)
        expected = errors.EspUnknownSpiError if bit < 32 else errors.EspAuthenticationError
        with pytest.raises(expected):
            inb.decap(bytes(bad))
    assert inb.stats.packets == 0
    assert inb.decap(packet)[1] == ipv4(b"secret payload")


def test_decap_into_leaves_no_plaintext_on_failure(backend: ModuleType) -> None:
    out, inb = pair(backend)
    secret = ipv4(b"S" * 200)
    packet = bytearray(out.encap(secret))
    packet[-1] ^= 1  # only the ICV is wrong: the ciphertext decrypts to the real plaintext
    buf = bytearray(b"\xaa" * 2048)
    with pytest.raises(errors.EspAuthenticationError):
        inb.decap_into(bytes(packet), buf)
    assert set(buf) <= {0xAA, 0x00}  # untouched or wiped, never plaintext


def crafted_sa(backend: ModuleType, mode: str = "tunnel") -> object:
    return backend.EspSA(SPI, "aes128gcm16", keymat("aes128gcm16"), "inbound", mode)


def craft(plaintext: bytes, seq: int = 1) -> bytes:
    return seal("aes128gcm16", keymat("aes128gcm16"), SPI, seq, plaintext)


@pytest.mark.parametrize(
    "plaintext, exc",
    [
        (ipv4(b"abcd") + b"\x01\x03\x02\x04", errors.EspPaddingError),  # pad bytes not 1, 2
        (b"\x09\x04", errors.EspPaddingError),  # pad length 9 > payload
        (ipv4(b"abc") + b"\x01\x01\x11", errors.EspMalformedError),  # next header 17 in tunnel mode
        (ipv4(b"abc") + b"\x01\x01\x29", errors.EspMalformedError),  # says IPv6, carries IPv4
        (ipv4(b"abc")[:10] + b"\x01\x01\x04", errors.EspMalformedError),  # truncated inner header
        (ipv4(b"abc") + b"\x01\x01\x3b", errors.EspDummyPacket),  # next header 59: dummy
    ],
)
def test_authentic_but_bad_trailer(backend: ModuleType, plaintext: bytes, exc: type[EspError]) -> None:
    sa = crafted_sa(backend)
    buf = bytearray(b"\xaa" * 512)
    with pytest.raises(exc):
        sa.decap_into(craft(plaintext), buf)  # type: ignore[attr-defined]
    assert set(buf) <= {0xAA, 0x00}
    assert sa.stats.packets == 0  # type: ignore[attr-defined]


def test_bytes_after_the_inner_packet_are_tfc_padding(backend: ModuleType) -> None:
    sa = crafted_sa(backend)
    nh, inner = sa.decap(craft(ipv4(b"ab") + b"\x00\x00\x04"))  # type: ignore[attr-defined]
    assert (nh, inner) == (4, ipv4(b"ab"))


def test_inner_length_beyond_payload_is_malformed(backend: ModuleType) -> None:
    inner = bytearray(ipv4(b"abc"))
    inner[2:4] = (200).to_bytes(2, "big")  # IP total length larger than what was sent
    with pytest.raises(errors.EspMalformedError):
        crafted_sa(backend).decap(craft(bytes(inner) + b"\x01\x01\x04"))  # type: ignore[attr-defined]


def test_tfc_padding_is_stripped(backend: ModuleType) -> None:
    out, inb = pair(backend)
    for inner in (ipv4(b"x" * 5), ipv6(b"y" * 7)):
        packet = out.encap(inner, tfc_padding=300)
        assert len(packet) > len(inner) + 300
        assert inb.decap(packet)[1] == inner


@pytest.mark.parametrize("alg", ["aes128gcm16", "aes256-sha256"])
@pytest.mark.parametrize("cut", [0, 1, 7, 8, 15, 16, 17, 33, 40, 56, 59])
def test_truncated_packets(backend: ModuleType, cut: int, alg: str) -> None:
    out, inb = pair(backend, alg)
    packet = out.encap(ipv4())
    with pytest.raises((errors.EspMalformedError, errors.EspAuthenticationError, errors.EspUnknownSpiError)):
        inb.decap(packet[:cut])
    assert inb.stats.packets == 0


def test_oversized_packet(backend: ModuleType) -> None:
    _, inb = pair(backend)
    with pytest.raises(errors.EspMalformedError):
        inb.decap(SPI.to_bytes(4, "big") + bytes(70000))


def test_wrong_spi(backend: ModuleType) -> None:
    out, inb = pair(backend, spi=0x2000)
    _, other = pair(backend, spi=0x3000)
    with pytest.raises(errors.EspUnknownSpiError):
        other.decap(out.encap(ipv4()))
    assert other.stats.drops == {"unknown_spi": 1}


PACKET_MUTATIONS = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("extend"), st.integers(1, 40), st.just(0)),
    st.tuples(st.just("replay"), st.just(0), st.just(0)),
    st.tuples(st.just("keep"), st.just(0), st.just(0)),
)


@given(
    alg=st.sampled_from(ALGS),
    esn=st.booleans(),
    window=st.sampled_from([0, 32, 64, 1024]),
    stream=st.lists(st.tuples(st.binary(min_size=0, max_size=300), st.integers(0, 3), PACKET_MUTATIONS),
                    min_size=1, max_size=25),  # fmt: skip
    order=st.randoms(use_true_random=False),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_differential_c_vs_python(alg: str, esn: bool, window: int, stream: list, order: object) -> None:
    """Same SAs on both back ends, same (mutated, reordered) traffic: identical bytes, statuses, counters."""
    found = backends()
    c, py = found["c"], found["python"]
    key = keymat(alg, seed=7)
    sas = {}
    for name, b in (("c", c), ("python", py)):
        sas[name] = (b.EspSA(SPI, alg, key, "outbound", "tunnel", esn=esn),
                     b.EspSA(SPI, alg, key, "inbound", "tunnel", esn=esn, replay_window=window))  # fmt: skip
    packets = []
    for payload, tfc, (kind, a, b_) in stream:
        inner = ipv4(payload) if tfc % 2 == 0 else ipv6(payload)
        enc = [sas[n][0].encap(inner, tfc_padding=tfc * 10) for n in ("c", "python")]
        assert enc[0] == enc[1]
        pkt = bytearray(enc[0])
        if kind == "flip":
            pkt[a % len(pkt)] ^= 1 << b_
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
                results.append(("ok", sas[n][1].decap(pkt)))
            except EspError as exc:
                results.append((type(exc).__name__, None))
        assert results[0] == results[1]
    for i in (0, 1):
        assert sas["c"][i].stats == sas["python"][i].stats
        assert sas["c"][i].highest_sequence == sas["python"][i].highest_sequence


@given(data=st.binary(max_size=200), udp=st.booleans())
@settings(max_examples=200, deadline=None)
def test_random_bytes_never_crash(data: bytes, udp: bool) -> None:
    for b in backends().values():
        sa = b.EspSA(SPI, "aes128gcm16", keymat("aes128gcm16"), "inbound", "tunnel",
                     udp_encap=(4500, 4500) if udp else None)  # fmt: skip
        for pkt in (data, SPI.to_bytes(4, "big") + data):
            with pytest.raises(EspError):
                sa.decap(pkt)
