"""Two ikev2lib peers (asyncio driver) in two namespaces, no NAT between them: ESP on the wire is raw
(IP protocol 50) and IKE stays on port 500; with `encap=True` ESP is UDP/4500 (RFC 3948). tshark,
given the exported ESP keys, decrypts every packet of both directions from a capture of the veth
link, an independent check of what went over the wire."""

from __future__ import annotations

from pathlib import Path

import pytest

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.events import ChildSaCreated, IkeSaEstablished, PeerDead, ProtocolErrorEvent
from ikev2lib.keyexport import esp_sa_table

from .capture import Capture, read_pcap
from .engine_pair import peers  # noqa: F401  (fixture)
from .ikev2lib_peer import IkeLibPeer, ReceivedEsp, udp_ipv4_packet, udp_payload_of
from .netns import NamespacePair
from .tshark_esp import DecodedEsp, decode_esp

PSK = b"raw esp interop psk 0123456789"
LEFT_TS, RIGHT_TS = "10.1.0.0/16", "10.2.0.0/16"
LEFT_INNER, RIGHT_INNER = "10.1.0.1", "10.2.0.1"
PACKETS = 5  # per direction
PORT = 5001


def _config(local: str, remote: str, local_ts: str, remote_ts: str, *, encap: bool = False) -> IkeConfig:
    # mobike=False: MOBIKE floats IKE to 4500 even without a NAT (RFC 4555 3.3); here the port checks
    # are about NAT-T alone (encap), so the plain case stays on 500
    return IkeConfig(local_id=local, remote_id=remote, psk=PSK, encap=encap, mobike=False,
                     children=(ChildConfig(name="net", esp_proposals="aes128gcm16-x25519", local_ts=(local_ts,),
                                           remote_ts=(remote_ts,)),))


def _send(peer: IkeLibPeer, child_id: int, src: str, dst: str, tag: str) -> list[bytes]:
    payloads = [f"{tag} {i}".encode() for i in range(PACKETS)]
    for i, payload in enumerate(payloads):
        peer.send_esp(child_id, udp_ipv4_packet(src, dst, 4000, PORT, payload, i))
    return payloads


def _received(got: list[ReceivedEsp], child_id: int) -> list[bytes]:
    assert [r.child_id for r in got] == [child_id] * len(got)
    decoded = [udp_payload_of(r.inner) for r in got]
    return [d[4] for d in decoded if d is not None]


@pytest.mark.interop
@pytest.mark.parametrize("encap", [False, True], ids=["raw-esp", "encap-forced"])
def test_ikev2lib_peers_esp_on_the_wire(netns_pair: NamespacePair, peers: list[IkeLibPeer], tmp_path: Path,
                                        encap: bool) -> None:
    ns = netns_pair
    right = IkeLibPeer(ns.right, ns.right_addr, _config("right", "left", RIGHT_TS, LEFT_TS))
    peers.append(right)
    right.start()
    left_config = _config("left", "right", LEFT_TS, RIGHT_TS, encap=encap)
    left = IkeLibPeer(ns.left, ns.left_addr, left_config)
    peers.append(left)
    left.start()
    pcap = tmp_path / "esp.pcap"
    with Capture(ns.left, ns.left_if, pcap):
        left.initiate(left_config, ns.right_addr)
        established = left.wait_for(IkeSaEstablished)
        left_child, right_child = left.wait_for(ChildSaCreated), right.wait_for(ChildSaCreated)
        assert left_child.udp_encap is right_child.udp_encap is established.udp_encap is encap
        sent_right = _send(left, left_child.child_id, LEFT_INNER, RIGHT_INNER, "left->right")
        got_right = right.wait_for_esp(PACKETS)
        sent_left = _send(right, right_child.child_id, RIGHT_INNER, LEFT_INNER, "right->left")
        got_left = left.wait_for_esp(PACKETS)
    assert _received(got_right, right_child.child_id) == sent_right
    assert _received(got_left, left_child.child_id) == sent_left
    for peer in (left, right):
        assert [e for e in peer.all_events() if isinstance(e, (ProtocolErrorEvent, PeerDead))] == []
        assert peer.call(lambda p=peer: p.driver.esp_drops if p.driver else None) == {}

    # what was on the wire, seen by tshark with the keys ikev2lib exported
    _, esp_records = left.call(left.endpoint.key_records)
    packets = decode_esp(pcap, esp_sa_table(esp_records).splitlines())
    assert len(packets) == 2 * PACKETS
    assert {(p.src, p.dst, p.udp_payload) for p in packets} == (
        {(LEFT_INNER, RIGHT_INNER, payload) for payload in sent_right}
        | {(RIGHT_INNER, LEFT_INNER, payload) for payload in sent_left})
    assert {p.spi for p in packets} == {int.from_bytes(left_child.spi_in, "big"),
                                        int.from_bytes(left_child.spi_out, "big")}
    if encap:
        assert {(p.ip_proto, p.udp_ports) for p in packets} == {(17, (4500, 4500))}
    else:
        assert {(p.ip_proto, p.udp_ports) for p in packets} == {(50, None)}
    _ike_ports_match(read_pcap(pcap), encap, packets)


def _ike_ports_match(datagrams: list, encap: bool, esp: list[DecodedEsp]) -> None:  # type: ignore[type-arg]
    """Without a NAT IKE never leaves port 500 and no UDP carries ESP; with encap it floats to 4500."""
    ports = {(d.sport, d.dport) for d in datagrams}
    if encap:
        assert (4500, 4500) in ports
    else:
        assert ports == {(500, 500)}
        assert all(p.ip_proto == 50 for p in esp)
