"""Two engines wired through the in-memory network: every exchange, end to end."""

from __future__ import annotations

import pytest

from ikev2lib.config import ChildConfig, RetransmitConfig
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
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.exchanges import ike_init
from ikev2lib.state import IkeState
from ikev2lib.wire import ExchangeType, Message, Notify, NotifyType

from .network import RESPONDER_IP, ike_config, pair


def _established(net, a, b, icfg):  # type: ignore[no-untyped-def]
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert len(a.of_type(IkeSaEstablished)) == 1
    assert len(b.of_type(IkeSaEstablished)) == 1
    return sid


def _esp_roundtrip(sender: ChildSaCreated | ChildSaRekeyed, receiver: ChildSaCreated | ChildSaRekeyed) -> None:
    inner = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)  # IPv4/UDP
    packet = sender.outbound.encap(inner)
    next_header, plain = receiver.inbound.decap(packet)
    assert next_header == 4 and plain == inner


def test_handshake_creates_ike_and_child_sa_with_working_esp() -> None:
    net, a, b, icfg = pair()
    _established(net, a, b, icfg)
    ea, eb = a.of_type(IkeSaEstablished)[0], b.of_type(IkeSaEstablished)[0]
    assert (ea.spi_i, ea.spi_r) == (eb.spi_i, eb.spi_r)
    assert ea.proposal == eb.proposal == "aes128gcm16-prfsha256-x25519"
    assert ea.remote_id == "gw.example.org" and eb.remote_id == "alice@example.org"
    ca, cb = a.of_type(ChildSaCreated)[0], b.of_type(ChildSaCreated)[0]
    assert ca.spi_in == cb.spi_out and ca.spi_out == cb.spi_in
    assert ca.local_ts == ("10.1.0.0/16",) and ca.remote_ts == ("10.2.0.0/16",)
    assert cb.local_ts == ("10.2.0.0/16",) and cb.remote_ts == ("10.1.0.0/16",)
    _esp_roundtrip(ca, cb)
    _esp_roundtrip(cb, ca)
    # IKE_SA_INIT + IKE_AUTH: two requests, two responses
    assert len(net.tap) == 4


def test_sa_init_advertises_natd_fragmentation_and_signature_hashes() -> None:
    net, a, b, icfg = pair()
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    request = Message.parse(a.endpoint.datagrams_to_send(net.now)[0][0])
    types = {int(n.notify_type) for n in request.find_all(Notify)}
    for wanted in (
        NotifyType.NAT_DETECTION_SOURCE_IP,
        NotifyType.NAT_DETECTION_DESTINATION_IP,
        NotifyType.IKEV2_FRAGMENTATION_SUPPORTED,
        NotifyType.SIGNATURE_HASH_ALGORITHMS,
    ):
        assert int(wanted) in types


def test_responder_picks_first_initiator_proposal_it_accepts() -> None:
    icfg = ike_config(
        local_id="alice@example.org",
        ike="aes256gcm16-prfsha384-x25519,aes128gcm16-prfsha256-x25519",
    )
    rcfg = ike_config(
        local_id="gw.example.org",
        ike="aes128gcm16-prfsha256-x25519,aes256gcm16-prfsha384-x25519",
        local_ts=("10.2.0.0/16",),
        remote_ts=("10.1.0.0/16",),
    )
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    _established(net, a, b, icfg)
    assert a.of_type(IkeSaEstablished)[0].proposal == "aes256gcm16-prfsha384-x25519"


def test_invalid_ke_payload_makes_initiator_retry_with_requested_group() -> None:
    icfg = ike_config(local_id="alice@example.org", ike="aes128gcm16-prfsha256-x25519-ecp256")
    rcfg = ike_config(
        local_id="gw.example.org", ike="aes128gcm16-prfsha256-ecp256", local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)
    )
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    _established(net, a, b, icfg)
    assert a.of_type(IkeSaEstablished)[0].proposal.endswith("ecp256")
    first = Message.parse(net.tap[0][0])
    answer = Message.parse(net.tap[1][0])
    assert first.exchange_type == ExchangeType.IKE_SA_INIT and answer.notify(NotifyType.INVALID_KE_PAYLOAD)
    assert int.from_bytes(answer.notify(NotifyType.INVALID_KE_PAYLOAD).data, "big") == 19
    assert answer.spi_r == bytes(8)  # stateless answer
    assert b.endpoint.half_open_count == 0 and len(b.endpoint) == 1


def test_cookie_is_required_above_threshold_and_honoured() -> None:
    net, a, b, icfg = pair(cookie_threshold=0)
    _established(net, a, b, icfg)
    answer = Message.parse(net.tap[1][0])
    cookie = answer.notify(NotifyType.COOKIE)
    assert cookie is not None and len(cookie.data) == 36
    retry = Message.parse(net.tap[2][0])
    assert retry.payloads[0].notify_type == NotifyType.COOKIE and retry.payloads[0].data == cookie.data
    assert b.endpoint.stats["cookies_sent"] == 1


def test_no_proposal_chosen_fails_the_initiator() -> None:
    icfg = ike_config(local_id="alice@example.org", ike="aes256gcm16-prfsha512-ecp384")
    net, a, b, icfg = pair(initiator=icfg)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    errors = a.of_type(ProtocolErrorEvent)
    assert errors and errors[0].notify == NotifyType.NO_PROPOSAL_CHOSEN and errors[0].received
    assert a.of_type(IkeSaDeleted)
    assert len(b.endpoint) == 0 and sid not in a.endpoint.ike_sa_ids()


def test_wrong_psk_gives_authentication_failed_on_both_sides() -> None:
    icfg = ike_config(local_id="alice@example.org", psk=b"not the right key")
    net, a, b, icfg = pair(initiator=icfg)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert not a.of_type(IkeSaEstablished) and not b.of_type(IkeSaEstablished)
    assert any(e.notify == NotifyType.AUTHENTICATION_FAILED for e in b.of_type(ProtocolErrorEvent))
    assert any(e.notify == NotifyType.AUTHENTICATION_FAILED and e.received for e in a.of_type(ProtocolErrorEvent))
    assert len(a.endpoint) == 0 and len(b.endpoint) == 0


def test_unexpected_peer_identity_is_rejected() -> None:
    icfg = ike_config(local_id="mallory@example.org")
    net, a, b, icfg = pair(initiator=icfg)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert not b.of_type(IkeSaEstablished)


def test_ts_unacceptable_keeps_the_ike_sa() -> None:
    icfg = ike_config(local_id="alice@example.org", local_ts=("172.16.0.0/24",), remote_ts=("172.17.0.0/24",))
    net, a, b, icfg = pair(initiator=icfg)
    _established(net, a, b, icfg)
    assert not a.of_type(ChildSaCreated) and not b.of_type(ChildSaCreated)
    assert any(e.notify == NotifyType.TS_UNACCEPTABLE for e in a.of_type(ProtocolErrorEvent))


def test_traffic_selectors_are_narrowed_to_the_intersection() -> None:
    icfg = ike_config(local_id="alice@example.org", local_ts=("10.1.0.0/16",), remote_ts=("10.0.0.0/8",))
    rcfg = ike_config(
        local_id="gw.example.org", local_ts=("10.2.3.0/24",), remote_ts=("10.1.0.0/24",)
    )
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    _established(net, a, b, icfg)
    child = a.of_type(ChildSaCreated)[0]
    assert child.local_ts == ("10.1.0.0/24",) and child.remote_ts == ("10.2.3.0/24",)


def test_create_child_with_pfs_rekey_child_rekey_ike_dpd_and_delete() -> None:
    icfg = ike_config(local_id="alice@example.org", esp="aes256gcm16-x25519", mobike=False)  # port 500: tap is IKE
    rcfg = ike_config(
        local_id="gw.example.org", esp="aes256gcm16-x25519", local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)
    )
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    sid = _established(net, a, b, icfg)
    first = a.of_type(ChildSaCreated)[0]

    a.endpoint.create_child_sa(sid)
    net.run()
    created = a.of_type(ChildSaCreated)
    assert len(created) == 2 and created[1].proposal == "aes256gcm16-x25519-noesn"
    request = Message.parse(net.tap[-2][0])
    assert request.exchange_type == ExchangeType.CREATE_CHILD_SA

    a.endpoint.rekey_child_sa(sid, first.child_id)
    net.run()
    rekeyed = a.of_type(ChildSaRekeyed)
    assert len(rekeyed) == 1 and rekeyed[0].old_child_id == first.child_id
    assert [e.child_id for e in a.of_type(ChildSaDeleted)] == [first.child_id]
    peer_rekeyed = b.of_type(ChildSaRekeyed)[0]
    _esp_roundtrip(rekeyed[0], peer_rekeyed)
    _esp_roundtrip(peer_rekeyed, rekeyed[0])

    old_spis = (a.of_type(IkeSaEstablished)[0].spi_i, a.of_type(IkeSaEstablished)[0].spi_r)
    b.endpoint.rekey_ike_sa(b.endpoint.ike_sa_ids()[0])  # the responder may rekey too
    net.run()
    ike_rekeyed = a.of_type(IkeSaRekeyed)
    assert len(ike_rekeyed) == 1 and (ike_rekeyed[0].old_spi_i, ike_rekeyed[0].old_spi_r) == old_spis
    assert len(a.endpoint) == 1 and len(b.endpoint) == 1  # the old IKE SA was deleted
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED

    a.endpoint.send_dpd(sid)
    before = len(net.tap)
    net.run()
    assert len(net.tap) == before + 2

    # children survive the IKE rekey and can still be rekeyed on the new IKE SA
    a.endpoint.rekey_child_sa(sid, rekeyed[0].child_id)
    net.run()
    assert len(a.of_type(ChildSaRekeyed)) == 2

    a.endpoint.delete_ike_sa(sid)
    net.run()
    assert a.of_type(IkeSaDeleted) and b.of_type(IkeSaDeleted)[0].by_peer
    live_children = {e.child_id for e in a.of_type(ChildSaCreated)} | {e.child_id for e in a.of_type(ChildSaRekeyed)}
    assert live_children == {e.child_id for e in a.of_type(ChildSaDeleted)}
    assert len(a.endpoint) == 0 and len(b.endpoint) == 0
    with pytest.raises(LocalProtocolError):
        a.endpoint.send_dpd(sid)


def test_delete_child_from_responder_side() -> None:
    net, a, b, icfg = pair()
    _established(net, a, b, icfg)
    child = b.of_type(ChildSaCreated)[0]
    b.endpoint.delete_child_sa(b.endpoint.ike_sa_ids()[0], child.child_id)
    net.run()
    assert b.of_type(ChildSaDeleted)[0].by_peer is False
    assert a.of_type(ChildSaDeleted)[0].by_peer is True
    assert a.endpoint.state_of(a.endpoint.ike_sa_ids()[0]) == IkeState.ESTABLISHED


def test_nat_traversal_switches_to_natt_port_with_marker() -> None:
    icfg = ike_config(local_id="alice@example.org", encap=True)
    net, a, b, icfg = pair(initiator=icfg)
    _established(net, a, b, icfg)
    auth_request = net.tap[2]
    assert auth_request[0][:4] == bytes(4) and auth_request[1][1] == 4500
    assert a.of_type(IkeSaEstablished)[0].udp_encap and b.of_type(IkeSaEstablished)[0].udp_encap
    assert b.of_type(ChildSaCreated)[0].udp_encap
    # the responder answers on the NAT-T port too
    assert net.tap[3][0][:4] == bytes(4) and net.tap[3][1][1] == 4500


def test_retransmission_schedule_follows_strongswan_defaults_then_peer_dead() -> None:
    net, a, b, icfg = pair()
    del net.nodes[RESPONDER_IP]  # nobody answers
    start = net.now
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    a.endpoint.datagrams_to_send(net.now)
    sends = [start]
    for _ in range(10):
        timer = a.endpoint.get_timer()
        if timer is None:
            break
        a.endpoint.handle_timer(timer)
        if a.endpoint.datagrams_to_send(timer):
            sends.append(timer)
    gaps = [round(b_ - a_, 3) for a_, b_ in zip(sends, sends[1:])]
    assert gaps == [4.0, 7.2, 12.96, 23.328, 41.99]
    assert a.of_type(PeerDead) and a.of_type(IkeSaDeleted)
    assert a.endpoint.get_timer() is None


def test_custom_retransmit_config_is_used() -> None:
    icfg = ike_config(local_id="alice@example.org", retransmit=RetransmitConfig(timeout=1.0, base=2.0, tries=2))
    net, a, b, icfg = pair(initiator=icfg)
    del net.nodes[RESPONDER_IP]
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), 0.0)
    a.endpoint.datagrams_to_send(0.0)
    assert a.endpoint.get_timer() == 1.0
    a.endpoint.handle_timer(1.0)
    assert a.endpoint.get_timer() == 3.0
    a.endpoint.handle_timer(3.0)
    assert a.endpoint.get_timer() == 7.0
    a.endpoint.handle_timer(7.0)
    assert a.of_type(PeerDead)


def test_duplicate_request_is_answered_from_cache() -> None:
    net, a, b, icfg = pair()
    _established(net, a, b, icfg)
    auth_request, src, dst = net.tap[2]
    cached_answer = net.tap[3][0]
    b.endpoint.receive_datagram(auth_request, src, net.now)
    out = b.endpoint.datagrams_to_send(net.now)
    assert [d for d, _ in out] == [cached_answer]
    assert b.endpoint.stats["retransmitted_requests"] == 1
    assert len(b.of_type(IkeSaEstablished)) == 1  # not processed twice


def test_dpd_on_idle_sa_and_peer_dead_when_silent() -> None:
    icfg = ike_config(local_id="alice@example.org", dpd_delay=30.0, mobike=False)  # port 500: tap is IKE
    net, a, b, icfg = pair(initiator=icfg)
    sid = _established(net, a, b, icfg)
    established_at = net.now
    net.run(until=established_at + 31)
    dpd = [Message.parse(d) for d, _, _ in net.tap[4:]]
    assert dpd and dpd[0].exchange_type == ExchangeType.INFORMATIONAL
    del net.nodes[RESPONDER_IP]
    net.run(until=net.now + 400)
    assert a.of_type(PeerDead)
    assert sid not in a.endpoint.ike_sa_ids()


def test_rekey_on_time() -> None:
    icfg = ike_config(local_id="alice@example.org", rekey_time=100.0)
    net, a, b, icfg = pair(initiator=icfg)
    _established(net, a, b, icfg)
    net.run(until=net.now + 101)
    assert len(a.of_type(IkeSaRekeyed)) == 1


def test_child_rekey_on_time() -> None:
    from ikev2lib.config import IkeConfig

    icfg = IkeConfig(
        local_id="alice@example.org",
        psk=b"correct horse battery staple",
        children=(ChildConfig(local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",), rekey_time=50.0),),
    )
    net, a, b, icfg = pair(initiator=icfg)
    _established(net, a, b, icfg)
    net.run(until=net.now + 51)
    assert len(a.of_type(ChildSaRekeyed)) == 1 and len(b.of_type(ChildSaRekeyed)) == 1


def test_half_open_sa_expires() -> None:
    net, a, b, icfg = pair()
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    sa_init = a.endpoint.datagrams_to_send(net.now)[0][0]
    b.endpoint.receive_datagram(sa_init, ("192.0.2.1", 500), net.now)
    assert b.endpoint.half_open_count == 1
    timer = b.endpoint.get_timer()
    assert timer is not None
    b.endpoint.handle_timer(timer)
    assert b.endpoint.half_open_count == 0 and len(b.endpoint) == 0
    assert not b.of_type(IkeSaDeleted)  # never visible: no event


def test_initiate_requires_a_child_and_a_group() -> None:
    from ikev2lib.config import IkeConfig
    from ikev2lib.endpoint import IkeEndpoint

    endpoint = IkeEndpoint(local_addr=("192.0.2.1", 500))
    with pytest.raises(LocalProtocolError):
        endpoint.initiate(IkeConfig(local_id="a", psk=b"k", children=()), ("192.0.2.2", 500), 0.0)
    with pytest.raises(LocalProtocolError):
        endpoint.initiate(IkeConfig(local_id="a", psk=b"k", ike_proposals="aes128gcm16-prfsha256"), ("192.0.2.2", 500), 0.0)


def test_gateway_with_per_peer_psks() -> None:
    from ikev2lib.config import IkeConfig
    from ikev2lib.endpoint import IkeEndpoint

    from .network import Network

    gateway = IkeConfig(
        local_id="gw.example.org",
        peer_psks=(("alice@example.org", b"alice key"), ("bob@example.org", b"bob key")),
        children=(ChildConfig(local_ts=("10.2.0.0/16",), remote_ts=("10.0.0.0/8",)),),
    )
    net = Network()
    gw = net.add(IkeEndpoint(gateway, local_addr=(RESPONDER_IP, 500)))
    outcomes = {}
    for i, (name, key) in enumerate([("alice", b"alice key"), ("bob", b"bob key"), ("carol", b"alice key"), ("bob2", b"alice key")]):
        node = net.add(IkeEndpoint(local_addr=(f"192.0.2.{20 + i}", 500)))
        ident = "bob@example.org" if name == "bob2" else f"{name}@example.org"
        cfg = IkeConfig(
            local_id=ident,
            remote_id="gw.example.org",
            psk=key,
            children=(ChildConfig(local_ts=(f"10.{20 + i}.0.0/16",), remote_ts=("10.2.0.0/16",)),),
        )
        node.endpoint.initiate(cfg, (RESPONDER_IP, 500), net.now)
        net.run()
        outcomes[name] = bool(node.of_type(IkeSaEstablished))
    assert outcomes == {"alice": True, "bob": True, "carol": False, "bob2": False}
    assert len(gw.endpoint) == 2


def _udp_encap_flags(net, a, b, icfg):  # type: ignore[no-untyped-def]
    sid = _established(net, a, b, icfg)
    first = a.of_type(ChildSaCreated)[0]
    a.endpoint.rekey_child_sa(sid, first.child_id)
    net.run()
    events = [*a.of_type(ChildSaCreated), *b.of_type(ChildSaCreated), *a.of_type(ChildSaRekeyed),
              *b.of_type(ChildSaRekeyed)]
    assert len(events) == 4
    return {e.udp_encap for e in events}, a.of_type(IkeSaEstablished)[0].udp_encap


def test_no_nat_means_raw_esp_on_created_and_rekeyed_child_sas() -> None:
    # RFC 3948 / RFC 7296 2.23: without a NAT, ESP is not UDP-encapsulated (IP protocol 50); IKE floats
    # to port 4500 all the same with MOBIKE (RFC 4555 3.3, strongSwan's default), and stays without it
    assert _udp_encap_flags(*pair()) == ({False}, True)
    no_mobike = ike_config(local_id="alice@example.org", remote_id="gw.example.org", mobike=False)
    assert _udp_encap_flags(*pair(initiator=no_mobike)) == ({False}, False)


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_encap_config_forces_udp_encapsulation_from_either_side(side: str) -> None:
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", encap=side == "initiator")
    rcfg = ike_config(local_id="gw.example.org", local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",),
                      encap=side == "responder")
    assert _udp_encap_flags(*pair(initiator=icfg, responder=rcfg)) == ({True}, True)


def test_encap_is_not_forced_on_a_peer_without_nat_traversal(monkeypatch: pytest.MonkeyPatch) -> None:
    # a responder that sends no NAT_DETECTION notifies does no NAT-T: ESP stays raw even with encap=True
    real = ike_init.natd_notifies
    monkeypatch.setattr(ike_init, "natd_notifies", lambda sa, *args: real(sa, *args) if sa.is_initiator else [])
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", encap=True)
    net, a, b, icfg = pair(initiator=icfg)
    _established(net, a, b, icfg)
    response = Message.parse(net.tap[1][0])
    assert not [n for n in response.find_all(Notify) if n.notify_type == NotifyType.NAT_DETECTION_SOURCE_IP]
    assert [e.udp_encap for e in a.of_type(ChildSaCreated)] == [False]
