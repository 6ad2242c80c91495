"""Simultaneous IKE SA rekeys (RFC 7296 2.8.2), with the nonces chosen by the test.

Both ends answer each other's rekey; of the two new IKE SAs the one created with the lowest of the
four nonces is redundant and deleted by its creator, and the creator of the survivor deletes the old
SA. Afterwards each end holds exactly the same single IKE SA, with the Child SAs on it.
"""

from __future__ import annotations

import itertools

import pytest

from ikev2lib.events import ChildSaCreated, IkeSaDeleted, IkeSaRekeyed, ProtocolErrorEvent
from ikev2lib.exchanges import ike_rekey
from ikev2lib.ike_sa import REKEYED_SA_LIFETIME
from ikev2lib.state import IkeState
from ikev2lib.wire import ExchangeType, Message, NotifyType

from .network import RESPONDER_IP, pair

PACKET = bytes.fromhex("4500001400010000401100000a0100010a020001")  # an IPv4 header, no payload


def _nonce(rank: int) -> bytes:
    return bytes([0x10 * (rank + 1)]) * 32


def _established(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    net, a, b, icfg = pair()
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated)
    return net, a, b, sid


def _live(endpoint):  # type: ignore[no-untyped-def]
    return [sa for sa in endpoint.connections() if not sa.finished]


def _settled_on_one_sa(net, a, b, sid):  # type: ignore[no-untyped-def]
    """Run past the rekeyed-SA lifetime; both ends must hold one and the same IKE SA."""
    net.run()
    net.run(until=net.now + REKEYED_SA_LIFETIME + 5)
    (sa_a,) = _live(a.endpoint)
    (sa_b,) = _live(b.endpoint)
    assert (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r)
    assert sa_a is a.endpoint.connection(sid) and sa_a.state == sa_b.state == IkeState.ESTABLISHED
    (child_a,) = sa_a.children.values()
    (child_b,) = sa_b.children.values()
    assert child_b.inbound.decap(child_a.outbound.encap(PACKET)) == (4, PACKET)
    assert child_a.inbound.decap(child_b.outbound.encap(PACKET)) == (4, PACKET)
    # the user saw one rekey per end, to the surviving SA, and no IKE SA deletion
    for node, sa in ((a, sa_a), (b, sa_b)):
        (rekeyed,) = node.of_type(IkeSaRekeyed)
        assert (rekeyed.spi_i, rekeyed.spi_r) == (sa.spi_i, sa.spi_r)
        assert node.of_type(IkeSaDeleted) == []
    return sa_a, sa_b


# Draw order with an instant, lossless network: A's Ni (a's request), B's Ni (b's request), then
# b answers A (A's Nr), then a answers B (B's Nr). `lowest` names which of them is smallest.
ORDER = ("Ni of A", "Ni of B", "Nr of A", "Nr of B")


@pytest.mark.parametrize("lowest", range(4), ids=ORDER)
def test_both_ends_rekey_at_once_and_keep_the_same_single_sa(lowest: int, monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b, sid = _established(monkeypatch)
    ranks = itertools.cycle([1, 2, 3, 4])
    values = [_nonce(next(ranks)) for _ in range(4)]
    values[lowest] = _nonce(0)
    drawn = iter(values)
    monkeypatch.setattr(ike_rekey, "new_nonce", lambda: next(drawn))
    old = a.endpoint.connection(sid)
    a.endpoint.rekey_ike_sa(sid)
    b.endpoint.rekey_ike_sa(b.endpoint.ike_sa_ids()[0])
    sa_a, _ = _settled_on_one_sa(net, a, b, sid)
    a_lost = lowest in (0, 2)  # the lowest nonce is in A's exchange: A is redundant, B (b's) survives
    assert sa_a.is_initiator is (not a_lost)  # a initiated A, b initiated B
    assert a.endpoint.stats["ike_rekey_collisions_lost" if a_lost else "ike_rekey_collisions_won"] == 1
    assert b.endpoint.stats["ike_rekey_collisions_won" if a_lost else "ike_rekey_collisions_lost"] == 1
    # the old SA was deleted by the survivor's initiator, the redundant one by its own creator
    deletes = [
        (src[0], Message.parse(d[4:] if d[:4] == bytes(4) else d))
        for d, src, _ in net.tap
        if Message.parse_header(d[4:] if d[:4] == bytes(4) else d).exchange_type == ExchangeType.INFORMATIONAL
    ]
    old_spis = (old.spi_i, old.spi_r)
    deleters_of_old = {ip for ip, m in deletes if not m.is_response and (m.spi_i, m.spi_r) == old_spis}
    assert deleters_of_old == {b.ip if a_lost else a.ip}


def test_peer_deletes_the_old_sa_before_our_answer_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    """b wins and deletes the old SA; a never sees b's answer to its rekey: b's new SA takes over."""
    net, a, b, sid = _established(monkeypatch)
    drawn = iter([_nonce(1), _nonce(2), _nonce(0), _nonce(3)])  # lowest nonce in A's exchange: B survives
    monkeypatch.setattr(ike_rekey, "new_nonce", lambda: next(drawn))
    old = a.endpoint.connection(sid)

    def lose_answer_to_a(data: bytes, src: tuple[str, int], dst_ip: str) -> bool:
        message = Message.parse_header(data[4:] if data[:4] == bytes(4) else data)
        is_rekey_answer = message.exchange_type == ExchangeType.CREATE_CHILD_SA and message.is_response
        return is_rekey_answer and dst_ip == a.ip and (message.spi_i, message.spi_r) == (old.spi_i, old.spi_r)

    net.drop = lose_answer_to_a
    a.endpoint.rekey_ike_sa(sid)
    b.endpoint.rekey_ike_sa(b.endpoint.ike_sa_ids()[0])
    sa_a, _ = _settled_on_one_sa(net, a, b, sid)
    assert sa_a.is_initiator is False  # b's SA
    assert old.state == IkeState.DELETED


def _child_exchange_in_flight(node, kind: str) -> None:  # type: ignore[no-untyped-def]
    sid = node.endpoint.ike_sa_ids()[0]
    child_id = sorted(node.endpoint.connection(sid).children)[0]
    if kind == "rekey":
        node.endpoint.rekey_child_sa(sid, child_id)
    elif kind == "create":
        node.endpoint.create_child_sa(sid)
    else:
        node.endpoint.delete_child_sa(sid, child_id)


@pytest.mark.parametrize("kind", ["rekey", "create", "delete"])
@pytest.mark.parametrize("child_side", ["initiator", "responder"])
def test_ike_rekey_while_the_peer_has_a_child_exchange_in_flight_is_refused(
    kind: str, child_side: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 7296 2.25: a request that cannot complete because of a rekeying operation gets
    # TEMPORARY_FAILURE. Answering it instead moved the Child SAs to the new IKE SA while the
    # CREATE_CHILD_SA/Delete answer still came on the old one: the new Child SA was installed on the
    # old IKE SA (which then took it away) and the old one stayed REKEYED or DELETING for good.
    net, a, b, _ = _established(monkeypatch)
    child_node, ike_node = (a, b) if child_side == "initiator" else (b, a)
    _child_exchange_in_flight(child_node, kind)
    ike_node.endpoint.rekey_ike_sa(ike_node.endpoint.ike_sa_ids()[0])  # both requests in flight at once
    net.run()
    net.run(until=net.now + REKEYED_SA_LIFETIME + 5)
    (sa_a,) = _live(a.endpoint)
    (sa_b,) = _live(b.endpoint)
    assert (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r)
    assert sa_a.state == sa_b.state == IkeState.ESTABLISHED
    ours = {(c.spi_in, c.spi_out) for c in sa_a.children.values()}
    theirs = {(c.spi_out, c.spi_in) for c in sa_b.children.values()}
    assert ours == theirs and len(ours) == {"rekey": 1, "create": 2, "delete": 0}[kind]
    assert all(c.state.value == "installed" for c in (*sa_a.children.values(), *sa_b.children.values()))
    refused = [e for e in ike_node.of_type(ProtocolErrorEvent) if e.received]
    assert [e.notify for e in refused] == [NotifyType.TEMPORARY_FAILURE]
    for child in sa_a.children.values():
        peer = next(c for c in sa_b.children.values() if c.spi_in == child.spi_out)
        assert peer.inbound.decap(child.outbound.encap(PACKET)) == (4, PACKET)
