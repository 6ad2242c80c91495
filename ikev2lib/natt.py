"""NAT traversal rules shared by the engine, the drivers and the ESP back ends.

RFC 3948 2.2/2.3: on UDP port 4500 an IKE message is prefixed with the four-zero-octet non-ESP marker,
a single 0xFF octet is a NAT-keepalive, and anything else long enough to hold an SPI and a sequence
number is ESP (an SPI is never zero). `classify_udp4500` is that rule; the C data plane has its own
copy (`esp_udp_classify` in _esp_fast/esp_core.c), which a differential test holds equal to this one.

RFC 7296 2.23: NAT detection hashes SHA-1(SPIi | SPIr | IP | port).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import ipaddress

__all__ = [
    "NON_ESP_MARKER",
    "NATT_KEEPALIVE",
    "ESP_MIN_UDP_PAYLOAD",
    "UdpKind",
    "classify_udp4500",
    "natd_hash",
]

NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 2.2: IKE on the NAT-T port is prefixed with it
NATT_KEEPALIVE = b"\xff"  # RFC 3948 2.3
ESP_MIN_UDP_PAYLOAD = 8  # SPI + sequence number: the shortest payload that can be ESP
NATD_ADDRESS_CACHE = 4096  # distinct (IP, port) pairs whose packed form is kept


class UdpKind(enum.IntEnum):
    """What a UDP/4500 payload is (the values are the C data plane's ESP_UDP_* constants)."""

    KEEPALIVE = 0
    IKE = 1  # starts with the non-ESP marker; the IKE message follows it
    ESP = 2
    INVALID = 3  # too short to be anything


def classify_udp4500(payload: bytes | bytearray | memoryview) -> UdpKind:
    """Kind of one UDP/4500 datagram payload (RFC 3948)."""
    if len(payload) == 1 and payload[0] == 0xFF:
        return UdpKind.KEEPALIVE
    if len(payload) >= 4 and payload[:4] == NON_ESP_MARKER:
        return UdpKind.IKE
    if len(payload) >= ESP_MIN_UDP_PAYLOAD:
        return UdpKind.ESP
    return UdpKind.INVALID


@functools.lru_cache(maxsize=NATD_ADDRESS_CACHE)
def _natd_address(host: str, port: int) -> bytes:
    """IP | port as NAT detection hashes them (parsed once per address)."""
    try:
        packed = ipaddress.ip_address(host).packed
    except ValueError:  # a driver handing us a non-IP address string
        packed = host.encode("utf-8", "replace")
    return packed + int(port).to_bytes(2, "big")


def natd_hash(spi_i: bytes, spi_r: bytes, addr: tuple[str, int]) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port) (RFC 7296 2.23)."""
    return hashlib.sha1(spi_i + spi_r + _natd_address(addr[0], addr[1])).digest()
