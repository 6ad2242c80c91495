"""RFC 9611 per-resource Child SAs between two engines: the fallback SA, one SA per resource, the
responder's TS_MAX_QUEUE limit, peers without support, rekeys that keep the resource, SPI residues."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikev2lib.child_sa import random_esp_spi
from ikev2lib.config import MAX_PER_CPU_SAS, ChildConfig, IkeConfig
from ikev2lib.events import ChildSaCreated, ChildSaRekeyed, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.exceptions import LocalProtocolError, RemoteProtocolError
from ikev2lib.exchanges import child_create
from ikev2lib.ike_sa import IkeSa
from ikev2lib.wire import Notify, NotifyType

from .network import RESPONDER_IP, ike_config, pair


def _with_per_cpu(cfg: IkeConfig, n: int) -> IkeConfig:
    return dataclasses.replace(cfg, children=(dataclasses.replace(cfg.children[0], per_cpu_sas=n),))


def _configs(initiator_n: int, responder_n: int) -> tuple[IkeConfig, IkeConfig]:
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org")
    rcfg = ike_config(local_id="gw.example.org", remote_id="alice@example.org", local_ts=("10.2.0.0/16",),
                      remote_ts=("10.1.0.0/16",))  # fmt: skip
    return _with_per_cpu(icfg, initiator_n), _with_per_cpu(rcfg, responder_n)


def _up(initiator_n: int, responder_n: int):  # type: ignore[no-untyped-def]
    icfg, rcfg = _configs(initiator_n, responder_n)
    net, a, b, _ = pair(initiator=icfg, responder=rcfg)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert len(a.of_type(IkeSaEstablished)) == 1 and len(b.of_type(IkeSaEstablished)) == 1
    return net, a, b, sid


def _esp_roundtrip(sender: ChildSaCreated | ChildSaRekeyed, receiver: ChildSaCreated | ChildSaRekeyed) -> None:
    inner = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)  # IPv4/UDP
    next_header, plain = receiver.inbound.decap(sender.outbound.encap(inner))
    assert next_header == 4 and plain == inner


def test_fallback_and_one_sa_per_resource_with_spi_residues() -> None:
    net, a, b, _ = _up(2, 2)
    ours, theirs = a.of_type(ChildSaCreated), b.of_type(ChildSaCreated)
    assert [(c.per_resource, c.resource) for c in ours] == [(True, None), (True, 0), (True, 1)]
    assert [(c.per_resource, c.resource) for c in theirs] == [(True, None), (True, 0), (True, 1)]
    for mine, peer in zip(ours, theirs):
        assert mine.spi_in == peer.spi_out and mine.spi_out == peer.spi_in
        assert mine.local_ts == peer.remote_ts == ("10.1.0.0/16",)
        _esp_roundtrip(mine, peer)
        _esp_roundtrip(peer, mine)
    for event in ours[1:] + theirs[1:]:  # both sides steer their inbound SPI of resource k to worker k
        assert int.from_bytes(event.spi_in, "big") % 2 == event.resource
    sa = a.endpoint.connection(ours[0].ike_sa_id)
    assert {c.peer_resource for c in sa.children.values()} == {b"", (0).to_bytes(4, "big"), (1).to_bytes(4, "big")}


def test_each_per_resource_sa_counts_its_own_sequence_numbers() -> None:
    net, a, b, _ = _up(2, 2)
    ours, theirs = a.of_type(ChildSaCreated), b.of_type(ChildSaCreated)
    inner = bytes.fromhex("4500001c000100004011f9c40a0100010a020001") + bytes(8)
    first = [c.outbound.encap(inner) for c in ours]
    second = [c.outbound.encap(inner) for c in ours]
    # ESP header: SPI, then the sequence number; every SA starts at 1 on its own
    assert [int.from_bytes(p[4:8], "big") for p in first] == [1, 1, 1]
    assert [int.from_bytes(p[4:8], "big") for p in second] == [2, 2, 2]
    for packet, peer in zip(second + first, theirs + theirs):  # out of order across SAs: no replay drop
        peer.inbound.decap(packet)


def test_responder_limit_is_refused_with_ts_max_queue_and_the_initiator_stops() -> None:
    net, a, b, _ = _up(3, 1)
    assert [(c.per_resource, c.resource) for c in a.of_type(ChildSaCreated)] == [(True, None), (True, 0)]
    assert len(b.of_type(ChildSaCreated)) == 2
    refusals = [e for e in a.of_type(ProtocolErrorEvent) if e.notify == NotifyType.TS_MAX_QUEUE]
    assert len(refusals) == 1 and refusals[0].received
    # IKE_SA_INIT, IKE_AUTH, two CREATE_CHILD_SA (one refused): the third resource is never asked for
    assert len(net.tap) == 8


def test_peer_without_support_gets_an_ordinary_child_sa_and_nothing_more() -> None:
    net, a, b, _ = _up(2, 0)
    created = a.of_type(ChildSaCreated)
    assert [(c.per_resource, c.resource) for c in created] == [(False, None)]
    assert [(c.per_resource, c.resource) for c in b.of_type(ChildSaCreated)] == [(False, None)]
    assert len(net.tap) == 4


def test_responder_only_support_answers_the_fallback_but_asks_for_nothing() -> None:
    net, a, b, _ = _up(0, 2)  # an initiator that does not ask: no notify, ordinary SA both sides
    assert [(c.per_resource, c.resource) for c in b.of_type(ChildSaCreated)] == [(False, None)]
    assert len(net.tap) == 4


def test_rekey_keeps_the_resource_and_the_spi_residue_on_both_sides() -> None:
    net, a, b, sid = _up(2, 2)
    bound = [c for c in a.of_type(ChildSaCreated) if c.resource == 1][0]
    a.endpoint.rekey_child_sa(sid, bound.child_id)
    net.run()
    mine, peer = a.of_type(ChildSaRekeyed)[0], b.of_type(ChildSaRekeyed)[0]
    assert mine.old_child_id == bound.child_id
    assert (mine.per_resource, mine.resource) == (peer.per_resource, peer.resource) == (True, 1)
    assert int.from_bytes(mine.spi_in, "big") % 2 == 1 and int.from_bytes(peer.spi_in, "big") % 2 == 1
    ours = a.endpoint.connection(sid).children[mine.child_id]
    assert ours.peer_resource == (1).to_bytes(4, "big")  # the peer's identifier of the SA carries over
    _esp_roundtrip(mine, peer)
    _esp_roundtrip(peer, mine)
    # a second rekey of the same resource is still answered (the old one is gone, resource 1 is reused)
    a.endpoint.rekey_child_sa(sid, mine.child_id)
    net.run()
    assert [e.resource for e in b.of_type(ChildSaRekeyed)] == [1, 1]
    sa = b.endpoint.connection(peer.ike_sa_id)
    assert sorted(str(c.resource) for c in sa.children.values()) == ["0", "1", "None"]


def test_the_responder_fills_a_freed_resource_again() -> None:
    net, a, b, sid = _up(2, 2)
    resource0 = [c for c in a.of_type(ChildSaCreated) if c.resource == 0][0]
    a.endpoint.delete_child_sa(sid, resource0.child_id)
    net.run()
    cfg = a.endpoint.connection(sid).config.children[0]
    a.endpoint.create_child_sa(sid, cfg)  # without a resource: an ordinary new member, asking again
    net.run()
    for node in (a, b):
        created = node.of_type(ChildSaCreated)
        assert (created[-1].per_resource, created[-1].resource) == (True, 0)
        assert int.from_bytes(created[-1].spi_in, "big") % 2 == 0
    assert len(a.of_type(ChildSaCreated)) == 4 and not a.of_type(ProtocolErrorEvent)


def test_resource_identifier_is_bounded() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        child_create._peer_resource(Notify(NotifyType.SA_RESOURCE_INFO, bytes(child_create.MAX_RESOURCE_INFO + 1)))
    assert caught.value.notify == NotifyType.INVALID_SYNTAX
    data = bytes(range(child_create.MAX_RESOURCE_INFO))
    assert child_create._peer_resource(Notify(NotifyType.SA_RESOURCE_INFO, data)) == data


@pytest.mark.parametrize("value", [-1, MAX_PER_CPU_SAS + 1, True, 1.5])
def test_per_cpu_sas_config_is_validated(value: object) -> None:
    with pytest.raises(LocalProtocolError):
        ChildConfig(per_cpu_sas=value)  # type: ignore[arg-type]


@given(k=st.integers(0, MAX_PER_CPU_SAS - 1), n=st.integers(1, MAX_PER_CPU_SAS))
def test_spi_residue_property(k: int, n: int) -> None:
    if k >= n:
        k %= n
    value = int.from_bytes(random_esp_spi((k, n)), "big")
    assert 255 < value <= 0xFFFFFFFF and value % n == k


def test_requests_carry_the_notify_only_when_asking(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback's request has an empty SA_RESOURCE_INFO, an additional SA's its resource index,
    a rekey none (the old SA's resource carries over, as in strongSwan)."""
    sent: list[tuple[int, list[object]]] = []
    original = IkeSa.send_request

    def record(self, request, payloads, now):  # type: ignore[no-untyped-def]
        sent.append((int(request.exchange_type), list(payloads)))
        return original(self, request, payloads, now)

    monkeypatch.setattr(IkeSa, "send_request", record)
    net, a, b, sid = _up(1, 1)
    bound = [c for c in a.of_type(ChildSaCreated) if c.resource == 0][0]
    a.endpoint.rekey_child_sa(sid, bound.child_id)
    net.run()

    def infos(payloads: list[object]) -> list[bytes]:
        return [p.data for p in payloads if isinstance(p, Notify) and p.notify_type == NotifyType.SA_RESOURCE_INFO]

    by_exchange = [(kind, infos(payloads)) for kind, payloads in sent if kind in (35, 36)]
    assert by_exchange == [(35, [b""]), (36, [bytes(4)]), (36, [])]  # IKE_AUTH, CREATE_CHILD_SA x2
