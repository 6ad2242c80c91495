"""Handshakes and rekeys over a network that drops 30%, duplicates and reorders (seeded)."""

from __future__ import annotations

import pytest

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.events import (
    ChildSaCreated,
    ChildSaDeleted,
    ChildSaRekeyed,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
)
from ikev2lib.state import IkeState

from .network import RESPONDER_IP, pair

SEEDS = range(8)


def _settle_until(net, predicate, limit: float = 2000.0) -> None:  # type: ignore[no-untyped-def]
    """Run the simulated network until `predicate()` holds (retransmissions recover losses)."""
    end = net.now + limit
    while net.now < end and not predicate():
        net.run(until=min(end, net.now + 50.0))
    assert predicate()


@pytest.mark.parametrize("seed", SEEDS)
def test_lifecycle_completes_at_30_percent_loss(seed: int) -> None:
    net, a, b, icfg = pair(seed=seed, loss=0.3, duplicate=0.1, max_delay=1.5)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    _settle_until(net, lambda: a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated))
    assert len(a.of_type(IkeSaEstablished)) == 1 and len(b.of_type(IkeSaEstablished)) == 1
    child = a.of_type(ChildSaCreated)[0]

    a.endpoint.rekey_child_sa(sid, child.child_id)
    _settle_until(net, lambda: a.of_type(ChildSaDeleted) and b.of_type(ChildSaDeleted))
    assert len(a.of_type(ChildSaRekeyed)) == 1 and len(b.of_type(ChildSaRekeyed)) == 1

    a.endpoint.rekey_ike_sa(sid)
    _settle_until(
        net, lambda: a.of_type(IkeSaRekeyed) and b.of_type(IkeSaRekeyed) and len(a.endpoint) == len(b.endpoint) == 1
    )

    a.endpoint.create_child_sa(sid)
    _settle_until(net, lambda: len(b.of_type(ChildSaCreated)) == 2)

    a.endpoint.delete_ike_sa(sid)
    _settle_until(net, lambda: a.of_type(IkeSaDeleted) and b.of_type(IkeSaDeleted) and len(a.endpoint) == 0)
    assert len(a.endpoint) == 0 and len(b.endpoint) == 0
    # both sides agree on which Child SAs existed and every one was deleted exactly once
    for node in (a, b):
        made = {e.child_id for e in node.of_type(ChildSaCreated)} | {e.child_id for e in node.of_type(ChildSaRekeyed)}
        gone = [e.child_id for e in node.of_type(ChildSaDeleted)]
        assert sorted(gone) == sorted(made)
    assert net.dropped > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_both_sides_rekeying_children_at_once_still_converge(seed: int) -> None:
    """Simultaneous rekeys of different Child SAs (each side one) under loss."""
    net, a, b, icfg = pair(seed=seed, loss=0.3, duplicate=0.1, max_delay=1.0)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    _settle_until(net, lambda: a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated))
    a.endpoint.create_child_sa(sid)
    _settle_until(net, lambda: len(b.of_type(ChildSaCreated)) == 2)
    first_a = a.of_type(ChildSaCreated)[0].child_id
    second_b = b.of_type(ChildSaCreated)[1].child_id
    a.endpoint.rekey_child_sa(sid, first_a)
    b.endpoint.rekey_child_sa(b.endpoint.ike_sa_ids()[0], second_b)
    _settle_until(net, lambda: len(a.of_type(ChildSaDeleted)) == 2 and len(b.of_type(ChildSaDeleted)) == 2)
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED
    assert len(a.endpoint.connection(sid).children) == 2
    assert len(b.endpoint.connection(b.endpoint.ike_sa_ids()[0]).children) == 2


def test_many_initiators_one_responder() -> None:
    """The responder serves several peers at once, demultiplexing by SPI."""
    from ikev2lib.endpoint import IkeEndpoint

    from .network import Network, ike_config

    net = Network(seed=7, loss=0.2, max_delay=0.5)
    responder = net.add(
        IkeEndpoint(
            ike_config(local_id="gw.example.org", local_ts=("10.2.0.0/16",), remote_ts=("10.0.0.0/8",)),
            local_addr=(RESPONDER_IP, 500),
        )
    )
    clients = []
    for i in range(5):
        node = net.add(IkeEndpoint(local_addr=(f"192.0.2.{10 + i}", 500)))
        cfg = IkeConfig(
            local_id=f"client{i}@example.org",
            psk=b"correct horse battery staple",
            children=(ChildConfig(local_ts=(f"10.{10 + i}.0.0/16",), remote_ts=("10.2.0.0/16",)),),
        )
        node.endpoint.initiate(cfg, (RESPONDER_IP, 500), net.now)
        clients.append(node)
    _settle_until(net, lambda: len(responder.of_type(ChildSaCreated)) == 5)
    assert len(responder.endpoint) == 5
    remote = sorted(e.remote_ts for e in responder.of_type(ChildSaCreated))
    assert remote == [(f"10.{10 + i}.0.0/16",) for i in range(5)]


@pytest.mark.parametrize("seed", SEEDS)
def test_simultaneous_rekey_of_the_same_child_sa_resolves_by_nonces(seed: int) -> None:
    """RFC 7296 2.8.1: both ends rekey one Child SA at once; one new SA survives on both sides."""
    loss = 0.0 if seed < 4 else 0.3
    net, a, b, icfg = pair(seed=seed, loss=loss, max_delay=0.5)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    _settle_until(net, lambda: a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated))
    a.endpoint.rekey_child_sa(sid, a.of_type(ChildSaCreated)[0].child_id)
    b.endpoint.rekey_child_sa(b.endpoint.ike_sa_ids()[0], b.of_type(ChildSaCreated)[0].child_id)

    def settled() -> bool:
        net.run(until=net.now + 10)
        ca = a.endpoint.connection(sid).children
        cb = b.endpoint.connection(b.endpoint.ike_sa_ids()[0]).children
        return len(ca) == 1 and len(cb) == 1 and not net._retransmitting()

    _settle_until(net, settled)
    (child_a,) = a.endpoint.connection(sid).children.values()
    (child_b,) = b.endpoint.connection(b.endpoint.ike_sa_ids()[0]).children.values()
    assert (child_a.spi_in, child_a.spi_out) == (child_b.spi_out, child_b.spi_in)
    packet = bytes.fromhex("4500001400010000401100000a0100010a020001")  # an IPv4 header, no payload
    assert child_b.inbound.decap(child_a.outbound.encap(packet)) == (4, packet)


@pytest.mark.parametrize("seed", SEEDS)
def test_simultaneous_ike_rekey_one_wins(seed: int) -> None:
    """RFC 7296 2.8.2: both ends rekey the IKE SA at once; exactly one new IKE SA remains."""
    loss = 0.0 if seed < 4 else 0.3
    net, a, b, icfg = pair(seed=seed, loss=loss, max_delay=0.5)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    _settle_until(net, lambda: a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated))
    a.endpoint.rekey_ike_sa(sid)
    b.endpoint.rekey_ike_sa(b.endpoint.ike_sa_ids()[0])
    _settle_until(
        net, lambda: a.of_type(IkeSaRekeyed) and b.of_type(IkeSaRekeyed) and len(a.endpoint) == len(b.endpoint) == 1
    )
    new_a, new_b = a.of_type(IkeSaRekeyed)[-1], b.of_type(IkeSaRekeyed)[-1]
    assert (new_a.spi_i, new_a.spi_r) == (new_b.spi_i, new_b.spi_r)
    assert len(a.endpoint.connection(sid).children) == 1
    a.endpoint.send_dpd(sid)
    _settle_until(net, lambda: not net._retransmitting())
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED


def _oracle_timer(endpoint) -> float | None:  # type: ignore[no-untyped-def]
    """The O(n) definition of get_timer: the earliest deadline of any IKE SA or lingering SA."""
    from ikev2lib.exchanges import next_deadline

    times = [t for t in (next_deadline(c) for c in endpoint.connections()) if t is not None]
    times += [expiry for expiry, _ in endpoint._lingering.values()]
    return min(times) if times else None


@pytest.mark.parametrize("seed", range(4))
def test_timer_heap_agrees_with_a_full_scan(seed: int) -> None:
    from ikev2lib.endpoint import IkeEndpoint

    from .network import Network, ike_config

    net = Network(seed=seed, loss=0.3, max_delay=1.0)
    gw = net.add(
        IkeEndpoint(
            ike_config(local_id="gw.example.org", local_ts=("10.2.0.0/16",), remote_ts=("10.0.0.0/8",), dpd_delay=20.0),
            local_addr=(RESPONDER_IP, 500),
        )
    )
    clients = []
    for i in range(6):
        node = net.add(IkeEndpoint(local_addr=(f"192.0.2.{30 + i}", 500)))
        cfg = IkeConfig(
            local_id=f"c{i}@example.org",
            psk=b"correct horse battery staple",
            children=(ChildConfig(local_ts=(f"10.{30 + i}.0.0/16",), remote_ts=("10.2.0.0/16",), rekey_time=40.0 + i),),
            dpd_delay=15.0 + i,
            rekey_time=60.0 + 3 * i,
        )
        clients.append((node, node.endpoint.initiate(cfg, (RESPONDER_IP, 500), net.now)))
    for step in range(40):
        net.run(until=net.now + 7.0)
        if step == 10:
            clients[0][0].endpoint.delete_ike_sa(clients[0][1])
        for node in net.nodes.values():
            assert node.endpoint.get_timer() == _oracle_timer(node.endpoint)
    assert len(gw.endpoint) >= 5
