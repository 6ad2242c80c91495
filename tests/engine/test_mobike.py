"""MOBIKE (RFC 4555) in the simulated network: negotiation, the original initiator's moves, return
routability on the responder, the error answers, the peer's additional addresses, hostile updates.

The network (network.py) gives a node several addresses (`add_address` / `remove_address`): a
datagram leaves from the source the engine chose (`datagrams_with_source`) only while the node still
has that address, and arrives with the local address it was sent to.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.drivers.asyncio_udp import AsyncioIkeDriver
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import ChildSaCreated, Event, IkeSaAddressesUpdated, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.exceptions import RemoteProtocolError
from ikev2lib.exchanges import mobike
from ikev2lib.ike_sa import IkeSa, Request
from ikev2lib.natt import NATT_KEEPALIVE, natd_hash
from ikev2lib.state import IkeState
from ikev2lib.wire import ExchangeType, Notify, NotifyType, Payload

from .network import INITIATOR_IP, RESPONDER_IP, Nat, Network, Node, ike_config, pair

A2 = "192.0.2.11"
A3 = "192.0.2.12"
R2 = "192.0.2.22"
FORGED = "203.0.113.66"
INSIDE = "10.0.0.2"
NAT_IP = "198.51.100.1"
INNER = bytes.fromhex("450000200001000040110000") + bytes([10, 1, 0, 1, 10, 2, 0, 1]) + bytes(12)


def responder_config(**extra: Any):  # type: ignore[no-untyped-def]
    return ike_config(local_id="gw.example.org", remote_id="alice@example.org", local_ts=("10.2.0.0/16",),
                      remote_ts=("10.1.0.0/16",), **extra)


def established(*, initiator: dict[str, Any] | None = None, responder: dict[str, Any] | None = None,
                nat: bool = False) -> tuple[Network, Node, Node, int, int]:
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org", natt_keepalive=5.0,
                      **(initiator or {}))
    net, a, b, icfg = pair(initiator=icfg, responder=responder_config(natt_keepalive=5.0, **(responder or {})))
    if nat:
        net.nat = Nat(INSIDE, NAT_IP)
        net.add_address(a, INSIDE)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated)
    return net, a, b, a.endpoint.ike_sa_ids()[0], b.endpoint.ike_sa_ids()[0]


def move(net: Network, node: Node, to: str, *, drop_old: bool = True, run: float = 120.0) -> None:
    """The node gets address `to`, loses its first one, and tells its endpoint."""
    if to not in node.addresses:
        net.add_address(node, to)
    if drop_old:
        net.remove_address(node, node.ip)
    node.endpoint.local_addresses_changed(sorted(node.addresses - ({node.ip} if drop_old else set())), net.now)
    net.run(until=net.now + run, idle_stop=False)


def esp_works(a: Node, b: Node) -> None:
    """The Child SAs' ESP SAs still protect traffic both ways (same keys, same SPIs)."""
    ca, cb = a.of_type(ChildSaCreated)[0], b.of_type(ChildSaCreated)[0]
    assert cb.inbound.decap(ca.outbound.encap(INNER))[1] == INNER
    assert ca.inbound.decap(cb.outbound.encap(INNER))[1] == INNER


class Probe(Request):
    """A hand-built INFORMATIONAL request through the real message layer (keys, message IDs)."""

    exchange_type = ExchangeType.INFORMATIONAL

    def __init__(self) -> None:
        self.answers: list[list[Payload]] = []

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        self.answers.append(payloads)


def probe(net: Network, node: Node, sa_id: int, payloads: list[Payload], *, source: str | None = None,
          run: float = 30.0) -> Probe:
    sa = node.endpoint.connection(sa_id)
    if source is not None:
        sa.local_addr = (source, sa.local_addr[1])
    request = Probe()
    sa.send_request(request, payloads, net.now)
    node.endpoint.ctx.touch(sa)
    net.run(until=net.now + run, idle_stop=False)
    return request


def notify_types(payloads: list[Payload]) -> set[int]:
    return {int(p.notify_type) for p in payloads if isinstance(p, Notify)}


def natd(sa: IkeSa, local: tuple[str, int], remote: tuple[str, int]) -> list[Payload]:
    return [Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=natd_hash(sa.spi_i, sa.spi_r, local)),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, data=natd_hash(sa.spi_i, sa.spi_r, remote))]


# ---- negotiation ---------------------------------------------------------------------------------


def test_both_sides_negotiate_mobike_and_ike_floats_to_4500_without_a_nat() -> None:
    net, a, b, ia, ib = established()
    sa_a, sa_b = a.endpoint.connection(ia), b.endpoint.connection(ib)
    assert sa_a.peer_mobike and sa_b.peer_mobike  # strongSwan-like default: on
    assert sa_a.remote_addr == (RESPONDER_IP, 4500) and sa_b.remote_addr == (INITIATOR_IP, 4500)
    assert not sa_a.nat_detected and a.of_type(ChildSaCreated)[0].udp_encap is False  # ESP stays raw
    assert sa_a.local_addr == (INITIATOR_IP, 500) and sa_b.local_addr == (RESPONDER_IP, 500)


@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_no_mobike_when_either_side_turns_it_off(side: str) -> None:
    off = {"mobike": False}
    net, a, b, ia, ib = established(**{side: off})  # type: ignore[arg-type]
    assert not a.endpoint.connection(ia).peer_mobike and not b.endpoint.connection(ib).peer_mobike
    port = 500 if side == "initiator" else 4500  # an initiator with MOBIKE floats all the same
    assert b.endpoint.connection(ib).remote_addr == (INITIATOR_IP, port)
    move(net, a, A2)  # nothing to move with: no update is sent
    assert a.of_type(IkeSaAddressesUpdated) == [] and b.endpoint.connection(ib).remote_addr[0] == INITIATOR_IP


# ---- the initiator moves ---------------------------------------------------------------------------


def test_initiator_moves_to_a_new_address_with_the_same_sas() -> None:
    net, a, b, ia, ib = established()
    sa_a, sa_b = a.endpoint.connection(ia), b.endpoint.connection(ib)
    spis, children = (sa_a.spi_i, sa_a.spi_r), (set(sa_a.children), set(sa_b.children))
    mark = len(net.tap)
    move(net, a, A2)
    [ea], [eb] = a.of_type(IkeSaAddressesUpdated), b.of_type(IkeSaAddressesUpdated)
    assert (ea.old_local_addr, ea.local_addr) == ((INITIATOR_IP, 500), (A2, 500))
    assert ea.old_remote_addr == ea.remote_addr == (RESPONDER_IP, 4500) and ea.udp_encap is False
    assert (eb.old_remote_addr, eb.remote_addr) == ((INITIATOR_IP, 4500), (A2, 4500))
    assert eb.local_addr == eb.old_local_addr == (RESPONDER_IP, 500) and eb.udp_encap is False
    assert (sa_a.spi_i, sa_a.spi_r) == spis and (set(sa_a.children), set(sa_b.children)) == children
    assert a.endpoint.connection(ia) is sa_a and sa_b.remote_addr == (A2, 4500)
    assert all(c.udp_encap is False for c in [*sa_a.children.values(), *sa_b.children.values()])
    esp_works(a, b)
    # after the move everything of the initiator leaves from A2, everything of the responder goes there
    assert {src[0] for _, src, dst in net.tap[mark:] if dst == RESPONDER_IP} == {A2}
    assert {dst for _, src, dst in net.tap[mark:] if src[0] == RESPONDER_IP} == {A2}
    for node, sa_id in ((a, ia), (b, ib)):  # both sides' requests work on the new path
        node.endpoint.create_child_sa(sa_id)
        net.run(until=net.now + 30, idle_stop=False)
    assert len(a.of_type(ChildSaCreated)) == 3 and len(b.of_type(ChildSaCreated)) == 3
    assert a.endpoint.state_of(ia) == b.endpoint.state_of(ib) == IkeState.ESTABLISHED


def test_a_move_keeps_going_after_an_ike_sa_rekey_and_the_rekey_inherits_mobike() -> None:
    net, a, b, ia, ib = established()
    a.endpoint.rekey_ike_sa(ia)
    net.run(until=net.now + 30, idle_stop=False)
    assert a.endpoint.connection(ia).peer_mobike and b.endpoint.connection(ib).original_initiator is False
    b.endpoint.rekey_ike_sa(ib)  # the responder rekeys: its new SA has the I flag, not the initiator role
    net.run(until=net.now + 30, idle_stop=False)
    assert b.endpoint.connection(ib).is_initiator and not b.endpoint.connection(ib).original_initiator
    move(net, a, A2)
    assert b.endpoint.connection(ib).remote_addr == (A2, 4500) and len(a.of_type(IkeSaAddressesUpdated)) == 1


def test_a_nat_appears_and_disappears_across_moves_and_encapsulation_follows() -> None:
    net, a, b, ia, ib = established(nat=True)
    sa_a, sa_b = a.endpoint.connection(ia), b.endpoint.connection(ib)
    assert not sa_a.nat_detected
    move(net, a, INSIDE, drop_old=False, run=0)  # the list loses the first address, the node keeps it
    a.endpoint.local_addresses_changed([INSIDE], net.now)
    net.run(until=net.now + 60, idle_stop=False)
    [ea], [eb] = a.of_type(IkeSaAddressesUpdated), b.of_type(IkeSaAddressesUpdated)
    assert ea.udp_encap and eb.udp_encap and ea.local_addr == (INSIDE, 500)
    assert eb.remote_addr[0] == NAT_IP and sa_b.remote_addr == eb.remote_addr
    assert (sa_a.nat_here, sa_a.nat_there, sa_b.nat_here, sa_b.nat_there) == (True, False, False, True)
    assert all(c.udp_encap for c in [*sa_a.children.values(), *sa_b.children.values()])
    mark = len(net.tap)
    net.run(until=net.now + 11, idle_stop=False)
    assert [src for data, src, _ in net.tap[mark:] if data == NATT_KEEPALIVE] == [eb.remote_addr] * 2
    a.endpoint.local_addresses_changed([INITIATOR_IP], net.now)  # and back out of the NAT
    net.run(until=net.now + 60, idle_stop=False)
    assert [e.udp_encap for e in a.of_type(IkeSaAddressesUpdated)] == [True, False]
    assert [e.udp_encap for e in b.of_type(IkeSaAddressesUpdated)] == [True, False]
    assert sa_b.remote_addr == (INITIATOR_IP, 4500) and not (sa_a.nat_detected or sa_b.nat_detected)
    mark = len(net.tap)
    net.run(until=net.now + 11, idle_stop=False)
    assert [d for d, _, _ in net.tap[mark:] if d == NATT_KEEPALIVE] == []
    esp_works(a, b)


def test_no_usable_address_sends_nothing_and_a_later_list_moves() -> None:
    net, a, b, ia, ib = established()
    mark = len(net.tap)
    a.endpoint.local_addresses_changed(["2001:db8::1", "not an address"], net.now)  # no IPv4 left
    net.run(until=net.now + 5, idle_stop=False)
    assert net.tap[mark:] == [] and a.endpoint.connection(ia).local_addr == (INITIATOR_IP, 500)
    move(net, a, A2)
    assert b.endpoint.connection(ib).remote_addr == (A2, 4500)


def test_an_address_list_change_only_sends_the_list_from_either_side() -> None:
    net, a, b, ia, ib = established()
    net.add_address(b, R2)
    b.endpoint.local_addresses_changed([RESPONDER_IP, R2], net.now)
    a.endpoint.local_addresses_changed([INITIATOR_IP, A3], net.now)
    net.run(until=net.now + 10, idle_stop=False)
    assert a.endpoint.connection(ia).peer_additional_addresses == (R2,)
    assert b.endpoint.connection(ib).peer_additional_addresses == (A3,)
    assert a.of_type(IkeSaAddressesUpdated) == [] and b.of_type(IkeSaAddressesUpdated) == []
    b.endpoint.local_addresses_changed([RESPONDER_IP], net.now)
    net.run(until=net.now + 10, idle_stop=False)
    assert a.endpoint.connection(ia).peer_additional_addresses == ()  # NO_ADDITIONAL_ADDRESSES


def test_the_peers_additional_address_is_used_when_its_primary_is_unreachable() -> None:
    net, a, b, ia, ib = established()
    net.add_address(b, R2)
    b.endpoint.local_addresses_changed([RESPONDER_IP, R2], net.now)
    net.run(until=net.now + 10, idle_stop=False)
    net.drop = lambda data, src, dst: RESPONDER_IP in (src[0], dst)  # the primary is cut off
    move(net, a, A2, run=200)
    [ea], [eb] = a.of_type(IkeSaAddressesUpdated), b.of_type(IkeSaAddressesUpdated)
    assert ea.remote_addr == (R2, 4500) and ea.local_addr == (A2, 500)
    assert (eb.old_local_addr, eb.local_addr, eb.remote_addr) == ((RESPONDER_IP, 500), (R2, 500), (A2, 4500))
    a.endpoint.send_dpd(ia)
    b.endpoint.send_dpd(ib)
    net.run(until=net.now + 30, idle_stop=False)
    assert a.endpoint.state_of(ia) == b.endpoint.state_of(ib) == IkeState.ESTABLISHED


# ---- the responder: return routability ----------------------------------------------------------


def test_a_rewritten_source_never_moves_the_responder_and_the_real_path_is_checked() -> None:
    net, a, b, ia, ib = established()
    rewritten: list[bytes] = []

    def rewrite(data: bytes, src: tuple[str, int], dst: str) -> bool:
        if src[0] == A2 and dst == RESPONDER_IP and not rewritten:  # the first update: an on-path attacker
            rewritten.append(data)
            net.inject(data, (FORGED, src[1]), RESPONDER_IP, 4500)
            return True
        return False

    net.drop = rewrite
    sa_b = b.endpoint.connection(ib)
    seen: list[tuple[str, int]] = []
    move(net, a, A2, run=0)
    for _ in range(400):  # watch the responder's addresses while it all happens
        net.run(until=net.now + 0.5, idle_stop=False)
        seen.append(sa_b.remote_addr)
    assert rewritten and all(addr[0] != FORGED for addr in seen)
    assert [e.remote_addr for e in b.of_type(IkeSaAddressesUpdated)] == [(A2, 4500)]  # only after its check
    esp_works(a, b)
    a.endpoint.send_dpd(ia)
    b.endpoint.send_dpd(ib)
    net.run(until=net.now + 30, idle_stop=False)
    assert a.endpoint.state_of(ia) == b.endpoint.state_of(ib) == IkeState.ESTABLISHED


def test_an_unanswered_return_routability_check_keeps_the_sa_on_its_old_path() -> None:
    net, a, b, ia, ib = established()
    sa_a, sa_b = a.endpoint.connection(ia), b.endpoint.connection(ib)
    net.drop = lambda data, src, dst: dst == A2  # the new address can send but hears nothing
    net.add_address(a, A2)
    a.endpoint.local_addresses_changed([A2], net.now)
    net.run(until=net.now + 300, idle_stop=False)
    assert b.of_type(IkeSaAddressesUpdated) == [] and sa_b.remote_addr == (INITIATOR_IP, 4500)
    assert b.endpoint.stats.get("mobike_routability_failed", 0) >= 1  # each retransmitted update: checked again
    assert any("return routability" in e.description for e in b.of_type(ProtocolErrorEvent))
    assert b.endpoint.state_of(ib) == IkeState.ESTABLISHED  # the check's failure never kills the SA
    assert sa_a.state == IkeState.FAILED  # the initiator heard no answer at all: its peer is dead to it


# ---- hostile and refused updates ------------------------------------------------------------------


def _update_payloads(sa: IkeSa, local: tuple[str, int]) -> list[Payload]:
    return [Notify(NotifyType.UPDATE_SA_ADDRESSES), *natd(sa, local, sa.remote_addr),
            Notify(NotifyType.COOKIE2, data=bytes(16))]


def test_forged_and_replayed_updates_move_nothing() -> None:
    net, a, b, ia, ib = established()
    mark = len(net.tap)
    move(net, a, A2)
    sa_b = b.endpoint.connection(ib)
    update = next(d for d, src, dst in net.tap[mark:] if src[0] == A2 and dst == RESPONDER_IP)
    tampered = update[:-1] + bytes([update[-1] ^ 1])
    net.inject(tampered, (FORGED, 4500), RESPONDER_IP, 4500)  # bad ICV
    net.run(until=net.now + 60, idle_stop=False)
    assert sa_b.remote_addr == (A2, 4500) and b.endpoint.stats.get("mobike_routability_checks") == 1
    net.inject(update, (FORGED, 4500), RESPONDER_IP, 4500)  # an authentic copy, replayed from elsewhere
    net.run(until=net.now + 120, idle_stop=False)
    assert sa_b.remote_addr == (A2, 4500) and len(b.of_type(IkeSaAddressesUpdated)) == 1
    assert b.endpoint.stats.get("mobike_routability_failed") == 1  # checked, unanswered, nothing moved
    a.endpoint.send_dpd(ia)
    net.run(until=net.now + 30, idle_stop=False)
    net.inject(update, (FORGED, 4500), RESPONDER_IP, 4500)  # now an old message ID: dropped
    dropped = b.endpoint.stats.get("dropped", 0)
    net.run(until=net.now + 60, idle_stop=False)
    assert b.endpoint.stats.get("dropped", 0) == dropped + 1 and sa_b.remote_addr == (A2, 4500)
    assert b.endpoint.state_of(ib) == IkeState.ESTABLISHED


def test_an_update_from_the_original_responder_is_ignored() -> None:
    net, a, b, ia, ib = established()
    net.add_address(b, R2)
    sa_a, sa_b = a.endpoint.connection(ia), b.endpoint.connection(ib)
    answer = probe(net, b, ib, _update_payloads(sa_b, (R2, 4500)), source=R2)
    assert answer.answers and sa_a.remote_addr == (RESPONDER_IP, 4500)
    assert a.endpoint.stats.get("mobike_update_from_responder") == 1 and a.of_type(IkeSaAddressesUpdated) == []


def test_an_update_without_mobike_negotiated_moves_nothing() -> None:
    net, a, b, ia, ib = established(responder={"mobike": False})
    net.add_address(a, A2)
    sa_b = b.endpoint.connection(ib)
    answer = probe(net, a, ia, _update_payloads(a.endpoint.connection(ia), (A2, 4500)), source=A2)
    assert answer.answers and sa_b.remote_addr == (INITIATOR_IP, 4500) and b.of_type(IkeSaAddressesUpdated) == []
    assert b.endpoint.stats.get("mobike_not_negotiated") == 1


def test_an_address_outside_remote_addrs_is_unacceptable_and_the_next_one_is_tried() -> None:
    net, a, b, ia, ib = established(responder={"remote_addrs": (INITIATOR_IP, A3)})
    net.add_address(a, A2)
    net.add_address(a, A3)
    net.remove_address(a, INITIATOR_IP)
    a.endpoint.local_addresses_changed([A2, A3], net.now)
    net.run(until=net.now + 60, idle_stop=False)
    [ea] = a.of_type(IkeSaAddressesUpdated)
    assert ea.local_addr == (A3, 500) and b.endpoint.connection(ib).remote_addr == (A3, 4500)
    assert a.endpoint.stats.get("mobike_unacceptable_addresses") == 1
    assert [e.notify for e in b.of_type(ProtocolErrorEvent)] == [NotifyType.UNACCEPTABLE_ADDRESSES]


def test_unacceptable_with_no_other_address_is_a_protocol_error_and_nothing_moves() -> None:
    net, a, b, ia, ib = established(responder={"remote_addrs": (INITIATOR_IP,)})
    move(net, a, A2)
    errors = [e for e in a.of_type(ProtocolErrorEvent) if e.received]
    assert [e.notify for e in errors] == [NotifyType.UNACCEPTABLE_ADDRESSES]
    assert b.endpoint.connection(ib).remote_addr == (INITIATOR_IP, 4500) and a.of_type(IkeSaAddressesUpdated) == []
    assert a.endpoint.state_of(ia) == IkeState.ESTABLISHED


def _no_nats(src: tuple[str, int], dst: tuple[str, int]) -> Notify:
    data = ipaddress.ip_address(src[0]).packed + ipaddress.ip_address(dst[0]).packed
    return Notify(NotifyType.NO_NATS_ALLOWED, data=data + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big"))


def test_no_nats_allowed_is_answered_unexpected_nat_detected_when_a_nat_rewrote_the_path() -> None:
    net, a, b, ia, ib = established()
    net.add_address(a, A2)
    sa_a, sa_b = a.endpoint.connection(ia), b.endpoint.connection(ib)
    lied = probe(net, a, ia, [*_update_payloads(sa_a, (A2, 4500)), _no_nats((A3, 4500), (RESPONDER_IP, 4500))],
                 source=A2)
    assert NotifyType.UNEXPECTED_NAT_DETECTED in notify_types(lied.answers[0])
    assert sa_b.remote_addr == (INITIATOR_IP, 4500) and sa_b.mobike_target is None
    honest = probe(net, a, ia, [*_update_payloads(sa_a, (A2, 4500)), _no_nats((A2, 4500), (RESPONDER_IP, 4500))],
                   source=A2)
    assert NotifyType.UNEXPECTED_NAT_DETECTED not in notify_types(honest.answers[0])
    assert NotifyType.COOKIE2 in notify_types(honest.answers[0])
    assert sa_b.remote_addr == (A2, 4500)  # checked, then moved


def test_an_unexpected_nat_detected_answer_is_reported_and_the_sa_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b, ia, ib = established()

    def refuse(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload] | None:
        raise RemoteProtocolError("a NAT", notify=NotifyType.UNEXPECTED_NAT_DETECTED)

    monkeypatch.setattr(mobike, "respond", refuse)
    move(net, a, A2)
    assert [e.notify for e in a.of_type(ProtocolErrorEvent) if e.received] == [NotifyType.UNEXPECTED_NAT_DETECTED]
    assert a.of_type(IkeSaAddressesUpdated) == [] and a.endpoint.state_of(ia) == IkeState.ESTABLISHED
    assert b.endpoint.connection(ib).remote_addr == (INITIATOR_IP, 4500)


def test_a_wrong_cookie2_echo_commits_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b, ia, ib = established()
    real = mobike.respond

    def wrong_echo(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload] | None:
        answer = real(sa, payloads, now) or []
        return [p for p in answer if not (isinstance(p, Notify) and p.notify_type == NotifyType.COOKIE2)] + [
            Notify(NotifyType.COOKIE2, data=bytes(16))]

    monkeypatch.setattr(mobike, "respond", wrong_echo)
    move(net, a, A2)
    assert a.of_type(IkeSaAddressesUpdated) == [] and a.endpoint.stats.get("mobike_cookie2_mismatch") == 1
    assert a.endpoint.state_of(ia) == IkeState.ESTABLISHED


# ---- arbitrary notifies ----------------------------------------------------------------------------

_MOBIKE_TYPES = [NotifyType.UPDATE_SA_ADDRESSES, NotifyType.ADDITIONAL_IP4_ADDRESS, NotifyType.ADDITIONAL_IP6_ADDRESS,
                 NotifyType.NO_ADDITIONAL_ADDRESSES, NotifyType.COOKIE2, NotifyType.NO_NATS_ALLOWED,
                 NotifyType.NAT_DETECTION_SOURCE_IP, NotifyType.NAT_DETECTION_DESTINATION_IP,
                 NotifyType.UNACCEPTABLE_ADDRESSES, NotifyType.MOBIKE_SUPPORTED]
_notifies = st.lists(
    st.tuples(st.sampled_from(_MOBIKE_TYPES), st.binary(max_size=70)), max_size=40
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(notifies=_notifies, from_new=st.booleans())
def test_arbitrary_mobike_notifies_get_an_answer_or_a_counted_drop(
    notifies: list[tuple[int, bytes]], from_new: bool
) -> None:
    net, a, b, ia, ib = established()
    net.add_address(a, A2)
    payloads: list[Payload] = [Notify(kind, data=data) for kind, data in notifies]
    answer = probe(net, a, ia, payloads, source=A2 if from_new else None, run=120)
    sa_b = b.endpoint.connection(ib)
    assert answer.answers or b.endpoint.stats.get("dropped", 0) > 0
    assert len(sa_b.peer_additional_addresses) <= mobike.MAX_PEER_ADDRESSES
    assert sa_b.remote_addr[0] in (INITIATOR_IP, A2)  # moved, if at all, only after a check
    assert b.endpoint.state_of(ib) == IkeState.ESTABLISHED
    assert len(b.endpoint.ctx.events) < 100 and len(b.endpoint.connection(ib)._queue) <= 2


# ---- the asyncio driver on a wildcard address ------------------------------------------------------


async def _wildcard_move() -> tuple[tuple[str, int], IkeSaAddressesUpdated, IkeSaAddressesUpdated, int]:
    async def until(driver: AsyncioIkeDriver, kind: type) -> Event:
        while True:
            event = await driver.next_event(timeout=5.0)
            if isinstance(event, kind):
                return event

    psk = b"mobike driver key"
    gw_cfg = IkeConfig(local_id="gw.example.org", psk=psk,
                       children=(ChildConfig(local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)),))
    gw = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(gw_cfg, local_addr=addr), host="127.0.0.1",
                                       ike_port=0, natt_port=0)
    # bound to the wildcard; the endpoint knows the host's address it should use (not the kernel's pick)
    alice = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(local_addr=("127.0.0.2", addr[1])),
                                          host="0.0.0.0", ike_port=0, natt_port=0)
    try:
        cfg = IkeConfig(local_id="alice@example.org", psk=psk, remote_natt_port=gw.natt_port,
                        children=(ChildConfig(local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",)),))
        alice.initiate(cfg, ("127.0.0.1", gw.ike_port))
        await until(alice, IkeSaEstablished)
        gw_sa = next(iter(gw.endpoint.connections()))
        first = gw_sa.remote_addr  # the kernel would have chosen 127.0.0.1 towards 127.0.0.1
        alice.request(alice.endpoint.local_addresses_changed, ["127.0.0.3"], alice.loop.time())
        moved_a = await until(alice, IkeSaAddressesUpdated)
        moved_gw = await until(gw, IkeSaAddressesUpdated)
        assert isinstance(moved_a, IkeSaAddressesUpdated) and isinstance(moved_gw, IkeSaAddressesUpdated)
        return first, moved_a, moved_gw, alice.socket_errors
    finally:
        alice.close()
        gw.close()


def test_the_asyncio_driver_on_a_wildcard_address_sends_from_the_chosen_source() -> None:
    first, moved_a, moved_gw, errors = asyncio.run(_wildcard_move())
    assert first[0] == "127.0.0.2" and errors == 0
    assert moved_a.local_addr[0] == "127.0.0.3" and moved_gw.remote_addr[0] == "127.0.0.3"
    assert moved_gw.old_remote_addr == first


def test_a_new_ike_sa_announces_the_known_address_list_in_ike_auth() -> None:
    icfg = ike_config(local_id="alice@example.org", remote_id="gw.example.org")
    net, a, b, icfg = pair(initiator=icfg, responder=responder_config())
    net.add_address(a, A3)
    a.endpoint.local_addresses_changed([INITIATOR_IP, A3], net.now)  # before any IKE SA exists
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert b.endpoint.connection(b.endpoint.ike_sa_ids()[0]).peer_additional_addresses == (A3,)
    assert a.endpoint.connection(a.endpoint.ike_sa_ids()[0]).peer_additional_addresses == ()
