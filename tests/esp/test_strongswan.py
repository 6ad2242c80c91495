"""ESP against a real peer: two strongSwan 5.9.8 daemons (userland ESP, kernel-libipsec, UDP-encapsulated)
in network namespaces, using the shared harness in tests/interop (see its README).

charon(left) -> charon(right) traffic is captured on the veth and decapsulated by our inbound SA with
the key charon logged (`chd = 4`); a packet made by our outbound SA with that same key is injected
towards charon(right), which must decrypt it and deliver its inner UDP datagram to a socket. This checks
the data plane against strongSwan independently of ikev2lib's own IKE engine.
"""

from __future__ import annotations

import struct
from pathlib import Path
from types import ModuleType

import pytest

from tests.interop.capture import Capture, read_pcap
from tests.interop.fixtures import CharonFactory, charon_factory, netns_pair, require_interop  # noqa: F401 (fixtures)
from tests.interop.ikev2lib_peer import udp_ipv4_packet, udp_payload_of
from tests.interop.netns import NamespacePair
from tests.interop.strongswan import CharonSettings, logged_child_keys, psk_connection_pair
from tests.interop.traffic import udp_receive, udp_send

from ikev2lib.esp import errors

pytestmark = pytest.mark.interop

LEFT_INNER, RIGHT_INNER = "10.1.0.1", "10.2.0.1"
PORT = 5002
DATAGRAMS = 3
RECEIVE_TIMEOUT = 10.0  # seconds the receiver in a namespace waits
NATT_PORT = 4500
INJECT_SEQ = 1000  # our injected packets' first sequence number: above anything charon(left) sent
INJECT_TRIES = 5
INJECT_INTERVAL = 0.05  # seconds between injected packets


def esp_datagrams(pcap: Path, src: str) -> list[tuple[int, int, bytes]]:
    """(sport, dport, payload) of the UDP/4500 ESP datagrams sent by `src` (no IKE, no keepalives)."""
    return [(d.sport, d.dport, d.payload) for d in read_pcap(pcap)
            if d.src == src and d.dport == NATT_PORT and len(d.payload) > 8 and d.payload[:4] != bytes(4)]  # fmt: skip


@pytest.mark.parametrize("esp", ["aes128gcm16", "aes256gcm16", "chacha20poly1305"])
def test_esp_with_strongswan_both_ways(backend: ModuleType, netns_pair: NamespacePair,
                                       charon_factory: CharonFactory, tmp_path: Path, esp: str) -> None:  # fmt: skip
    left_cfg, right_cfg = psk_connection_pair(netns_pair.left_addr, netns_pair.right_addr, esp_proposals=[esp])
    right = charon_factory(netns_pair.right, "right", CharonSettings(log_levels={"default": 1, "chd": 4}))
    right.load(right_cfg)
    left = charon_factory(netns_pair.left, "left")
    left.load(left_cfg)
    payloads = [b"strongswan->ikev2lib %d " % i + bytes(i * 100) for i in range(DATAGRAMS)]
    with Capture(netns_pair.right, netns_pair.right_if, tmp_path / "esp.pcap") as cap:
        left.initiate(child="net")
        right.wait_for_child("net")
        receiver = netns_pair.right.start(udp_receive, RIGHT_INNER, PORT, DATAGRAMS, RECEIVE_TIMEOUT)
        netns_pair.left.call(udp_send, LEFT_INNER, RIGHT_INNER, PORT, payloads, 0.05)
        # A barrier (the datagrams crossed before the capture stops), not the check: the receiver may
        # bind after the first datagram; the capture below sees every ESP packet either way.
        receiver.result(RECEIVE_TIMEOUT + 5)
    # Started now, so it has bound its socket by the time part 2 injects.
    injection_receiver = netns_pair.right.start(udp_receive, RIGHT_INNER, PORT, 1, RECEIVE_TIMEOUT)
    keys = logged_child_keys(right.log_text())
    assert keys, "charon logged no Child SA keys"
    key_i = keys[-1]["encr_i"]  # initiator (left) -> responder (right): cipher key || salt
    frames = esp_datagrams(cap.path, netns_pair.left_addr)
    assert len(frames) >= DATAGRAMS
    spi = int.from_bytes(frames[0][2][:4], "big")

    # 1. charon's packets, decapsulated by us (UDP-encapsulated SA: the frame carries the UDP header).
    inbound = backend.EspSA(spi, esp, key_i, "inbound", "tunnel", udp_encap=(NATT_PORT, NATT_PORT))
    inner_payloads = []
    for sport, dport, payload in frames:
        frame = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        nh, inner = inbound.decap(frame)
        assert nh == 4
        parsed = udp_payload_of(inner)
        if parsed is not None and parsed[3] == PORT:
            inner_payloads.append(parsed[4])
    assert inner_payloads == payloads
    with pytest.raises(errors.EspReplayError):  # and the window holds against a replay
        inbound.decap(struct.pack("!HHHH", *frames[0][:2], 8 + len(frames[0][2]), 0) + frames[0][2])

    # 2. Our packet, with the same key and SPI, accepted by charon(right) and delivered to a socket.
    outbound = backend.EspSA(spi, esp, key_i, "outbound", "tunnel")
    outbound.advance_sequence(INJECT_SEQ)
    message = b"ikev2lib->strongswan"
    inner = udp_ipv4_packet(LEFT_INNER, RIGHT_INNER, 40000, PORT, message)
    esp_packets = [outbound.encap(inner) for _ in range(INJECT_TRIES)]  # fresh sequence numbers
    # Sent from another port than charon's 4500 (as after a NAT). Repeated a few times with fresh
    # sequence numbers in case the receiver is still binding; it keeps the first datagram.
    netns_pair.left.call(udp_send, netns_pair.left_addr, netns_pair.right_addr, NATT_PORT, esp_packets,
                         INJECT_INTERVAL)  # fmt: skip
    got = [p for p, _ in injection_receiver.result(RECEIVE_TIMEOUT + 5)]
    assert got == [message], right.tail_log(25)
