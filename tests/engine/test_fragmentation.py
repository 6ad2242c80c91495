"""IKE message fragmentation (RFC 7383): sending SKF fragments and reassembling them."""

from __future__ import annotations

import pytest

from ikev2lib.events import ChildSaCreated, IkeSaEstablished
from ikev2lib.wire import Message, NotifyType, PayloadType

from .network import RESPONDER_IP, ike_config, pair

# eight selectors on each side make IKE_AUTH larger than one 256-byte fragment
MANY_LEFT = tuple(f"10.1.{i}.0/24" for i in range(8))
MANY_RIGHT = tuple(f"10.2.{i}.0/24" for i in range(8))


def _skf(data: bytes) -> bool:
    ike = data[4:] if data[:4] == bytes(4) else data  # on port 4500 behind the non-ESP marker (MOBIKE floats)
    return Message.parse_header(ike).next_payload == PayloadType.SKF


@pytest.mark.parametrize("seed,loss", [(0, 0.0), (1, 0.3), (2, 0.3), (3, 0.3)])
def test_small_fragment_size_splits_ike_auth_and_the_peer_reassembles(seed: int, loss: float) -> None:
    icfg = ike_config(local_id="alice@example.org", fragment_size=256, local_ts=MANY_LEFT, remote_ts=MANY_RIGHT)
    rcfg = ike_config(local_id="gw.example.org", fragment_size=256, local_ts=MANY_RIGHT, remote_ts=MANY_LEFT)
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg, seed=seed, loss=loss, duplicate=0.1, max_delay=0.5)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    for _ in range(20):
        net.run(until=net.now + 100)
        if a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated):
            break
    assert a.of_type(IkeSaEstablished) and b.of_type(ChildSaCreated) and a.of_type(ChildSaCreated)
    fragments = [d for d, _, _ in net.tap if _skf(d)]
    assert len(fragments) >= 4  # the IKE_AUTH request and response each in at least two
    assert all(len(d) <= 256 - 28 for d in fragments)


def test_no_fragments_when_the_peer_did_not_announce_support() -> None:
    icfg = ike_config(local_id="alice@example.org", fragment_size=256)
    net, a, b, icfg = pair(initiator=icfg)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    sa_init = a.endpoint.datagrams_to_send(net.now)[0][0]
    message = Message.parse(sa_init)
    message.payloads = [p for p in message.payloads if getattr(p, "notify_type", None) != NotifyType.IKEV2_FRAGMENTATION_SUPPORTED]
    b.endpoint.receive_datagram(message.serialize(), ("192.0.2.1", 500), net.now)
    answer = Message.parse(b.endpoint.datagrams_to_send(net.now)[0][0])
    assert answer.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is None


def test_forged_and_truncated_fragments_are_dropped() -> None:
    icfg = ike_config(local_id="alice@example.org", fragment_size=256, local_ts=MANY_LEFT, remote_ts=MANY_RIGHT)
    rcfg = ike_config(local_id="gw.example.org", fragment_size=256, local_ts=MANY_RIGHT, remote_ts=MANY_LEFT)
    net, a, b, icfg = pair(initiator=icfg, responder=rcfg)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    sa_init = a.endpoint.datagrams_to_send(net.now)
    b.endpoint.receive_datagram(sa_init[0][0], ("192.0.2.1", 500), net.now)
    a.endpoint.receive_datagram(b.endpoint.datagrams_to_send(net.now)[0][0], (RESPONDER_IP, 500), net.now)
    fragments = [d for d, _ in a.endpoint.datagrams_to_send(net.now)]
    assert len(fragments) >= 2 and all(_skf(d) for d in fragments)
    for data in fragments:
        flipped = bytearray(data)
        flipped[-1] ^= 1
        b.endpoint.receive_datagram(bytes(flipped), ("192.0.2.1", 500), net.now)
        b.endpoint.receive_datagram(data[:-5], ("192.0.2.1", 500), net.now)
    assert b.endpoint.datagrams_to_send(net.now) == []
    for data in reversed(fragments):  # out of order is fine
        b.endpoint.receive_datagram(data, ("192.0.2.1", 500), net.now)
    assert b.of_type(IkeSaEstablished)
