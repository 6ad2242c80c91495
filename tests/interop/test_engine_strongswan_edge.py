"""ikev2lib's IKE engine against strongSwan 5.9.8: the harder cases.

Rekey collisions, timer-driven DPD/rekey, several Child SAs, reauthentication, COOKIEs, IKE
fragmentation, MOBIKE/Vendor IDs from charon, forced NAT-T, simultaneous deletes, a dead peer, identity
types, traffic selector narrowing, lost messages (retransmission and the response cache), refused Child
SAs, wrong PSKs and per-peer PSKs. Setup and helpers: engine_pair.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

# the shared helpers assert too: let pytest explain their failures (must precede their import)
pytest.register_assert_rewrite(f"{__package__}.engine_pair")

from ikev2lib.config import ChildConfig, IkeConfig, RetransmitConfig
from ikev2lib.events import (
    ChildSaCreated,
    ChildSaDeleted,
    ChildSaRekeyed,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    PeerDead,
    ProtocolErrorEvent,
)

from .capture import Capture, ike_messages
from .engine_pair import (  # make_pair and peers are pytest fixtures: imported to be used here
    PSK,
    LEFT_TS,
    RIGHT_TS,
    LEFT_INNER,
    RIGHT_INNER,
    CONN,
    CHILD,
    TRAFFIC_PORT,
    DATAGRAMS,
    RECEIVER_DIR,
    RECEIVE_TIMEOUT,
    SEND_INTERVAL,
    ROLES,
    IKE_AUTH,
    SKF,
    FRAGMENT_SIZE,
    peers,
    PairFactory,
    make_pair,
    establish,
    esp_both_ways,
    no_errors,
)
from .fixtures import CharonFactory
from .ikev2lib_peer import IkeLibPeer, start_receiver, udp_ipv4_packet, udp_payload_of
from .netns import NamespacePair
from .strongswan import CharonSettings, ChildSA, IkeSA, SwanctlConfig, psk_connection_pair
from .traffic import udp_send


# ---- rekey collisions (RFC 7296 2.8.1, 2.8.2) -------------------------------------------------------


@pytest.mark.interop
def test_simultaneous_child_rekey(make_pair: PairFactory) -> None:
    pair = make_pair()
    _, child, _, ch = establish(pair, "ikev2lib-initiator")
    pair.peer.request("rekey_child_sa", pair.ike_sa_id, child.child_id)
    pair.charon.rekey(child=CHILD)
    rekeyed = pair.peer.wait_for(ChildSaRekeyed, lambda e: e.old_child_id == child.child_id)
    pair.peer.wait_for(ChildSaDeleted, lambda e: e.child_id == child.child_id)

    def settled() -> list[ChildSA]:
        # one Child SA left on each side (the redundant one and the old one deleted), the same one
        installed = [c for s in pair.charon.list_sas() for c in s.children if c.state == "INSTALLED"]
        if len(installed) != 1:
            return []
        live = pair.peer.call(lambda: [(c.spi_in.hex(), c.spi_out.hex()) for conn in pair.peer.endpoint.connections()
                                       for c in conn.children.values()])
        return installed if live == [(installed[0].spi_out, installed[0].spi_in)] else []
    (new,) = pair.charon.wait_until(settled, 20.0, "the same single Child SA on both sides")
    survivor = [e for e in pair.peer.all_events() if isinstance(e, ChildSaRekeyed)
                and e.spi_in.hex() == new.spi_out]
    assert len(survivor) == 1
    esp_both_ways(pair, survivor[0].child_id, new.spi_in, "after rekey collision")


@pytest.mark.interop
def test_simultaneous_ike_rekey(make_pair: PairFactory) -> None:
    pair = make_pair()
    est, child, sa, ch = establish(pair, "ikev2lib-initiator")
    pair.peer.request("rekey_ike_sa", pair.ike_sa_id)
    pair.charon.rekey(ike=CONN)
    pair.charon.wait_for_ike_gone(sa.spi_i)

    def settled() -> list[IkeSA]:
        # one IKE SA left on each side (the redundant one and the old one deleted), the same one
        sas = pair.charon.list_sas()
        if len(sas) != 1 or sas[0].state != "ESTABLISHED":
            return []
        live = pair.peer.call(lambda: [(c.spi_i.hex(), c.spi_r.hex()) for c in pair.peer.endpoint.connections()])
        return sas if live == [(sas[0].spi_i, sas[0].spi_r)] else []
    (new,) = pair.charon.wait_until(settled, 20.0, "the same single IKE SA on both sides")
    assert new.child(CHILD) is not None
    pair.peer.request("rekey_child_sa", est.ike_sa_id, child.child_id)
    crekeyed = pair.peer.wait_for(ChildSaRekeyed)
    new_child = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == crekeyed.spi_out.hex())
    esp_both_ways(pair, crekeyed.child_id, new_child.spi_in, "after IKE rekey collision")


# ---- ikev2lib's own timers: DPD and rekeying on time --------------------------------------------------


@pytest.mark.interop
def test_ikev2lib_timers_dpd_and_rekey(make_pair: PairFactory, netns_pair: NamespacePair,
                                       peers: list[IkeLibPeer], charon_factory: CharonFactory) -> None:
    pair = make_pair()
    # a second ikev2lib config with timers: DPD after 1 s of silence, Child SA rekey after 2 s
    timed = IkeConfig(
        ike_proposals=pair.config.ike_proposals, local_id="left", remote_id="right", psk=PSK.encode(),
        dpd_delay=1.0, rekey_time=3.0,
        children=(ChildConfig(name=CHILD, esp_proposals="aes128gcm16-x25519", local_ts=(LEFT_TS,),
                              remote_ts=(RIGHT_TS,), rekey_time=2.0),),
    )
    pair.config = timed
    _, child, sa, _ = establish(pair, "ikev2lib-initiator")
    pair.charon.wait_for_log(r"parsed INFORMATIONAL request \d+ \[ \]")  # our DPD
    rekeyed = pair.peer.wait_for(ChildSaRekeyed, lambda e: e.old_child_id == child.child_id)
    ike_rekeyed = pair.peer.wait_for(IkeSaRekeyed)
    pair.charon.wait_for_ike_gone(sa.spi_i)
    assert pair.charon.wait_for_ike(CONN).spi_i == ike_rekeyed.spi_i.hex()
    latest = [e for e in pair.peer.all_events() if isinstance(e, ChildSaRekeyed)][-1]
    new = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == latest.spi_out.hex())
    assert rekeyed.child_id <= latest.child_id
    esp_both_ways(pair, latest.child_id, new.spi_in, "after timed rekeys")


# ---- more than one Child SA ---------------------------------------------------------------------------

# disjoint from the first child's networks, so that each side's selector narrowing picks "net2"
NET2_LEFT, NET2_RIGHT = "10.3.0.0/24", "10.4.0.0/24"
NET2_LEFT_INNER, NET2_RIGHT_INNER = "10.3.0.1", "10.4.0.1"


@pytest.mark.interop
@pytest.mark.parametrize("creator", ["ikev2lib", "charon"])
def test_second_child_sa(make_pair: PairFactory, netns_pair: NamespacePair, creator: str) -> None:
    netns_pair.left.add_inner_address(f"{NET2_LEFT_INNER}/32")
    netns_pair.right.add_inner_address(f"{NET2_RIGHT_INNER}/32")
    pair = make_pair()
    # a second child "net2" on both sides, between two other inner networks
    (conn,) = pair.charon_config.connections
    first = conn.children[0]
    conn.children = [first, dataclasses.replace(first, name="net2", local_ts=[NET2_RIGHT], remote_ts=[NET2_LEFT],
                                                      esp_proposals=["aes256gcm16-ecp256"])]
    pair.charon.load(pair.charon_config)
    net2 = ChildConfig(name="net2", esp_proposals="aes256gcm16-ecp256", local_ts=(NET2_LEFT,), remote_ts=(NET2_RIGHT,))
    pair.config = dataclasses.replace(pair.config, children=(*pair.config.children, net2))
    pair.peer.config = pair.config  # the responder config of a peer not yet contacted
    pair.peer.call(lambda: setattr(pair.peer.endpoint, "config", pair.config))
    _, child, _, ch = establish(pair, "ikev2lib-initiator")
    if creator == "ikev2lib":
        pair.peer.request("create_child_sa", pair.ike_sa_id, net2)
    else:
        pair.charon.initiate(child="net2")
    second = pair.peer.wait_for(ChildSaCreated)
    assert (second.local_ts, second.remote_ts) == ((NET2_LEFT,), (NET2_RIGHT,))
    ch2 = pair.charon.wait_for_child("net2")
    assert (ch2.spi_in, ch2.spi_out) == (second.spi_out.hex(), second.spi_in.hex())
    assert (ch2.encr_alg, ch2.encr_keysize, ch2.dh_group) == ("AES_GCM_16", "256", "ECP_256")
    # traffic through the second Child SA, between the second pair of inner addresses
    receiver = start_receiver(pair.ns.right, NET2_RIGHT_INNER, TRAFFIC_PORT, DATAGRAMS, RECEIVE_TIMEOUT, RECEIVER_DIR)
    payloads = [f"net2 {i}".encode() for i in range(DATAGRAMS)]
    for i, payload in enumerate(payloads):
        pair.peer.send_esp(second.child_id,
                           udp_ipv4_packet(NET2_LEFT_INNER, NET2_RIGHT_INNER, 4000, TRAFFIC_PORT, payload, i))
    assert [d for d, _ in receiver.result(timeout=RECEIVE_TIMEOUT + 5)] == payloads
    start = len(pair.peer.wait_for_esp(0, timeout=0))
    pair.ns.right.call(udp_send, NET2_RIGHT_INNER, NET2_LEFT_INNER, TRAFFIC_PORT, payloads, SEND_INTERVAL)
    got = pair.peer.wait_for_esp(start + DATAGRAMS)[start:]
    assert [(r.child_id, (udp_payload_of(r.inner) or ("",))[-1]) for r in got] == [
        (second.child_id, p) for p in payloads]
    # the first Child SA still carries its own traffic
    esp_both_ways(pair, child.child_id, ch.spi_in, "first child")
    no_errors(pair)


# ---- reauthentication by charon (a new IKE SA from scratch, then the old one is deleted) -----------------


@pytest.mark.interop
def test_charon_reauthenticates(make_pair: PairFactory) -> None:
    pair = make_pair()
    est, child, sa, ch = establish(pair, "ikev2lib-initiator")
    pair.charon.rekey(ike=CONN, reauth=True)
    est2 = pair.peer.wait_for(IkeSaEstablished)
    assert not est2.is_initiator and est2.ike_sa_id != est.ike_sa_id
    child2 = pair.peer.wait_for(ChildSaCreated)
    gone = pair.peer.wait_for(IkeSaDeleted, lambda e: e.ike_sa_id == est.ike_sa_id)
    assert gone.by_peer
    pair.charon.wait_for_ike_gone(sa.spi_i)
    new = pair.charon.wait_for_ike(CONN)
    assert (new.spi_i, new.spi_r) == (est2.spi_i.hex(), est2.spi_r.hex())
    ch2 = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == child2.spi_out.hex())
    esp_both_ways(pair, child2.child_id, ch2.spi_in, "after reauthentication")


# ---- COOKIE (RFC 7296 2.6) ------------------------------------------------------------------------


def _half_open_sa_init(config: IkeConfig, src: str, dst: str) -> int:
    """Runs in ikev2lib's namespace: send one IKE_SA_INIT from port 501 and read the answer, never
    continuing: the responder keeps a half-open IKE SA. Returns the answer's size."""
    import socket as _socket
    from ikev2lib.endpoint import IkeEndpoint as _Endpoint
    endpoint = _Endpoint(local_addr=(src, 501))
    endpoint.initiate(config, (dst, 500), 0.0)
    ((datagram, _),) = endpoint.datagrams_to_send(0.0)
    with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as sock:
        sock.bind((src, 501))
        sock.settimeout(5.0)
        sock.sendto(datagram, (dst, 500))
        return len(sock.recv(65535))


@pytest.mark.interop
def test_cookie_demanded_by_charon(make_pair: PairFactory) -> None:
    pair = make_pair(settings=CharonSettings(cookie_threshold=1, dos_protection=True, log_levels={"default": 1, "ike": 2}))
    assert pair.ns.left.call(_half_open_sa_init, pair.config, pair.ns.left_addr, pair.ns.right_addr) > 0
    pair.charon.wait_until(lambda: any(sa.state == "CONNECTING" for sa in pair.charon.list_sas()), 10.0,
                           "a half-open IKE SA")
    _, child, _, ch = establish(pair, "ikev2lib-initiator")
    pair.charon.wait_for_log(r"generating IKE_SA_INIT response 0 \[ N\(COOKIE\) \]")
    pair.charon.wait_for_log(r"parsed IKE_SA_INIT request 0 \[ N\(COOKIE\) SA KE No")  # ikev2lib's retry
    esp_both_ways(pair, child.child_id, ch.spi_in, "after COOKIE")


@pytest.mark.interop
def test_cookie_demanded_by_ikev2lib(make_pair: PairFactory) -> None:
    pair = make_pair(cookie_threshold=0)  # every IKE_SA_INIT must carry a valid COOKIE
    _, child, _, ch = establish(pair, "charon-initiator")
    pair.charon.wait_for_log(r"parsed IKE_SA_INIT response 0 \[ N\(COOKIE\) \]")
    pair.charon.wait_for_log(r"generating IKE_SA_INIT request 0 \[ N\(COOKIE\) SA KE No")
    assert pair.peer.call(lambda: pair.peer.endpoint.stats).get("cookies_sent", 0) >= 1
    esp_both_ways(pair, child.child_id, ch.spi_in, "after COOKIE")


# ---- IKE fragmentation (RFC 7383) ----------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
def test_ike_fragmentation(make_pair: PairFactory, tmp_path: Path, role: str) -> None:
    # The initiator's IKE_AUTH request (several ESP proposals) goes out in SKF fragments of at most
    # FRAGMENT_SIZE octets; the responder reassembles it. (IKE_AUTH responses hold one proposal and are
    # smaller than the smallest fragment size either side accepts, so only requests are fragmented here.)
    ikev2lib_fragments = role == "ikev2lib-initiator"
    settings = CharonSettings(log_levels={"default": 1, "ike": 2, "enc": 1},
                              fragment_size=None if ikev2lib_fragments else FRAGMENT_SIZE)
    options: dict[str, Any] = {"fragment_size": FRAGMENT_SIZE} if ikev2lib_fragments else {}
    pair = make_pair(esp="aes128gcm16-x25519,aes256gcm16-x25519,chacha20poly1305-x25519,aes192gcm16-x25519",
                     settings=settings, ikev2lib_options=options)
    pcap = tmp_path / "frag.pcap"
    with Capture(pair.ns.left, pair.ns.left_if, pcap):
        _, child, _, ch = establish(pair, role)
    request = [(d, m) for d, m in ike_messages(pcap) if m[18] == IKE_AUTH and not m[19] & 0x20]
    assert len(request) >= 2
    assert all(m[16] == SKF for _, m in request)  # first payload: Encrypted Fragment
    assert all(len(d.payload) <= FRAGMENT_SIZE for d, _ in request)
    totals = {int.from_bytes(m[34:36], "big") for _, m in request}  # SKF: Total Fragments field
    assert len(totals) == 1
    total = totals.pop()
    assert total >= 2
    if ikev2lib_fragments:  # (charon's threads may take the fragments in any order)
        pair.charon.wait_for_log(rf"received fragment #\d+ of {total}, reassembled fragmented IKE message")
    esp_both_ways(pair, child.child_id, ch.spi_in, "after fragmented IKE_AUTH")
    no_errors(pair)


# ---- strongSwan's defaults, NAT-T forced by ikev2lib, simultaneous delete, a dead peer ----------------


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
def test_charon_mobike_and_vendor_ids(make_pair: PairFactory, role: str) -> None:
    # swanctl's default mobike = yes: charon announces MOBIKE_SUPPORTED (and here also sends its Vendor
    # ID payloads); ikev2lib ignores both.
    settings = CharonSettings(log_levels={"default": 1, "ike": 2, "cfg": 2}, extra="    send_vendor_id = yes")
    pair = make_pair(conn_extra={"mobike": "yes"}, settings=settings)
    _, child, _, ch = establish(pair, role)
    esp_both_ways(pair, child.child_id, ch.spi_in, "mobike on")
    pair.charon.rekey(child=CHILD)
    rekeyed = pair.peer.wait_for(ChildSaRekeyed)
    new = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == rekeyed.spi_out.hex())
    esp_both_ways(pair, rekeyed.child_id, new.spi_in, "mobike on, rekeyed")
    pair.charon.wait_for_log(r"IKE_SA_INIT (request|response) 0 \[ .*V ")  # Vendor ID payloads were sent
    no_errors(pair)


@pytest.mark.interop
def test_ikev2lib_forces_udp_encapsulation(make_pair: PairFactory) -> None:
    pair = make_pair(ikev2lib_options={"encap": True})
    _, child, sa, ch = establish(pair, "ikev2lib-initiator")
    assert sa.raw.get("nat-remote") == "yes"  # charon sees ikev2lib's faked NAT-D as a NAT in front of it
    esp_both_ways(pair, child.child_id, ch.spi_in, "encap forced")
    no_errors(pair)


@pytest.mark.interop
def test_simultaneous_ike_delete(make_pair: PairFactory) -> None:
    pair = make_pair()
    establish(pair, "ikev2lib-initiator")
    # Both ends delete at about the same time; whichever Delete arrives first, both must end clean.
    terminate = threading.Thread(target=pair.charon.swanctl, args=("--terminate", "--ike", CONN, "--timeout", "10"),
                                 kwargs={"check": False})
    terminate.start()
    pair.peer.request("delete_ike_sa", pair.ike_sa_id)
    terminate.join(30.0)
    pair.peer.wait_for(IkeSaDeleted)
    pair.charon.wait_for_no_sas()
    deadline = time.monotonic() + 10.0
    while pair.peer.call(lambda: len(pair.peer.endpoint)) != 0:
        assert time.monotonic() < deadline, "ikev2lib kept an IKE SA"
        time.sleep(0.1)
    assert [e for e in pair.peer.all_events() if isinstance(e, PeerDead)] == []


@pytest.mark.interop
def test_dead_peer_detected(make_pair: PairFactory) -> None:
    # charon disappears without a Delete; ikev2lib's DPD request is never answered.
    pair = make_pair(ikev2lib_options={"dpd_delay": 1.0, "retransmit": RetransmitConfig(timeout=0.5, base=1.0, tries=2)})
    establish(pair, "ikev2lib-initiator")
    if pair.charon.proc is not None:
        pair.charon.proc.kill()
    dead = pair.peer.wait_for(PeerDead)
    assert dead.ike_sa_id == pair.ike_sa_id
    gone = pair.peer.wait_for(IkeSaDeleted)
    assert not gone.by_peer
    child_gone = pair.peer.wait_for(ChildSaDeleted)
    assert child_gone.child_id == pair.child_id
    assert pair.peer.call(lambda: len(pair.peer.endpoint)) == 0


# ---- identities and traffic selectors ----------------------------------------------------------------


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("left_id,right_id", [("192.0.2.1", "192.0.2.2"), ("alice@example.org", "gw.example.org")],
                         ids=["ipv4-ids", "rfc822-fqdn-ids"])
def test_identity_types(netns_pair: NamespacePair, charon_factory: CharonFactory, peers: list[IkeLibPeer],
                        role: str, left_id: str, right_id: str) -> None:
    _, right_cfg = psk_connection_pair(netns_pair.left_addr, netns_pair.right_addr, psk=PSK,
                                       left_id=left_id, right_id=right_id)
    charon = charon_factory(netns_pair.right, "right")
    charon.load(right_cfg)
    # as responder, ikev2lib accepts any authenticated identity (remote_id=None)
    config = IkeConfig(local_id=left_id, remote_id=right_id if role == "ikev2lib-initiator" else None,
                       psk=PSK.encode(), ike_proposals="aes128gcm16-prfsha256-x25519",
                       children=(ChildConfig(name=CHILD, esp_proposals="aes128gcm16-x25519",
                                             local_ts=(LEFT_TS,), remote_ts=(RIGHT_TS,)),))
    peer = IkeLibPeer(netns_pair.left, netns_pair.left_addr, config)
    peers.append(peer)
    peer.start()
    if role == "ikev2lib-initiator":
        peer.initiate(config, netns_pair.right_addr)
    else:
        charon.initiate(child=CHILD)
    est = peer.wait_for(IkeSaEstablished)
    assert (est.local_id, est.remote_id) == (left_id, right_id)
    sa = charon.wait_for_ike(CONN)
    assert (sa.raw.get("local-id"), sa.raw.get("remote-id")) == (right_id, left_id)
    peer.wait_for(ChildSaCreated)


@pytest.mark.interop
def test_charon_narrows_wide_selectors(make_pair: PairFactory) -> None:
    # ikev2lib asks for everything; charon narrows to its configured networks (RFC 7296 2.9).
    pair = make_pair()
    wide = ChildConfig(name=CHILD, esp_proposals="aes128gcm16-x25519", local_ts=("0.0.0.0/0",), remote_ts=("0.0.0.0/0",))
    pair.config = dataclasses.replace(pair.config, children=(wide,))
    pair.peer.initiate(pair.config, pair.ns.right_addr)
    child = pair.peer.wait_for(ChildSaCreated)
    assert (child.local_ts, child.remote_ts) == ((LEFT_TS,), (RIGHT_TS,))
    ch = pair.charon.wait_for_child(CHILD)
    esp_both_ways(pair, child.child_id, ch.spi_in, "narrowed")
    no_errors(pair)


@pytest.mark.interop
def test_ikev2lib_narrows_to_charons_port_and_subnets(make_pair: PairFactory, netns_pair: NamespacePair) -> None:
    # charon proposes two subnets on its side, one of them restricted to UDP port 5001; ikev2lib
    # (configured for all of 10.2.0.0/16 and 10.4.0.0/16) keeps exactly what charon asked for.
    netns_pair.right.add_inner_address("10.4.0.1/32")
    pair = make_pair()
    (conn,) = pair.charon_config.connections
    conn.children = [dataclasses.replace(conn.children[0], local_ts=["10.2.0.0/16[udp/5001]", "10.4.0.0/24"])]
    pair.charon.load(pair.charon_config)
    wide = ChildConfig(name=CHILD, esp_proposals="aes128gcm16-x25519", local_ts=(LEFT_TS,),
                       remote_ts=(RIGHT_TS, "10.4.0.0/16"))
    pair.config = dataclasses.replace(pair.config, children=(wide,))
    pair.peer.call(lambda: setattr(pair.peer.endpoint, "config", pair.config))
    pair.charon.initiate(child=CHILD)
    child = pair.peer.wait_for(ChildSaCreated)
    assert child.local_ts == (LEFT_TS,)
    assert child.remote_ts == ("10.2.0.0/16[17/5001]", "10.4.0.0/24")
    # (swanctl --raw prints port-restricted selectors inside brackets, which the harness's parser does
    # not read, so charon's view is taken from its log here)
    pair.charon.wait_for_log(rf"CHILD_SA {CHILD}{{\d+}} established with SPIs {child.spi_out.hex()}_i "
                             rf"{child.spi_in.hex()}_o and TS 10.2.0.0/16\[udp/5001\] 10.4.0.0/24 === {LEFT_TS}")
    for dst in (RIGHT_INNER, "10.4.0.1"):
        receiver = start_receiver(pair.ns.right, dst, TRAFFIC_PORT, DATAGRAMS, RECEIVE_TIMEOUT, RECEIVER_DIR)
        payloads = [f"to {dst} {i}".encode() for i in range(DATAGRAMS)]
        for i, payload in enumerate(payloads):
            pair.peer.send_esp(child.child_id, udp_ipv4_packet(LEFT_INNER, dst, 4000, TRAFFIC_PORT, payload, i))
        assert [d for d, _ in receiver.result(timeout=RECEIVE_TIMEOUT + 5)] == payloads
    assert [e for e in pair.peer.all_events() if isinstance(e, ProtocolErrorEvent)] == []


# ---- lost messages: retransmission (RFC 7296 2.1) -----------------------------------------------------

CREATE_CHILD_SA = 36
FAST_RETRANSMIT = RetransmitConfig(timeout=0.5, base=1.0, tries=4)


@pytest.mark.interop
def test_ikev2lib_retransmits_when_answers_are_lost(make_pair: PairFactory) -> None:
    pair = make_pair(ikev2lib_options={"retransmit": FAST_RETRANSMIT})
    pair.peer.drop("in", IKE_AUTH, True)  # charon's IKE_AUTH response is lost once
    _, child, _, _ = establish(pair, "ikev2lib-initiator")
    pair.peer.drop("in", CREATE_CHILD_SA, True)  # ... and its answer to our Child SA rekey
    pair.peer.request("rekey_child_sa", pair.ike_sa_id, child.child_id)
    rekeyed = pair.peer.wait_for(ChildSaRekeyed)
    new = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == rekeyed.spi_out.hex())
    assert [(d, e) for d, e, _, _ in pair.peer.dropped] == [("in", IKE_AUTH), ("in", CREATE_CHILD_SA)]
    assert pair.peer.call(lambda: pair.peer.endpoint.stats).get("retransmissions", 0) >= 2  # more if slow
    pair.charon.wait_for_log(r"received retransmit of request with ID 1, retransmitting response")
    pair.charon.wait_for_log(r"received retransmit of request with ID 2, retransmitting response")
    esp_both_ways(pair, rekeyed.child_id, new.spi_in, "after lost answers")


@pytest.mark.interop
def test_ikev2lib_answers_retransmits_from_its_cache(make_pair: PairFactory) -> None:
    pair = make_pair()
    pair.peer.drop("out", IKE_AUTH, True)  # our IKE_AUTH response is lost once: charon retransmits
    _, child, _, _ = establish(pair, "charon-initiator")
    pair.peer.drop("out", CREATE_CHILD_SA, True)
    pair.charon.rekey(child=CHILD)
    rekeyed = pair.peer.wait_for(ChildSaRekeyed)
    new = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == rekeyed.spi_out.hex())
    pair.charon.wait_for_log(r"retransmit 1 of request with message ID 1")
    pair.charon.wait_for_log(r"retransmit 1 of request with message ID 2")
    assert pair.peer.call(lambda: pair.peer.endpoint.stats).get("retransmitted_requests", 0) >= 2
    # each request was processed once: one IKE SA, one Child SA created, one rekey
    kinds = [type(e).__name__ for e in pair.peer.all_events()]
    assert kinds.count("IkeSaEstablished") == 1 and kinds.count("ChildSaCreated") == 1
    assert kinds.count("ChildSaRekeyed") == 1
    esp_both_ways(pair, rekeyed.child_id, new.spi_in, "after retransmitted requests")


# ---- failures reported across implementations ------------------------------------------------------

NO_PROPOSAL_CHOSEN, AUTHENTICATION_FAILED = 14, 24


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
def test_child_refused_in_ike_auth_keeps_ike_sa(make_pair: PairFactory, role: str) -> None:
    pair = make_pair(esp="aes256gcm16", charon_esp="chacha20poly1305")  # no common ESP proposal
    if role == "ikev2lib-initiator":
        pair.peer.initiate(pair.config, pair.ns.right_addr)
    else:
        pair.charon.swanctl("--initiate", "--child", CHILD, "--timeout", "10", check=False)
    est = pair.peer.wait_for(IkeSaEstablished)
    error = pair.peer.wait_for(ProtocolErrorEvent)
    assert error.notify == NO_PROPOSAL_CHOSEN and error.received == (role == "ikev2lib-initiator")
    sa = pair.charon.wait_for_ike(CONN)  # RFC 7296 1.2: the IKE SA survives a refused Child SA
    assert sa.spi_i == est.spi_i.hex() and sa.children == []
    pair.charon.wait_for_log(r"failed to establish CHILD_SA, keeping IKE_SA")
    assert not [e for e in pair.peer.all_events() if isinstance(e, (ChildSaCreated, IkeSaDeleted))]
    # the IKE SA is usable: a liveness check passes and a delete ends it cleanly
    pair.peer.request("send_dpd", est.ike_sa_id)
    pair.charon.wait_for_log(r"parsed INFORMATIONAL request \d+ \[ \]")
    pair.peer.request("delete_ike_sa", est.ike_sa_id)
    pair.peer.wait_for(IkeSaDeleted)
    pair.charon.wait_for_no_sas()


@pytest.mark.interop
@pytest.mark.parametrize("role", ROLES)
def test_wrong_psk_fails_cleanly(make_pair: PairFactory, role: str) -> None:
    pair = make_pair()
    pair.config = dataclasses.replace(pair.config, psk=b"not the right key")
    pair.peer.call(lambda: setattr(pair.peer.endpoint, "config", pair.config))
    if role == "ikev2lib-initiator":
        pair.peer.initiate(pair.config, pair.ns.right_addr)
        error = pair.peer.wait_for(ProtocolErrorEvent, lambda e: e.notify == AUTHENTICATION_FAILED)
        assert error.received
        pair.charon.wait_for_log(r"tried \d+ shared key for 'right' - 'left', but MAC mismatched")
    else:
        pair.charon.swanctl("--initiate", "--child", CHILD, "--timeout", "10", check=False)
        error = pair.peer.wait_for(ProtocolErrorEvent, lambda e: e.notify == AUTHENTICATION_FAILED)
        assert not error.received
        pair.charon.wait_for_log(r"received AUTHENTICATION_FAILED notify error")
    pair.charon.wait_for_no_sas()
    assert not [e for e in pair.peer.all_events() if isinstance(e, (IkeSaEstablished, ChildSaCreated))]
    deadline = time.monotonic() + 10.0
    while pair.peer.call(lambda: len(pair.peer.endpoint)) != 0:
        assert time.monotonic() < deadline, "ikev2lib kept the failed IKE SA"
        time.sleep(0.1)


# ---- a gateway with one PSK per peer identity ---------------------------------------------------------


@pytest.mark.interop
def test_responder_picks_psk_by_peer_identity(make_pair: PairFactory, netns_pair: NamespacePair) -> None:
    # charon initiates two IKE SAs with two identities and two keys; ikev2lib holds both keys.
    netns_pair.left.add_inner_address(f"{NET2_LEFT_INNER}/32")
    netns_pair.right.add_inner_address(f"{NET2_RIGHT_INNER}/32")
    other_psk = "second-peer-psk-fedcba9876543210"
    pair = make_pair()
    _, second = psk_connection_pair(netns_pair.left_addr, netns_pair.right_addr, conn="conn2", child="net2",
                                    psk=other_psk, right_id="right2", left_ts=(NET2_LEFT,), right_ts=(NET2_RIGHT,))
    pair.charon_config = SwanctlConfig([*pair.charon_config.connections, *second.connections],
                                       [*pair.charon_config.secrets, *second.secrets])
    pair.charon.load(pair.charon_config)
    net2 = ChildConfig(name="net2", esp_proposals="aes128gcm16-x25519", local_ts=(NET2_LEFT,), remote_ts=(NET2_RIGHT,))
    pair.config = dataclasses.replace(pair.config, remote_id=None, psk=b"",
                                      peer_psks=(("right2", other_psk.encode()), ("right", PSK.encode())),
                                      children=(*pair.config.children, net2))
    pair.peer.call(lambda: setattr(pair.peer.endpoint, "config", pair.config))
    _, child, _, ch = establish(pair, "charon-initiator")
    pair.charon.initiate(child="net2")
    est2 = pair.peer.wait_for(IkeSaEstablished)
    child2 = pair.peer.wait_for(ChildSaCreated)
    assert est2.remote_id == "right2" and est2.ike_sa_id != pair.ike_sa_id
    assert child2.remote_ts == (NET2_RIGHT,)
    sa2 = pair.charon.wait_for_ike("conn2")
    assert sa2.spi_i == est2.spi_i.hex()
    esp_both_ways(pair, child.child_id, ch.spi_in, "first peer identity")
    no_errors(pair)


# ---- overlapping exchanges: an IKE SA rekey while the peer rekeys a Child SA --------------------------


@pytest.mark.interop
@pytest.mark.parametrize("ike_rekeyer", ["ikev2lib", "charon"])
def test_ike_rekey_overlapping_child_rekey(make_pair: PairFactory, ike_rekeyer: str) -> None:
    pair = make_pair()
    est, child, sa, ch = establish(pair, "ikev2lib-initiator")
    if ike_rekeyer == "ikev2lib":
        pair.peer.request("rekey_ike_sa", pair.ike_sa_id)
        pair.charon.rekey(child=CHILD)
    else:
        pair.peer.request("rekey_child_sa", pair.ike_sa_id, child.child_id)
        pair.charon.rekey(ike=CONN)

    def settled() -> list[IkeSA]:
        # the exchanges may collide and be retried; in the end each side holds the same single IKE SA
        # (not the old one) with the same single, rekeyed Child SA
        sas = pair.charon.list_sas()
        if len(sas) != 1 or sas[0].state != "ESTABLISHED" or sas[0].spi_i == sa.spi_i:
            return []
        kids = [c for c in sas[0].children if c.state == "INSTALLED"]
        if len(kids) != 1 or kids[0].spi_in == ch.spi_in:
            return []
        live = pair.peer.call(lambda: [(c.spi_i.hex(), c.spi_r.hex(), [(k.spi_in.hex(), k.spi_out.hex())
                                                                        for k in c.children.values()])
                                       for c in pair.peer.endpoint.connections()])
        return sas if live == [(sas[0].spi_i, sas[0].spi_r, [(kids[0].spi_out, kids[0].spi_in)])] else []

    (new,) = pair.charon.wait_until(settled, 30.0, "one rekeyed IKE SA with one rekeyed Child SA")
    (kid,) = [c for c in new.children if c.state == "INSTALLED"]
    latest = [e for e in pair.peer.all_events() if isinstance(e, ChildSaRekeyed)][-1]
    assert latest.spi_out.hex() == kid.spi_in
    esp_both_ways(pair, latest.child_id, kid.spi_in, "after overlapping rekeys")


# ---- INVALID_KE_PAYLOAD answering an IKE SA rekey ------------------------------------------------------


@pytest.mark.interop
def test_ike_rekey_invalid_ke_after_policy_change(make_pair: PairFactory) -> None:
    # The IKE SA runs X25519; then ikev2lib's policy changes to ECP-384/ECP-256 only (the live SA takes
    # the new config, as a gateway reload would do). Its rekey guesses ECP-384, which charon
    # (X25519/ECP-256) refuses with INVALID_KE_PAYLOAD naming ECP-256; ikev2lib retries with that.
    pair = make_pair(ike="aes128gcm16-prfsha256-x25519", charon_ike="aes128gcm16-prfsha256-x25519-ecp256")
    est, child, sa, ch = establish(pair, "ikev2lib-initiator")
    assert sa.dh_group == "CURVE_25519"
    changed = dataclasses.replace(pair.config, ike_proposals="aes128gcm16-prfsha256-ecp384-ecp256")

    def change_policy() -> None:
        assert pair.ike_sa_id is not None
        conn = pair.peer.endpoint.connection(pair.ike_sa_id)
        conn.config = changed
    pair.peer.call(change_policy)
    pair.peer.request("rekey_ike_sa", pair.ike_sa_id)
    rekeyed = pair.peer.wait_for(IkeSaRekeyed)
    pair.charon.wait_for_log(r"(DH group|key exchange method) ECP_384 unacceptable, requesting ECP_256")
    pair.charon.wait_for_ike_gone(sa.spi_i)
    new = pair.charon.wait_for_ike(CONN)
    assert (new.spi_i, new.spi_r, new.dh_group) == (rekeyed.spi_i.hex(), rekeyed.spi_r.hex(), "ECP_256")
    esp_both_ways(pair, child.child_id, ch.spi_in, "after IKE rekey INVALID_KE")
