"""Tunnel MTU: the largest inner packet one ESP packet carries within a path MTU (RFC 4303).

One outer packet is: outer IP header | UDP header (RFC 3948, when UDP-encapsulated) | ESP header (SPI,
sequence number) | IV | inner packet | padding | pad length, next header | ICV. The padding brings
inner packet + trailer to a multiple of 4 bytes (AEAD: RFC 4303 section 2.4) or of the 16-byte AES
block (AES-CBC: RFC 3602 section 2.4), so the tunnel MTU is rounded down to just below such a multiple.

Algorithms are the strongSwan ESP keywords `ikev2lib.esp` accepts; their ICV lengths come from its
table (`ikev2lib.esp.params.ALGORITHMS`), not from a copy here.

An inner IPv6 packet needs a link MTU of at least IPV6_MIN_MTU (1280, RFC 8200 section 5); the kernel
turns IPv6 off on a device with less. `tunnel_mtu` does not refuse a smaller result (inner IPv4 only
needs MIN_IPV4_MTU); `carries_ipv6` tells whether a tunnel MTU is enough for IPv6.
"""

from __future__ import annotations

from ikev2lib.esp.params import ALGORITHMS, CBC_ALGS

__all__ = [
    "IPV4_HEADER",
    "IPV6_HEADER",
    "UDP_HEADER",
    "ESP_HEADER",
    "ESP_TRAILER",
    "AEAD_IV",
    "CBC_IV",
    "AEAD_ALIGN",
    "CBC_ALIGN",
    "TCP_HEADER",
    "MIN_IPV4_MTU",
    "IPV6_MIN_MTU",
    "MAX_PATH_MTU",
    "MtuError",
    "esp_overhead",
    "tunnel_mtu",
    "carries_ipv6",
    "mss_for",
]

IPV4_HEADER = 20  # RFC 791 section 3.1, without options (the outer header this library writes)
IPV6_HEADER = 40  # RFC 8200 section 3, no extension headers
UDP_HEADER = 8  # RFC 768; ESP in UDP on port 4500, RFC 3948 section 2.1
ESP_HEADER = 8  # RFC 4303 section 2: SPI (4) + sequence number (4)
ESP_TRAILER = 2  # RFC 4303 sections 2.5-2.6: pad length (1) + next header (1)
AEAD_IV = 8  # AES-GCM RFC 4106 section 3.1, ChaCha20-Poly1305 RFC 7634 section 2
CBC_IV = 16  # AES-CBC RFC 3602 section 3: one cipher block
AEAD_ALIGN = 4  # RFC 4303 section 2.4: ciphertext ends on a 4-byte boundary (AEAD ciphers are stream-like)
CBC_ALIGN = 16  # RFC 3602 section 2.4: AES-CBC encrypts whole 16-byte blocks
TCP_HEADER = 20  # RFC 9293 section 3.1, no options
MIN_IPV4_MTU = 68  # RFC 791: the smallest datagram every IPv4 host must pass without fragmenting
IPV6_MIN_MTU = 1280  # RFC 8200 section 5: every IPv6 link carries at least 1280 bytes
MAX_PATH_MTU = 65535  # an IPv4 datagram's total length is 16 bits; Linux MTUs stay within it too


class MtuError(ValueError):
    """An unknown ESP algorithm, or a path MTU that cannot carry a minimum inner packet."""


def _lookup(algorithm: str) -> tuple[int, int, int]:
    """(IV length, ICV length, padding alignment) of an ESP keyword."""
    alg = ALGORITHMS.get(algorithm.lower()) if isinstance(algorithm, str) else None
    if alg is None:
        raise MtuError(f"unknown ESP algorithm {algorithm!r} (supported: {', '.join(sorted(ALGORITHMS))})")
    if alg.alg in CBC_ALGS:
        return CBC_IV, alg.icv_len, CBC_ALIGN
    return AEAD_IV, alg.icv_len, AEAD_ALIGN


def esp_overhead(algorithm: str, *, udp_encap: bool, outer_ipv6: bool) -> int:
    """Fixed bytes around the inner packet, padding not included: outer IP, UDP, ESP header, IV,
    trailer, ICV."""
    iv, icv, _ = _lookup(algorithm)
    outer = IPV6_HEADER if outer_ipv6 else IPV4_HEADER
    return outer + (UDP_HEADER if udp_encap else 0) + ESP_HEADER + iv + ESP_TRAILER + icv


def tunnel_mtu(path_mtu: int, algorithm: str, *, udp_encap: bool, outer_ipv6: bool) -> int:
    """The largest inner packet that, ESP-encapsulated with `algorithm`, fits in one outer packet of
    `path_mtu` bytes (no TFC padding). Raises MtuError for an unknown algorithm, a path MTU outside what
    the outer family allows, or a result below MIN_IPV4_MTU."""
    iv, icv, align = _lookup(algorithm)
    outer_min = IPV6_MIN_MTU if outer_ipv6 else MIN_IPV4_MTU
    if isinstance(path_mtu, bool) or not isinstance(path_mtu, int) or not outer_min <= path_mtu <= MAX_PATH_MTU:
        family = "IPv6" if outer_ipv6 else "IPv4"
        raise MtuError(f"path MTU must be an integer in [{outer_min}, {MAX_PATH_MTU}] for outer {family}, "
                       f"got {path_mtu!r}")
    outer = IPV6_HEADER if outer_ipv6 else IPV4_HEADER
    # Room for the encrypted part: inner packet + padding + trailer, a multiple of `align`.
    room = path_mtu - outer - (UDP_HEADER if udp_encap else 0) - ESP_HEADER - iv - icv
    inner = room // align * align - ESP_TRAILER
    if inner < MIN_IPV4_MTU:
        raise MtuError(f"path MTU {path_mtu} leaves {inner} bytes for inner packets with {algorithm}; "
                       f"an inner IPv4 link needs {MIN_IPV4_MTU}")
    return inner


def carries_ipv6(mtu: int) -> bool:
    """Whether a tunnel MTU is enough for inner IPv6 (RFC 8200 section 5)."""
    return mtu >= IPV6_MIN_MTU


def mss_for(mtu: int, ipv6: bool) -> int:
    """TCP MSS for a link MTU (for MSS clamping): the MTU less the IP and TCP headers, no options."""
    return mtu - (IPV6_HEADER if ipv6 else IPV4_HEADER) - TCP_HEADER
