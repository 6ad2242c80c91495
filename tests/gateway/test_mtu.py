"""Tunnel MTU, checked against real ESP packets: an inner packet of tunnel_mtu() bytes fits in the path
MTU once encapsulated by `ikev2lib.esp.EspSA` (both back ends), and one byte more does not."""

from __future__ import annotations

import struct
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.esp import backends
from ikev2lib.esp.params import ALGORITHMS
from ikev2lib.gateway.mtu import (
    IPV4_HEADER,
    IPV6_HEADER,
    IPV6_MIN_MTU,
    MIN_IPV4_MTU,
    MtuError,
    carries_ipv6,
    esp_overhead,
    mss_for,
    tunnel_mtu,
)

SPI = 0x1234
PORTS = (4500, 4500)
PATH_MTUS = (576, 1280, 1400, 1500, 9000)
KEYWORDS = sorted(ALGORITHMS)


def _keymat(algorithm: str) -> bytes:
    return bytes(range(ALGORITHMS[algorithm].keymat_len))


def _inner_ipv4(size: int) -> bytes:
    # A UDP-ish IPv4 packet of exactly `size` bytes (total length filled in: tunnel mode reads it).
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0, 64, 17, 0, bytes([10, 1, 0, 1]),
                       bytes([10, 2, 0, 1])) + bytes(size - IPV4_HEADER)  # fmt: skip


def _outer_size(backend: ModuleType, algorithm: str, inner_size: int, *, udp_encap: bool, outer_ipv6: bool) -> int:
    sa = backend.EspSA(SPI, algorithm, _keymat(algorithm), "outbound", "tunnel",
                       udp_encap=PORTS if udp_encap else None)  # fmt: skip
    packet = sa.encap(_inner_ipv4(inner_size))  # ESP, with the UDP header when encapsulated
    return len(packet) + (IPV6_HEADER if outer_ipv6 else IPV4_HEADER)


def _check_is_maximum(backend: ModuleType, algorithm: str, path_mtu: int, udp_encap: bool, outer_ipv6: bool) -> None:
    mtu = tunnel_mtu(path_mtu, algorithm, udp_encap=udp_encap, outer_ipv6=outer_ipv6)
    fits = _outer_size(backend, algorithm, mtu, udp_encap=udp_encap, outer_ipv6=outer_ipv6)
    over = _outer_size(backend, algorithm, mtu + 1, udp_encap=udp_encap, outer_ipv6=outer_ipv6)
    label = f"{algorithm} path {path_mtu} encap={udp_encap} v6={outer_ipv6}: tunnel MTU {mtu}"
    assert fits <= path_mtu, f"{label} gives a {fits}-byte outer packet"
    assert over > path_mtu, f"{label} is not the maximum: {mtu + 1} still gives {over}"


@pytest.mark.parametrize("backend_name", ["c", "python"])
@pytest.mark.parametrize("algorithm", KEYWORDS)
def test_every_algorithm_is_exact_on_both_back_ends(backend_name: str, algorithm: str) -> None:
    backend = backends()[backend_name]
    for path_mtu in PATH_MTUS:
        for udp_encap in (False, True):
            for outer_ipv6 in (False, True):
                if outer_ipv6 and path_mtu < IPV6_MIN_MTU:
                    continue
                _check_is_maximum(backend, algorithm, path_mtu, udp_encap, outer_ipv6)


@settings(max_examples=400, deadline=None)
@given(path_mtu=st.integers(576, 9000), algorithm=st.sampled_from(KEYWORDS), udp_encap=st.booleans(),
       outer_ipv6=st.booleans())  # fmt: skip
def test_maximum_for_any_path_mtu(path_mtu: int, algorithm: str, udp_encap: bool, outer_ipv6: bool) -> None:
    if outer_ipv6 and path_mtu < IPV6_MIN_MTU:
        with pytest.raises(MtuError):
            tunnel_mtu(path_mtu, algorithm, udp_encap=udp_encap, outer_ipv6=outer_ipv6)
        return
    _check_is_maximum(backends()["c"], algorithm, path_mtu, udp_encap, outer_ipv6)


def test_known_values() -> None:
    # 1500 - 20 IPv4 - 8 ESP - 8 IV - 16 ICV = 1448 = 4 * 362; less the 2-byte trailer.
    assert tunnel_mtu(1500, "aes128gcm16", udp_encap=False, outer_ipv6=False) == 1446
    # + 8 UDP, 40 IPv6: 1500 - 40 - 8 - 8 - 8 - 16 = 1420 = 4 * 355.
    assert tunnel_mtu(1500, "aes256gcm16", udp_encap=True, outer_ipv6=True) == 1418
    # CBC: 1500 - 20 - 8 - 16 IV - 16 ICV = 1440 = 16 * 90.
    assert tunnel_mtu(1500, "aes256-sha256", udp_encap=False, outer_ipv6=False) == 1438
    # Aliases and case: strongSwan spellings as ikev2lib.esp accepts them.
    assert tunnel_mtu(1500, "AES128GCM", udp_encap=False, outer_ipv6=False) == 1446
    assert tunnel_mtu(1500, "aes128-sha2_256", udp_encap=False, outer_ipv6=False) == 1438
    assert esp_overhead("aes128gcm8", udp_encap=True, outer_ipv6=False) == 20 + 8 + 8 + 8 + 2 + 8


def test_mss() -> None:
    assert mss_for(1446, ipv6=False) == 1406
    assert mss_for(1446, ipv6=True) == 1386
    assert carries_ipv6(1280) and not carries_ipv6(1279)


@pytest.mark.parametrize("algorithm", ["aes128gcm20", "3des-sha1", "", "null"])
def test_unknown_algorithm(algorithm: str) -> None:
    with pytest.raises(MtuError, match="unknown ESP algorithm"):
        tunnel_mtu(1500, algorithm, udp_encap=False, outer_ipv6=False)


def test_path_mtu_too_small_or_out_of_range() -> None:
    with pytest.raises(MtuError, match="IPv6"):
        tunnel_mtu(1279, "aes128gcm16", udp_encap=False, outer_ipv6=True)
    with pytest.raises(MtuError):
        tunnel_mtu(MIN_IPV4_MTU - 1, "aes128gcm16", udp_encap=False, outer_ipv6=False)
    with pytest.raises(MtuError):
        tunnel_mtu(65536, "aes128gcm16", udp_encap=False, outer_ipv6=False)
    with pytest.raises(MtuError, match="inner IPv4"):
        tunnel_mtu(120, "aes256-sha512", udp_encap=True, outer_ipv6=False)
    assert isinstance(MtuError("x"), ValueError)
    # Below 1280 inner is allowed (inner IPv4 only), just not IPv6-capable.
    small = tunnel_mtu(576, "aes128gcm16", udp_encap=True, outer_ipv6=False)
    assert small >= MIN_IPV4_MTU and not carries_ipv6(small)
