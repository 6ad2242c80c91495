"""Raw ESP (IP protocol 50) in the asyncio driver: the IPv4 header rule, and hostile input through
the driver's real read loop (fed from a socketpair, so no privilege is needed), the typed error when
the raw socket cannot be opened."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.drivers import raw_esp
from ikev2lib.drivers.asyncio_udp import AsyncioIkeDriver
from ikev2lib.drivers.raw_esp import ESP_MIN_PACKET, RawDrop, RawEspUnavailable, split_ipv4_esp
from ikev2lib.esp import EspSA, backends
from ikev2lib.events import ChildSaCreated
from ikev2lib.exceptions import LocalProtocolError

PEER, OTHER, US = "192.0.2.2", "192.0.2.99", "192.0.2.1"
SPI = 0x0BADCAFE
KEY = bytes(range(20))  # aes128gcm16: key || salt
INNER = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)


def ipv4(payload: bytes, *, src: str = PEER, proto: int = 50, ihl: int = 5, total: int | None = None,
         version: int = 4, frag: int = 0) -> bytes:
    options = bytes(max(0, ihl - 5) * 4)
    length = 20 + len(options) + len(payload) if total is None else total
    header = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, length, 1, frag, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(US))
    return header + options + payload


# ---- the IPv4 header rule -------------------------------------------------------------------------


def test_valid_packet_is_stripped_by_ihl_and_cut_at_total_length() -> None:
    esp = bytes(range(40))
    assert split_ipv4_esp(ipv4(esp)) == (PEER, esp)
    src, body = split_ipv4_esp(ipv4(esp, ihl=7) + b"link padding")  # type: ignore[misc]
    assert (src, bytes(body)) == (PEER, esp)


@pytest.mark.parametrize(("packet", "reason"), [
    (b"", RawDrop.TRUNCATED),
    (ipv4(bytes(16))[:19], RawDrop.TRUNCATED),
    (ipv4(bytes(16), version=6), RawDrop.NOT_IPV4),
    (ipv4(bytes(16), ihl=4), RawDrop.BAD_IHL),
    (ipv4(bytes(16), ihl=0), RawDrop.BAD_IHL),
    (ipv4(b"", ihl=5)[:20].replace(b"\x45", b"\x4f", 1), RawDrop.TRUNCATED),  # IHL 15 > 20 bytes
    (ipv4(bytes(16), total=200), RawDrop.TRUNCATED),
    (ipv4(bytes(16), total=19), RawDrop.BAD_LENGTH),
    (ipv4(bytes(16), proto=17), RawDrop.NOT_ESP),
    (ipv4(bytes(16), frag=0x2000), RawDrop.FRAGMENT),  # more fragments
    (ipv4(bytes(16), frag=0x0010), RawDrop.FRAGMENT),  # offset
    (ipv4(bytes(ESP_MIN_PACKET - 1)), RawDrop.SHORT_ESP),
    (ipv4(bytes(16), ihl=6, total=24 + 7), RawDrop.SHORT_ESP),
])  # fmt: skip
def test_malformed_packets_are_named(packet: bytes, reason: RawDrop) -> None:
    assert split_ipv4_esp(packet) is reason


def _model(packet: bytes) -> tuple[str, bytes] | RawDrop:
    """The rule written out once more, plainly, as the reference for the property test."""
    if len(packet) < 20:
        return RawDrop.TRUNCATED
    version, ihl = packet[0] >> 4, (packet[0] & 15) * 4
    total = (packet[2] << 8) | packet[3]
    if version != 4:
        return RawDrop.NOT_IPV4
    if ihl < 20:
        return RawDrop.BAD_IHL
    if ihl > len(packet) or total > len(packet):
        return RawDrop.TRUNCATED
    if total < ihl:
        return RawDrop.BAD_LENGTH
    if packet[9] != 50:
        return RawDrop.NOT_ESP
    if ((packet[6] << 8) | packet[7]) & 0x3FFF:
        return RawDrop.FRAGMENT
    if total - ihl < 8:
        return RawDrop.SHORT_ESP
    return ".".join(str(b) for b in packet[12:16]), packet[ihl:total]


def _normal(result: tuple[str, Any] | RawDrop) -> tuple[str, bytes] | RawDrop:
    return result if isinstance(result, RawDrop) else (result[0], bytes(result[1]))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_follow_the_rule(packet: bytes) -> None:
    assert _normal(split_ipv4_esp(packet)) == _model(packet)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 15), st.integers(0, 15), st.integers(0, 200), st.sampled_from([50, 50, 17, 51, 0]),
       st.integers(0, 0xFFFF), st.binary(max_size=100))
def test_header_fields_follow_the_rule(version: int, ihl: int, total: int, proto: int, frag: int,
                                       rest: bytes) -> None:
    packet = struct.pack("!BBHHHBBH4s4s", (version << 4) | ihl, 0, total, 0, frag, 64, proto, 0,
                         socket.inet_aton(PEER), socket.inet_aton(US)) + rest
    assert _normal(split_ipv4_esp(packet)) == _model(packet)


# ---- hostile input through the driver's raw read loop --------------------------------------------


class _Connection:
    remote_addr = (PEER, 500)


class _Endpoint:
    def __init__(self) -> None:
        self.gone = False

    def connection(self, ike_sa_id: int) -> _Connection:
        if self.gone:
            raise LocalProtocolError(f"no IKE SA {ike_sa_id}")
        return _Connection()

    def next_event(self) -> None:
        return None

    def datagrams_to_send(self, now: float) -> list[Any]:
        return []

    def get_timer(self) -> None:
        return None


def _child_event(udp_encap: bool) -> ChildSaCreated:
    return ChildSaCreated(
        ike_sa_id=1, child_id=7, spi_in=SPI.to_bytes(4, "big"), spi_out=b"\x00\x00\x10\x01", proposal="aes128gcm16",
        mode="tunnel", udp_encap=udp_encap, local_ts=(), remote_ts=(),
        inbound=EspSA(SPI, "aes128gcm16", KEY, "inbound"), outbound=EspSA(0x1001, "aes128gcm16", KEY, "outbound"),
    )  # fmt: skip


async def _feed(packets: list[bytes], *, udp_encap: bool = False, gone: bool = False) -> AsyncioIkeDriver:
    """A driver whose 'raw socket' is one end of a socketpair; `packets` are written to the other end."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    loop = asyncio.get_running_loop()
    driver = AsyncioIkeDriver(loop)
    endpoint = _Endpoint()
    endpoint.gone = gone
    driver.endpoint = endpoint  # type: ignore[assignment]
    received: list[bytes] = []
    driver.esp_handler = lambda child_id, next_header, inner: received.append(bytes(inner))
    original = raw_esp.open_raw_esp_socket
    raw_esp.open_raw_esp_socket = lambda host: ours  # type: ignore[assignment]
    try:
        driver._track(_child_event(udp_encap))
        if udp_encap:
            driver._raw_socket()
    finally:
        raw_esp.open_raw_esp_socket = original  # type: ignore[assignment]
    with theirs:
        for packet in packets:
            theirs.send(packet)
        for _ in range(200):  # bounded: the reader runs at most RAW_READ_BATCH packets per wakeup
            if sum(driver.esp_drops.values()) + driver.esp_received >= len(packets):
                break
            await asyncio.sleep(0.005)
    driver.close()
    driver.received = received  # type: ignore[attr-defined]
    return driver


def _good(seq_packets: int = 1) -> list[bytes]:
    sender = EspSA(SPI, "aes128gcm16", KEY, "outbound")
    return [sender.encap(INNER) for _ in range(seq_packets)]


def test_raw_esp_from_the_peer_is_decapsulated() -> None:
    driver = asyncio.run(_feed([ipv4(p) for p in _good(3)]))
    assert (driver.esp_received, driver.esp_drops) == (3, {})
    assert driver.received == [INNER] * 3  # type: ignore[attr-defined]


def test_hostile_raw_packets_are_counted_drops() -> None:
    (good,) = _good()
    forged = good[:-1] + bytes([good[-1] ^ 1])
    packets = [
        b"\x45",  # truncated IP header
        ipv4(good, ihl=3),  # bad IHL
        ipv4(good, total=len(good) + 200),  # total length beyond the packet
        ipv4(good, proto=17),  # not ESP
        ipv4(good[:5]),  # short ESP
        ipv4(b"\x01\x02\x03\x04" + good[4:]),  # unknown SPI
        ipv4(forged),  # forged ICV
        ipv4(good, src=OTHER),  # valid ESP from someone else
        bytes(2000),
    ]
    driver = asyncio.run(_feed(packets))
    assert driver.esp_received == 0 and driver.received == []  # type: ignore[attr-defined]
    assert driver.esp_drops == {"truncated_ip": 2, "bad_ihl": 1, "not_esp": 1, "short_esp": 1, "unknown_spi": 1,
                                "decap": 1, "wrong_source": 1, "not_ipv4": 1}


def test_raw_esp_for_a_udp_encapsulated_sa_and_after_the_ike_sa_is_gone_is_dropped() -> None:
    assert asyncio.run(_feed([ipv4(p) for p in _good()], udp_encap=True)).esp_drops == {"wrong_encapsulation": 1}
    assert asyncio.run(_feed([ipv4(p) for p in _good()], gone=True)).esp_drops == {"wrong_source": 1}


def test_udp_esp_for_a_raw_sa_is_dropped() -> None:
    async def run() -> AsyncioIkeDriver:
        driver = AsyncioIkeDriver(asyncio.get_running_loop())
        driver.endpoint = _Endpoint()  # type: ignore[assignment]
        driver._inbound[SPI.to_bytes(4, "big")] = (1, 7, EspSA(SPI, "aes128gcm16", KEY, "inbound"), False)
        driver._datagram(_good()[0], (PEER, 4500), True)
        return driver

    assert asyncio.run(run()).esp_drops == {"wrong_encapsulation": 1}


# ---- no privilege: a typed error naming the cause, never silent encapsulation ---------------------


def test_without_cap_net_raw_the_driver_raises_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    async def run() -> tuple[RawEspUnavailable, RawEspUnavailable, ChildSaCreated]:
        driver = AsyncioIkeDriver(asyncio.get_running_loop())
        driver.endpoint = _Endpoint()  # type: ignore[assignment]
        driver._natt = object()  # type: ignore[assignment]  # only checked for None by send_esp
        monkeypatch.setattr(raw_esp.socket, "socket", refuse)
        event = _child_event(False)
        driver._events.put_nowait(event)  # what transmit() does with each engine event
        driver._track(event)
        first = await driver.next_event(timeout=1)
        with pytest.raises(RawEspUnavailable) as from_event:
            await driver.next_event(timeout=1)
        with pytest.raises(RawEspUnavailable) as from_send:
            driver.send_esp(7, INNER)
        assert driver.esp_sent == 0
        return from_event.value, from_send.value, first  # type: ignore[return-value]

    from_event, from_send, first = asyncio.run(run())
    assert isinstance(first, ChildSaCreated)
    for error in (from_event, from_send):
        assert isinstance(error.cause, PermissionError)
        assert "CAP_NET_RAW" in str(error) and "IPPROTO_ESP" in str(error) and "encap=True" in str(error)


@pytest.mark.parametrize("backend", sorted(backends()))
@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=120))
def test_any_esp_body_with_a_known_spi_is_decapsulated_or_counted(backend: str, body: bytes) -> None:
    # the driver's inbound path with a live SA: whatever follows the SPI, nothing escapes but a count
    driver = AsyncioIkeDriver(asyncio.new_event_loop())
    try:
        driver.endpoint = _Endpoint()  # type: ignore[assignment]
        sa = backends()[backend].EspSA(SPI, "aes128gcm16", KEY, "inbound")
        driver._inbound[SPI.to_bytes(4, "big")] = (1, 7, sa, False)
        packet = SPI.to_bytes(4, "big") + body
        parsed = split_ipv4_esp(ipv4(packet))
        if isinstance(parsed, RawDrop):
            assert len(packet) < ESP_MIN_PACKET and parsed is RawDrop.SHORT_ESP
        else:
            driver._esp(parsed[1], parsed[0])
            assert (driver.esp_received, driver.esp_drops) == (0, {"decap": 1})
    finally:
        driver.loop.close()
