"""Raw ESP (IP protocol 50, RFC 4303) for the asyncio driver: the socket and the IPv4 header rule.

Child SAs without UDP encapsulation (no NAT, `ChildSaCreated.udp_encap` False) send and receive ESP
directly over IP on a `socket(AF_INET or AF_INET6, SOCK_RAW, IPPROTO_ESP)` socket, which needs
CAP_NET_RAW. An IPv6 raw socket delivers the ESP packet alone (the kernel keeps the IPv6 header and
names the source in recvfrom); the IPv4 one delivers the header too, which the rule below checks.
Sending, the kernel builds the IPv4 header (protocol 50) in front of the ESP packet. Receiving, a
raw IPv4 socket delivers every ESP packet addressed to its bound address with the IPv4 header in
front (reassembled: Linux defragments before raw delivery); `split_ipv4_esp` checks that header and
strips it by its IHL, or names the reason to drop the packet. Nothing here knows SAs: the driver
looks up the SPI, checks the source address and decapsulates.

`RawEspSocket` reads at most `RAW_READ_BATCH` packets per wakeup of the event loop, so a flood cannot
starve the IKE sockets; reading and sending never raise on the network's account (a failed send is
reported as False).
"""

from __future__ import annotations

import asyncio
import enum
import socket
from collections.abc import Callable

from ..natt import ESP_MIN_UDP_PAYLOAD

__all__ = [
    "IPPROTO_ESP",
    "IPV4_MIN_HEADER",
    "ESP_MIN_PACKET",
    "RAW_READ_BATCH",
    "RawDrop",
    "RawEspUnavailable",
    "RawEspSocket",
    "split_ipv4_esp",
]

IPPROTO_ESP = 50
IPV4_MIN_HEADER = 20  # IHL 5
ESP_MIN_PACKET = ESP_MIN_UDP_PAYLOAD  # SPI + sequence number, as on UDP/4500 (the SA checks the rest)
MAX_IP_PACKET = 65535  # receive buffer: the largest IPv4 packet
RAW_READ_BATCH = 64  # packets read per event-loop wakeup
_MORE_FRAGMENTS_OR_OFFSET = 0x3FFF


class RawDrop(enum.Enum):
    """Why a packet read from the raw socket is not ESP we can use (the value is the counter name)."""

    TRUNCATED = "truncated_ip"  # shorter than 20 bytes, than its IHL, or than its total length
    NOT_IPV4 = "not_ipv4"
    BAD_IHL = "bad_ihl"  # IHL below 5
    BAD_LENGTH = "bad_ip_length"  # total length shorter than the header
    NOT_ESP = "not_esp"  # protocol field is not 50
    FRAGMENT = "ip_fragment"  # the kernel reassembles before raw delivery: never expected
    SHORT_ESP = "short_esp"  # no room for SPI and sequence number


class RawEspUnavailable(RuntimeError):
    """The raw ESP socket cannot be opened (usually: no CAP_NET_RAW). `cause` is the OSError."""

    def __init__(self, host: str, cause: OSError) -> None:
        super().__init__(
            f"raw ESP (IP protocol 50, for Child SAs without UDP encapsulation) needs "
            f"socket(AF_INET, SOCK_RAW, IPPROTO_ESP) bound to {host}, which failed: {cause.strerror or cause} "
            f"(errno {cause.errno}); it needs CAP_NET_RAW (root), or set IkeConfig.encap=True to "
            f"UDP-encapsulate ESP instead"
        )
        self.host = host
        self.cause = cause


def split_ipv4_esp(packet: bytes | bytearray | memoryview) -> tuple[str, memoryview] | RawDrop:
    """(source address, ESP packet) of an IPv4 packet as a raw socket delivers it, or why to drop it.
    Bytes after the IPv4 total length (link padding) are cut off."""
    view = memoryview(packet)
    if len(view) < IPV4_MIN_HEADER:
        return RawDrop.TRUNCATED
    if view[0] >> 4 != 4:
        return RawDrop.NOT_IPV4
    ihl = (view[0] & 0x0F) * 4
    if ihl < IPV4_MIN_HEADER:
        return RawDrop.BAD_IHL
    total = int.from_bytes(view[2:4], "big")
    if ihl > len(view) or total > len(view):
        return RawDrop.TRUNCATED
    if total < ihl:
        return RawDrop.BAD_LENGTH
    if view[9] != IPPROTO_ESP:
        return RawDrop.NOT_ESP
    if int.from_bytes(view[6:8], "big") & _MORE_FRAGMENTS_OR_OFFSET:
        return RawDrop.FRAGMENT
    if total - ihl < ESP_MIN_PACKET:
        return RawDrop.SHORT_ESP
    return socket.inet_ntoa(view[12:16]), view[ihl:total]


def open_raw_esp_socket(host: str) -> socket.socket:
    """A non-blocking raw ESP socket (IPv4 or IPv6, as `host`) bound to `host`; RawEspUnavailable if
    that is refused."""
    try:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
    except OSError as exc:
        raise RawEspUnavailable(host, exc) from exc
    try:
        sock.setblocking(False)
        sock.bind((host, 0))
    except OSError as exc:
        sock.close()
        raise RawEspUnavailable(host, exc) from exc
    return sock


PacketHandler = Callable[[memoryview, str], None]  # (ESP packet, IPv4 source address)
DropHandler = Callable[[str], None]  # counter name


class RawEspSocket:
    """A raw ESP socket on an asyncio loop: packets that pass `split_ipv4_esp` go to `on_packet`,
    the others to `on_drop` with the reason."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, on_packet: PacketHandler,
                 on_drop: DropHandler) -> None:
        self._sock: socket.socket | None = open_raw_esp_socket(host)
        self._loop = loop
        self._on_packet = on_packet
        self._on_drop = on_drop
        self.read_errors = 0
        loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(RAW_READ_BATCH):
            if self._sock is None:
                return
            try:
                packet, source = self._sock.recvfrom(MAX_IP_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. a queued ICMP error
                self.read_errors += 1
                return
            if self._sock.family == socket.AF_INET6:  # the ESP packet alone
                if len(packet) < ESP_MIN_PACKET:
                    self._on_drop(RawDrop.SHORT_ESP.value)
                else:
                    self._on_packet(memoryview(packet), str(source[0]))
                continue
            parsed = split_ipv4_esp(packet)
            if isinstance(parsed, RawDrop):
                self._on_drop(parsed.value)
            else:
                self._on_packet(parsed[1], parsed[0])

    def sendto(self, esp_packet: bytes, address: str) -> bool:
        """Send one ESP packet to `address` (the kernel adds the IPv4 header); False if it failed."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto(esp_packet, (address, 0))
        except OSError:  # full socket buffer, no route...: ESP is datagrams, the upper layer retries
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
