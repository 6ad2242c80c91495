"""NAT traversal that survives the NAT (RFC 7296 2.23, RFC 3948 2.3), in the simulated network.

The initiator sits behind a NAPT (`network.Nat`): the responder sees it at the NAT's public address
and a mapped port, and nothing reaches it except through a mapping. Both sides learn who is behind
the NAT from NAT_DETECTION; the one behind it sends keepalives, the other follows a new mapping after
an authenticated message (IKE here, ESP through `peer_address_seen`), never after anything else.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ikev2lib.config import DEFAULT_NATT_KEEPALIVE
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import ChildSaCreated, IkeSaEstablished, PeerAddressChanged
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.natt import NATT_KEEPALIVE
from ikev2lib.state import IkeState

from .network import RESPONDER_IP, Nat, Network, Node, ike_config

INSIDE_IP = "10.0.0.2"
NAT_IP = "198.51.100.1"
KEEPALIVE = 5.0


def natted_pair(keepalive: float | None = KEEPALIVE) -> tuple[Network, Node, Node, int, int]:
    """An established IKE SA from behind the NAT; returns the network, both nodes and their IKE SA ids."""
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", natt_keepalive=keepalive)
    rcfg = ike_config(local_id="gw.example.org", remote_id="alice@example.org", local_ts=("10.2.0.0/16",),
                      remote_ts=("10.1.0.0/16",), natt_keepalive=keepalive)
    net = Network()
    net.nat = Nat(INSIDE_IP, NAT_IP)
    a = net.add(IkeEndpoint(local_addr=(INSIDE_IP, 500)))
    b = net.add(IkeEndpoint(rcfg, local_addr=(RESPONDER_IP, 500)))
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated)
    return net, a, b, a.endpoint.ike_sa_ids()[0], b.endpoint.ike_sa_ids()[0]


def keepalives(net: Network, since: int) -> list[tuple[str, int]]:
    return [src for data, src, _ in net.tap[since:] if data == NATT_KEEPALIVE]


def test_both_sides_learn_who_is_behind_the_nat() -> None:
    _, a, b, ia, ib = natted_pair()
    initiator, responder = a.endpoint.connection(ia), b.endpoint.connection(ib)
    assert (initiator.nat_here, initiator.nat_there) == (True, False)
    assert (responder.nat_here, responder.nat_there) == (False, True)
    assert responder.remote_addr == (NAT_IP, 40001)  # the NAT-T port's mapping (500 got 40000)
    assert b.of_type(IkeSaEstablished)[0].udp_encap and b.of_type(ChildSaCreated)[0].udp_encap


def test_the_side_behind_the_nat_sends_keepalives_every_interval_from_the_natt_port() -> None:
    net, a, b, _, _ = natted_pair()
    start, mark = net.now, len(net.tap)
    net.run(until=start + 3 * KEEPALIVE + 1, idle_stop=False)
    sent = keepalives(net, mark)
    assert sent == [(NAT_IP, 40001)] * 3  # only the initiator, from its NAT-T port's mapping
    assert b.endpoint.stats.get("natt_keepalives") == 3  # and the responder took them as keepalives
    assert a.endpoint.stats.get("natt_keepalives_sent") == 3


def test_keepalives_are_off_when_configured_so_and_default_to_twenty_seconds() -> None:
    net, _, _, _, _ = natted_pair(keepalive=None)
    mark = len(net.tap)
    net.run(until=net.now + 60, idle_stop=False)
    assert keepalives(net, mark) == []
    assert DEFAULT_NATT_KEEPALIVE == 20.0
    with pytest.raises(LocalProtocolError, match="natt_keepalive must be > 0"):
        ike_config(local_id="a@example.org", natt_keepalive=0.0)


def test_after_the_nat_rebinds_the_responder_follows_the_next_authenticated_message() -> None:
    net, a, b, ia, ib = natted_pair()
    net.nat.rebind()  # type: ignore[union-attr]
    b.endpoint.send_dpd(ib)  # before the peer sends anything, the responder's request is lost in the NAT
    net.run(until=net.now + 1, idle_stop=False)
    assert net.nat_dropped >= 1 and b.of_type(PeerAddressChanged) == []
    a.endpoint.send_dpd(ia)  # the initiator's next authenticated message comes from a new mapping
    net.run(until=net.now + 30, idle_stop=False)
    moved = b.of_type(PeerAddressChanged)
    assert len(moved) == 1 and moved[0].old_addr == (NAT_IP, 40001) and moved[0].remote_addr[0] == NAT_IP
    new_addr = moved[0].remote_addr
    assert new_addr != moved[0].old_addr and b.endpoint.connection(ib).remote_addr == new_addr
    assert b.endpoint.state_of(ib) == IkeState.ESTABLISHED and a.endpoint.state_of(ia) == IkeState.ESTABLISHED
    # the responder's own requests reach the initiator again (its retransmitted DPD found the new mapping)
    b.endpoint.rekey_child_sa(ib, b.of_type(ChildSaCreated)[0].child_id)
    net.run(until=net.now + 30, idle_stop=False)
    assert len(a.of_type(ChildSaCreated)) == 1 and a.endpoint.state_of(ia) == IkeState.ESTABLISHED
    assert a.of_type(PeerAddressChanged) == []  # the side behind the NAT never follows


def test_forged_and_replayed_messages_from_a_new_port_move_nothing() -> None:
    net, a, b, _, ib = natted_pair()
    requests = [(data, src) for data, src, dst in net.tap if dst == RESPONDER_IP and data[:4] == bytes(4)]
    auth = requests[-1][0]  # the initiator's IKE_AUTH request, authenticated, already answered
    tampered = auth[:-1] + bytes([auth[-1] ^ 1])  # its ICV no longer verifies
    for data in (auth, tampered, b"\x00\x00\x00\x00" + bytes(40)):
        net.inject(data, (NAT_IP, 55555), RESPONDER_IP, 4500)
    net.run(until=net.now + 1, idle_stop=False)
    assert b.of_type(PeerAddressChanged) == []
    assert b.endpoint.connection(ib).remote_addr == (NAT_IP, 40001)


def test_authenticated_esp_from_a_new_address_is_followed_only_towards_a_natted_peer() -> None:
    net, a, b, ia, ib = natted_pair()
    assert b.endpoint.peer_address_seen(ib, (NAT_IP, 41000), net.now) is True
    assert b.of_type(PeerAddressChanged)[0].remote_addr == (NAT_IP, 41000)
    assert b.endpoint.peer_address_seen(ib, (NAT_IP, 41000), net.now) is False  # already there
    assert a.endpoint.peer_address_seen(ia, (RESPONDER_IP, 4600), net.now) is False  # we are behind the NAT
    assert a.endpoint.connection(ia).remote_addr == (RESPONDER_IP, 4500)


def test_without_a_nat_an_address_change_is_left_to_mobike() -> None:
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", mobike=False)
    rcfg = replace(icfg, local_id="gw.example.org", remote_id="alice@example.org")
    net = Network()
    a = net.add(IkeEndpoint(local_addr=("192.0.2.1", 500)))
    b = net.add(IkeEndpoint(rcfg, local_addr=(RESPONDER_IP, 500)))
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    ib = b.endpoint.ike_sa_ids()[0]
    assert b.endpoint.peer_address_seen(ib, ("192.0.2.99", 4500), net.now) is False
    assert b.endpoint.connection(ib).remote_addr == ("192.0.2.1", 500)
