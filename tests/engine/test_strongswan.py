"""ikev2lib against a real strongSwan 5.9.8 (charon in a network namespace, userland ESP).

Both roles with PSK, several proposal sets, INVALID_KE_PAYLOAD in both directions, Child SA and IKE SA
rekeying, DPD, delete, and ESP packets in both directions through charon's libipsec TUN device.
The harness is tests/interop (namespaces, charon, IkeLibPeer running our asyncio driver).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interop.fixtures import charon_factory, netns_pair, require_interop  # noqa: E402,F401
from interop.ikev2lib_peer import IkeLibPeer, udp_ipv4_packet, udp_payload_of  # noqa: E402
from interop.netns import NamespacePair  # noqa: E402
from interop.strongswan import CharonSettings, psk_connection_pair  # noqa: E402
from interop.traffic import udp_receive, udp_send  # noqa: E402

from ikev2lib.config import ChildConfig, IkeConfig  # noqa: E402
from ikev2lib.proposals import parse_proposals, proposal_to_keywords  # noqa: E402
from ikev2lib.wire import ProtocolId  # noqa: E402
from ikev2lib.events import (  # noqa: E402
    ChildSaCreated,
    ChildSaDeleted,
    ChildSaRekeyed,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
)

pytestmark = pytest.mark.interop

PSK = "interop-test-psk-0123456789abcdef"
LEFT_NET, RIGHT_NET = "10.1.0.0/16", "10.2.0.0/16"
LEFT_INNER, RIGHT_INNER = "10.1.0.1", "10.2.0.1"


def _our_config(ike: str, esp: str, *, initiator: bool) -> IkeConfig:
    return IkeConfig(
        ike_proposals=ike,
        local_id="left",
        remote_id="right",
        psk=PSK.encode(),
        children=(ChildConfig(name="net", esp_proposals=esp, local_ts=(LEFT_NET,), remote_ts=(RIGHT_NET,)),),
        encap=initiator,  # libipsec peers use UDP encapsulation anyway
    )


def _esp_both_ways(pair: NamespacePair, peer: IkeLibPeer, child_id: int, port: int) -> None:
    """Our ESP reaches a socket behind charon, and charon's ESP reaches us, decrypted."""
    receiver = pair.right.start(udp_receive, RIGHT_INNER, port, 3, 10.0)
    import time

    time.sleep(0.3)  # let the receiver bind
    for i in range(3):
        peer.send_esp(child_id, udp_ipv4_packet(LEFT_INNER, RIGHT_INNER, 40000, port, f"to-charon-{i}".encode(), i))
    got = receiver.result(15.0)
    assert sorted(payload for payload, _ in got) == [f"to-charon-{i}".encode() for i in range(3)]
    before = len(peer.esp)
    pair.right.call(udp_send, RIGHT_INNER, LEFT_INNER, port, [f"from-charon-{i}".encode() for i in range(3)], 0.05)
    packets = peer.wait_for_esp(before + 3)[before:]
    payloads = sorted(udp_payload_of(p.inner)[4] for p in packets if udp_payload_of(p.inner))  # type: ignore[index]
    assert payloads == [f"from-charon-{i}".encode() for i in range(3)]


def _start_charon_responder(pair, factory, *, proposals, esp, right_proposals=None, dpd=None):  # type: ignore[no-untyped-def]
    _, right_cfg = psk_connection_pair(
        pair.left_addr,
        pair.right_addr,
        proposals=proposals,
        esp_proposals=esp,
        right_proposals=right_proposals,
        psk=PSK,
        **({"dpd_delay": dpd} if dpd else {}),
    )
    charon = factory(pair.right, "right", CharonSettings(log_levels={"ike": 2, "cfg": 2}))
    charon.load(right_cfg)
    return charon


@pytest.mark.parametrize(
    "ike,esp",
    [
        ("aes128gcm16-prfsha256-x25519", "aes128gcm16"),
        ("aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
        ("chacha20poly1305-prfsha512-curve25519", "chacha20poly1305"),
        ("aes256-sha256-modp2048", "aes128gcm16"),
    ],
)
def test_we_initiate_to_charon(netns_pair: NamespacePair, charon_factory, ike: str, esp: str) -> None:  # type: ignore[no-untyped-def]
    charon = _start_charon_responder(netns_pair, charon_factory, proposals=[ike], esp=[esp])
    with IkeLibPeer(netns_pair.left, netns_pair.left_addr) as peer:
        sa_id = peer.initiate(_our_config(ike, esp, initiator=True), netns_pair.right_addr)
        established = peer.wait_for(IkeSaEstablished)
        child = peer.wait_for(ChildSaCreated)
        canonical = proposal_to_keywords(parse_proposals(ike, ProtocolId.IKE)[0])
        assert established.proposal == canonical and established.udp_encap
        sa = charon.wait_for_ike("conn")
        assert sa.spi_i == established.spi_i.hex() and sa.spi_r == established.spi_r.hex()
        theirs = charon.wait_for_child("net")
        assert theirs.spi_in == child.spi_out.hex() and theirs.spi_out == child.spi_in.hex()
        assert theirs.encap
        _esp_both_ways(netns_pair, peer, child.child_id, 5001)
        peer.request("delete_ike_sa", sa_id)
        peer.wait_for(IkeSaDeleted)
        charon.wait_for_no_sas()


def test_we_initiate_rekey_dpd_and_delete(netns_pair: NamespacePair, charon_factory) -> None:  # type: ignore[no-untyped-def]
    ike, esp = "aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519"
    charon = _start_charon_responder(netns_pair, charon_factory, proposals=[ike], esp=[esp])
    with IkeLibPeer(netns_pair.left, netns_pair.left_addr) as peer:
        sa_id = peer.initiate(_our_config(ike, esp, initiator=True), netns_pair.right_addr)
        first = peer.wait_for(ChildSaCreated)
        charon.wait_for_child("net")

        peer.request("rekey_child_sa", sa_id, first.child_id)  # with PFS (x25519 in the ESP proposal)
        rekeyed = peer.wait_for(ChildSaRekeyed)
        peer.wait_for(ChildSaDeleted, lambda e: e.child_id == first.child_id)
        charon.wait_for_child("net", where=lambda c: c.spi_in == rekeyed.spi_out.hex())
        _esp_both_ways(netns_pair, peer, rekeyed.child_id, 5002)

        old = peer.all_events()[0]
        assert isinstance(old, IkeSaEstablished)
        peer.request("rekey_ike_sa", sa_id)
        new = peer.wait_for(IkeSaRekeyed)
        charon.wait_for_ike_gone(old.spi_i.hex())
        sa = charon.wait_for_ike("conn")
        assert (sa.spi_i, sa.spi_r) == (new.spi_i.hex(), new.spi_r.hex())
        _esp_both_ways(netns_pair, peer, rekeyed.child_id, 5003)  # the Child SA survived the IKE rekey

        peer.request("send_dpd", sa_id)
        charon.wait_for_log(r"received DPD|INFORMATIONAL request 2 \[ \]|parsed INFORMATIONAL request \d+ \[ \]")
        peer.request("delete_ike_sa", sa_id)
        peer.wait_for(IkeSaDeleted)
        charon.wait_for_no_sas()


def test_invalid_ke_retry_when_we_initiate(netns_pair: NamespacePair, charon_factory) -> None:  # type: ignore[no-untyped-def]
    charon = _start_charon_responder(
        netns_pair,
        charon_factory,
        proposals=["aes128gcm16-prfsha256-ecp256"],
        esp=["aes128gcm16"],
    )
    with IkeLibPeer(netns_pair.left, netns_pair.left_addr) as peer:
        peer.initiate(_our_config("aes128gcm16-prfsha256-x25519-ecp256", "aes128gcm16", initiator=True), netns_pair.right_addr)
        established = peer.wait_for(IkeSaEstablished)
        assert established.proposal.endswith("ecp256")
        charon.wait_for_log(r"unacceptable, requesting ECP_256")
        charon.wait_for_child("net")


def _start_charon_initiator(pair, factory, *, proposals, esp):  # type: ignore[no-untyped-def]
    left_cfg, _ = psk_connection_pair(pair.left_addr, pair.right_addr, proposals=proposals, esp_proposals=esp, psk=PSK)
    charon = factory(pair.left, "left", CharonSettings(log_levels={"ike": 2, "cfg": 2}))
    charon.load(left_cfg)
    return charon


def _our_responder() -> IkeConfig:
    return IkeConfig(
        ike_proposals="aes128gcm16-prfsha256-ecp256,aes128gcm16-prfsha256-x25519",
        local_id="right",
        remote_id="left",
        psk=PSK.encode(),
        children=(
            ChildConfig(name="net", esp_proposals="aes128gcm16-x25519,aes128gcm16", local_ts=(RIGHT_NET,), remote_ts=(LEFT_NET,)),
        ),
    )


def test_charon_initiates_to_us_rekeys_and_deletes(netns_pair: NamespacePair, charon_factory) -> None:  # type: ignore[no-untyped-def]
    # our responder lists ecp256 first, but picks the first of charon's proposals it accepts (x25519)
    charon = _start_charon_initiator(
        netns_pair, charon_factory, proposals=["aes128gcm16-prfsha256-x25519"], esp=["aes128gcm16-x25519"]
    )
    with IkeLibPeer(netns_pair.right, netns_pair.right_addr, _our_responder()) as peer:
        charon.initiate(child="net")
        established = peer.wait_for(IkeSaEstablished)
        child = peer.wait_for(ChildSaCreated)
        assert not established.is_initiator and established.remote_id == "left"
        theirs = charon.wait_for_child("net")
        assert theirs.spi_in == child.spi_out.hex()

        charon.rekey(child="net")
        rekeyed = peer.wait_for(ChildSaRekeyed)
        peer.wait_for(ChildSaDeleted, lambda e: e.child_id == child.child_id)
        charon.wait_for_child("net", where=lambda c: c.spi_in == rekeyed.spi_out.hex())

        charon.rekey(ike="conn")
        new = peer.wait_for(IkeSaRekeyed)
        sa = charon.wait_for_ike("conn", timeout=20)
        charon.wait_until(
            lambda: any(s.spi_i == new.spi_i.hex() for s in charon.list_sas()), 20, "rekeyed IKE SA listed"
        )
        assert sa.state == "ESTABLISHED"

        charon.terminate(ike="conn")
        deleted = peer.wait_for(IkeSaDeleted)
        assert deleted.by_peer
        assert peer.call(lambda: len(peer.endpoint)) == 0


def test_we_send_invalid_ke_and_charon_retries(netns_pair: NamespacePair, charon_factory) -> None:  # type: ignore[no-untyped-def]
    charon = _start_charon_initiator(
        netns_pair, charon_factory, proposals=["aes128gcm16-prfsha256-x25519-ecp256"], esp=["aes128gcm16"]
    )
    responder = IkeConfig(
        ike_proposals="aes128gcm16-prfsha256-ecp256",
        local_id="right",
        remote_id="left",
        psk=PSK.encode(),
        children=(ChildConfig(name="net", esp_proposals="aes128gcm16", local_ts=(RIGHT_NET,), remote_ts=(LEFT_NET,)),),
    )
    with IkeLibPeer(netns_pair.right, netns_pair.right_addr, responder) as peer:
        charon.initiate(child="net")
        established = peer.wait_for(IkeSaEstablished)
        assert established.proposal.endswith("ecp256")
        charon.wait_for_child("net")
        charon.wait_for_log(r"requested ECP_256")


def test_fragmented_ike_auth_both_directions(netns_pair: NamespacePair, charon_factory) -> None:  # type: ignore[no-untyped-def]
    """RFC 7383 with charon: long identities make the IKE_AUTH request and response larger than the
    fragment size, so both travel in SKF fragments and both ends reassemble."""
    left_id = "left." + "l" * 50 + ".example.org"
    right_id = "right." + "r" * 50 + "." + "r" * 50 + ".example.org"
    _, right_cfg = psk_connection_pair(
        netns_pair.left_addr, netns_pair.right_addr, esp_proposals=["aes128gcm16"], psk=PSK,
        left_id=left_id, right_id=right_id,
    )
    charon = charon_factory(netns_pair.right, "right", CharonSettings(fragment_size=300, log_levels={"ike": 2, "enc": 1}))
    charon.load(right_cfg)
    config = IkeConfig(
        local_id=left_id,
        remote_id=right_id,
        psk=PSK.encode(),
        children=(ChildConfig(name="net", local_ts=(LEFT_NET,), remote_ts=(RIGHT_NET,)),),
        encap=True,
        fragment_size=300,
    )
    with IkeLibPeer(netns_pair.left, netns_pair.left_addr) as peer:
        peer.initiate(config, netns_pair.right_addr)
        established = peer.wait_for(IkeSaEstablished)
        child = peer.wait_for(ChildSaCreated)
        assert established.remote_id == right_id
        charon.wait_for_child("net")
        log = charon.log_text()
        assert "reassembled fragmented IKE message" in log  # our fragments
        assert "generating IKE_AUTH response 1 [ EF(1/" in log  # charon's fragments, reassembled by us
        _esp_both_ways(netns_pair, peer, child.child_id, 5004)


def test_charon_dpd_and_child_delete_reach_us(netns_pair: NamespacePair, charon_factory) -> None:  # type: ignore[no-untyped-def]
    left_cfg, _ = psk_connection_pair(
        netns_pair.left_addr, netns_pair.right_addr, esp_proposals=["aes128gcm16"], psk=PSK, dpd_delay="1s"
    )
    charon = charon_factory(netns_pair.left, "left", CharonSettings(log_levels={"ike": 2}))
    charon.load(left_cfg)
    with IkeLibPeer(netns_pair.right, netns_pair.right_addr, _our_responder()) as peer:
        charon.initiate(child="net")
        child = peer.wait_for(ChildSaCreated)
        charon.wait_for_log(r"sending DPD request")
        charon.wait_for_log(r"parsed INFORMATIONAL response \d+ \[ \]")  # we answered the DPD
        charon.terminate(child="net")
        deleted = peer.wait_for(ChildSaDeleted)
        assert deleted.child_id == child.child_id and deleted.by_peer
        assert charon.wait_for_ike("conn").state == "ESTABLISHED"


def test_charon_asks_for_a_cookie_and_we_retry(netns_pair: NamespacePair, charon_factory) -> None:  # type: ignore[no-untyped-def]
    from interop.capture_corpus import send_decoy

    _, right_cfg = psk_connection_pair(netns_pair.left_addr, netns_pair.right_addr, esp_proposals=["aes128gcm16"], psk=PSK)
    charon = charon_factory(
        netns_pair.right, "right", CharonSettings(cookie_threshold=1, dos_protection=True, log_levels={"ike": 2})
    )
    charon.load(right_cfg)
    assert netns_pair.left.call(send_decoy, netns_pair.left_addr, netns_pair.right_addr)  # one half-open SA
    with IkeLibPeer(netns_pair.left, netns_pair.left_addr) as peer:
        peer.initiate(_our_config("aes128gcm16-prfsha256-x25519", "aes128gcm16", initiator=True), netns_pair.right_addr)
        peer.wait_for(IkeSaEstablished)
        peer.wait_for(ChildSaCreated)
        charon.wait_for_child("net")
        assert "COOKIE" in charon.log_text()
