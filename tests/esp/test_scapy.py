"""Cross-decryption with an independent ESP implementation: scapy's SecurityAssociation, both ways.

scapy 2.8 supports 'AES-GCM' and 'CHACHA20-POLY1305'. Its AES-GCM ignores crypt_icv_size when encrypting
(it always appends the full 16-byte tag through pyca's AESGCM), so truncated 8/12-byte ICVs cannot be
cross-checked with scapy; test_truncated_icv_is_the_tag_prefix checks them against pyca instead.
"""

from __future__ import annotations

from types import ModuleType

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

from tests.esp.helpers import keymat

SCAPY_ALG = {"aes128gcm16": ("AES-GCM", 16), "aes256gcm16": ("AES-GCM", 16), "aes192gcm16": ("AES-GCM", 16),
             "chacha20poly1305": ("CHACHA20-POLY1305", 16)}  # fmt: skip
KEYLEN = {"aes128gcm16": 16, "aes256gcm16": 32, "aes192gcm16": 24, "chacha20poly1305": 32}
SPI = 0x0A0B0C0D


def scapy_sa(alg: str, esn: bool = False, nat_t: bool = False, seq: int = 1) -> SecurityAssociation:
    name, icv = SCAPY_ALG[alg]
    key = keymat_for(alg)
    return SecurityAssociation(ESP, spi=SPI, seq_num=seq, crypt_algo=name, crypt_key=key, crypt_icv_size=icv,
                               tunnel_header=IP(src="192.0.2.1", dst="192.0.2.2"),
                               nat_t_header=UDP(sport=4500, dport=4500) if nat_t else None,
                               esn_en=esn, esn=0)  # fmt: skip


def keymat_for(alg: str) -> bytes:
    return keymat("aes128gcm16" if KEYLEN[alg] == 16 else "aes256gcm16" if KEYLEN[alg] == 32 else "aes192gcm16")


def inner_v4() -> IP:
    return IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(id=7, seq=1) / Raw(b"ping" * 20)


@pytest.mark.parametrize("alg", sorted(SCAPY_ALG))
@pytest.mark.parametrize("esn", [False, True])
def test_scapy_encrypts_we_decrypt(backend: ModuleType, alg: str, esn: bool) -> None:
    ssa = scapy_sa(alg, esn=esn)
    ours = backend.EspSA(SPI, alg, keymat_for(alg), "inbound", "tunnel", esn=esn)
    for i in range(3):
        inner = inner_v4()
        enc = ssa.encrypt(inner)
        nh, got = ours.decap(bytes(enc[ESP]))
        assert nh == 4
        assert got == bytes(inner)
    assert ours.highest_sequence == 3


@pytest.mark.parametrize("alg", sorted(SCAPY_ALG))
@pytest.mark.parametrize("esn", [False, True])
def test_we_encrypt_scapy_decrypts(backend: ModuleType, alg: str, esn: bool) -> None:
    ssa = scapy_sa(alg, esn=esn)
    ours = backend.EspSA(SPI, alg, keymat_for(alg), "outbound", "tunnel", esn=esn)
    for _ in range(3):
        inner = inner_v4()
        packet = IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / Raw(ours.encap(bytes(inner)))))
        dec = ssa.decrypt(packet)
        assert bytes(dec) == bytes(inner)


def test_ipv6_inner_and_tfc_padding_scapy_decrypts(backend: ModuleType) -> None:
    ssa = scapy_sa("aes128gcm16")
    ours = backend.EspSA(SPI, "aes128gcm16", keymat_for("aes128gcm16"), "outbound", "tunnel")
    inner = IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=1, dport=2) / Raw(b"x" * 33)
    esp = ours.encap(bytes(inner), tfc_padding=100)
    assert len(esp) >= 16 + len(bytes(inner)) + 100
    dec = ssa.decrypt(IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / Raw(esp))))
    assert bytes(dec)[: len(bytes(inner))] == bytes(inner)  # scapy leaves TFC padding in place


def test_udp_encapsulation_both_ways(backend: ModuleType) -> None:
    ssa = scapy_sa("aes256gcm16", nat_t=True)
    inb = backend.EspSA(SPI, "aes256gcm16", keymat_for("aes256gcm16"), "inbound", "tunnel", udp_encap=(4500, 4500))
    out = backend.EspSA(SPI, "aes256gcm16", keymat_for("aes256gcm16"), "outbound", "tunnel", udp_encap=(4500, 4500))
    inner = inner_v4()
    enc = ssa.encrypt(inner)
    assert inb.decap(bytes(enc[UDP])) == (4, bytes(inner))
    frame = out.encap(bytes(inner))
    assert frame[:4] == b"\x11\x94\x11\x94" and int.from_bytes(frame[4:6], "big") == len(frame)
    dec = ssa.decrypt(IP(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(frame))))
    assert bytes(dec) == bytes(inner)


@pytest.mark.parametrize("alg", ["aes128gcm8", "aes192gcm12", "aes256gcm8"])
def test_truncated_icv_is_the_tag_prefix(backend: ModuleType, alg: str) -> None:
    # RFC 4106 section 6: the 8/12-byte ICV is the leading bytes of the GCM tag.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    icv = int(alg.split("gcm")[1])
    key = keymat(alg)
    sa = backend.EspSA(SPI, alg, key, "outbound", "transport")
    packet = sa.encap(b"payload!!!", next_header=17)
    plaintext = b"payload!!!" + bytes([0, 17])  # 10 + 2 bytes: already 4-aligned, no padding
    full = AESGCM(key[:-4]).encrypt(key[-4:] + packet[8:16], plaintext, packet[:8])
    assert packet[16:] == full[: len(plaintext) + icv]
