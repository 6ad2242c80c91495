"""`RawEspSocket` (the asyncio driver's raw ESP, IP protocol 50) on a real kernel, IPv4 and IPv6, inside a
namespace of its own: ESP sent to the bound address arrives with its source and without any IP header
(the IPv4 header is checked and stripped, IPv6 raw sockets never deliver one), and packets too short to
be ESP are dropped by name."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest

from ikev2lib.drivers.raw_esp import IPPROTO_ESP, RawEspSocket

from .netns import Namespace

pytestmark = pytest.mark.interop

WAIT = 2.0  # seconds for the kernel to deliver two datagrams on loopback


def _exchange(host: str) -> tuple[list[tuple[bytes, str]], list[str]]:
    async def body() -> tuple[list[tuple[bytes, str]], list[str]]:
        got: list[tuple[bytes, str]] = []
        drops: list[str] = []
        raw = RawEspSocket(asyncio.get_running_loop(), host, lambda p, src: got.append((bytes(p), src)),
                           drops.append)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_RAW, IPPROTO_ESP) as sender:
            sender.sendto(b"\x00\x00\x10\x01\x00\x00\x00\x01" + b"ciphertext", (host, 0))
            sender.sendto(b"\x00\x01", (host, 0))  # no room for SPI and sequence number
            for _ in range(int(WAIT / 0.05)):
                if len(got) + len(drops) >= 2:
                    break
                await asyncio.sleep(0.05)
        raw.close()
        return got, drops
    return asyncio.run(body())


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_raw_esp_socket_delivers_esp_and_names_short_packets(require_interop: None, host: str) -> None:
    ns = Namespace.create(f"ikt-raw-{secrets.token_hex(3)}")
    try:
        if ":" in host:
            ns.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.lo.disable_ipv6=0"])
        got, drops = ns.call(_exchange, host)
    finally:
        ns.close()
    # on loopback the sender's copy reaches the same socket: every delivery is the one packet or a drop
    assert (b"\x00\x00\x10\x01\x00\x00\x00\x01ciphertext", host) in got
    assert set(got) == {(b"\x00\x00\x10\x01\x00\x00\x00\x01ciphertext", host)}
    assert drops and set(drops) == {"short_esp"}
