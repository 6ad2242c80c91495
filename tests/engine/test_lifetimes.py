"""Child SA lifetimes from the ESP data plane's counters, time limits, and ESP-aware DPD.

Two engines wired in memory (network.py); ESP traffic goes through the ESP SA objects the
ChildSaCreated/ChildSaRekeyed events hand out, simulated time runs through the engines' timers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2lib.child_sa import NO_LIMITS, VolumeLimits
from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.esp import EspAuthenticationError, EspLifetimeExpiredError, Lifetime
from ikev2lib.events import (
    ChildSaCreated,
    ChildSaDeleted,
    ChildSaExpired,
    ChildSaRekeyed,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    ProtocolErrorEvent,
)
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.lifetimes import LIFETIME_CHECK_INTERVAL, MAX_SOFT_REKEYS, Action, assess, volume_limits
from ikev2lib.state import IkeState
from ikev2lib.wire import ExchangeType, Header, Message

from .network import INITIATOR_IP, RESPONDER_IP, Network, Node, pair

PSK = b"correct horse battery staple"
ChildEvent = ChildSaCreated | ChildSaRekeyed
_E = TypeVar("_E", bound=Event)


def _of(node: Node, kind: type[_E]) -> list[_E]:
    node.drain()
    return [e for e in node.events if isinstance(e, kind)]


def _ipv4(payload_len: int = 8) -> bytes:
    """An IPv4/UDP packet 10.1.0.1 -> 10.2.0.1 with `payload_len` zero bytes of UDP payload."""
    total = 20 + 8 + payload_len
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0, bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1]))
    return header + struct.pack("!HHHH", 1000, 2000, 8 + payload_len, 0) + bytes(payload_len)


def _configs(
    initiator_child: ChildConfig | None = None, responder_child: ChildConfig | None = None, **ike: Any
) -> tuple[IkeConfig, IkeConfig]:
    ichild = initiator_child or ChildConfig()
    rchild = responder_child or ChildConfig()
    icfg = IkeConfig(
        local_id="alice@example.org",
        remote_id="gw.example.org",
        psk=PSK,
        children=(_with_ts(ichild, ("10.1.0.0/16",), ("10.2.0.0/16",)),),
        **ike,
    )
    rcfg = IkeConfig(
        local_id="gw.example.org",
        remote_id="alice@example.org",
        psk=PSK,
        children=(_with_ts(rchild, ("10.2.0.0/16",), ("10.1.0.0/16",)),),
    )
    return icfg, rcfg


def _with_ts(child: ChildConfig, local: tuple[str, ...], remote: tuple[str, ...]) -> ChildConfig:
    from dataclasses import replace

    return replace(child, local_ts=local, remote_ts=remote)


def _establish(
    initiator_child: ChildConfig | None = None, responder_child: ChildConfig | None = None, **ike: Any
) -> tuple[Network, Node, Node, int]:
    icfg, rcfg = _configs(initiator_child, responder_child, **ike)
    net, a, b, _ = pair(initiator=icfg, responder=rcfg)
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert len(_of(a, IkeSaEstablished)) == 1 and len(_of(b, IkeSaEstablished)) == 1
    return net, a, b, sid


def _current(node: Node) -> ChildEvent:
    """The newest Child SA of `node` that was not deleted."""
    deleted = {e.child_id for e in _of(node, ChildSaDeleted)}
    live = [e for e in _of(node, ChildSaCreated) + _of(node, ChildSaRekeyed) if e.child_id not in deleted]
    assert live, "no live Child SA"
    return max(live, key=lambda e: e.child_id)


def _send(sender: ChildEvent, receiver: ChildEvent, count: int, payload_len: int = 8) -> None:
    inner = _ipv4(payload_len)
    for _ in range(count):
        next_header, plain = receiver.inbound.decap(sender.outbound.encap(inner))
        assert next_header == 4 and plain == inner


def _peer_of(node: Node, event: ChildEvent) -> ChildEvent:
    """The event on the other node describing the same Child SA (SPIs swapped)."""
    for other in _of(node, ChildSaCreated) + _of(node, ChildSaRekeyed):
        if other.spi_in == event.spi_out and other.spi_out == event.spi_in:
            return other
    raise AssertionError("no matching Child SA on the peer")


def _requests(net: Network, src_ip: str, exchange: int) -> list[Header]:
    """Every request `src_ip` sent of one exchange type (headers only; retransmissions included)."""
    found = []
    for data, (ip, _port), _dst in net.tap:
        if ip != src_ip:
            continue
        raw = data[4:] if data[:4] == bytes(4) else data
        header = Message.parse_header(raw)
        if header.exchange_type == exchange and not header.is_response:
            found.append(header)
    return found


def _children(node: Node, sid: int) -> dict[int, Any]:
    return node.endpoint.connection(sid).children


# ---- configuration ---------------------------------------------------------------------------------


def test_lifetimes_are_off_by_default_like_strongswan() -> None:
    cfg = ChildConfig()
    assert (cfg.rekey_packets, cfg.rekey_bytes, cfg.hard_packets, cfg.hard_bytes) == (0, 0, 0, 0)
    assert cfg.hard_time is None
    assert volume_limits(cfg) is NO_LIMITS


def test_hard_limits_default_to_soft_plus_ten_percent() -> None:
    cfg = ChildConfig(rekey_packets=1000, rekey_bytes=50_000, rekey_time=3600.0)
    assert cfg.hard_packets == 1100 and cfg.hard_bytes == 55_000
    assert cfg.hard_time == pytest.approx(3960.0)
    assert ChildConfig(rekey_packets=5).hard_packets == 6  # never equal to the soft limit
    explicit = ChildConfig(rekey_packets=10, life_packets=50, life_bytes=7, rekey_time=10.0, life_time=20.0)
    assert (explicit.hard_packets, explicit.hard_bytes, explicit.hard_time) == (50, 7, 20.0)
    assert volume_limits(explicit) == VolumeLimits(soft_packets=10, hard_packets=50, soft_bytes=0, hard_bytes=7)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rekey_packets": 100, "life_packets": 100},
        {"rekey_bytes": 100, "life_bytes": 50},
        {"rekey_packets": -1},
        {"life_bytes": -5},
        {"rekey_packets": True},
        {"rekey_bytes": 2**64},
        {"rekey_packets": 1.5},
        {"life_time": 0.0},
        {"rekey_time": 100.0, "life_time": 100.0},
    ],
)
def test_invalid_lifetimes_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(LocalProtocolError):
        ChildConfig(**kwargs)


def test_esp_sas_carry_each_sides_configured_limits() -> None:
    net, a, b, sid = _establish(
        ChildConfig(rekey_packets=100, rekey_bytes=10_000), ChildConfig(rekey_packets=500, life_packets=900)
    )
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    mine = Lifetime(soft_packets=100, hard_packets=110, soft_bytes=10_000, hard_bytes=11_000)
    theirs = Lifetime(soft_packets=500, hard_packets=900)
    assert ca.inbound.lifetime == ca.outbound.lifetime == mine
    assert cb.inbound.lifetime == cb.outbound.lifetime == theirs


# ---- soft limits: rekey ------------------------------------------------------------------------------


def test_soft_packet_limit_rekeys_once_and_the_old_sas_are_deleted() -> None:
    net, a, b, sid = _establish(ChildConfig(rekey_packets=100))
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    start = net.now
    _send(ca, cb, 99)
    net.run(until=start + LIFETIME_CHECK_INTERVAL + 1)  # one poll below the limit: nothing happens
    assert not _of(a, ChildSaExpired) and not _of(a, ChildSaRekeyed)
    assert _requests(net, INITIATOR_IP, ExchangeType.CREATE_CHILD_SA) == []

    _send(ca, cb, 1)  # the 100th packet reaches the soft limit (the SA keeps working)
    assert ca.outbound.soft_expired and not ca.outbound.hard_expired
    net.run(until=net.now + LIFETIME_CHECK_INTERVAL)
    [expired] = _of(a, ChildSaExpired)
    assert (expired.child_id, expired.limit, expired.hard) == (ca.child_id, "packets", False)
    [ra] = _of(a, ChildSaRekeyed)
    [rb] = _of(b, ChildSaRekeyed)
    assert ra.old_child_id == ca.child_id and rb.old_child_id == cb.child_id
    assert [e.child_id for e in _of(a, ChildSaDeleted)] == [ca.child_id]
    assert [e.child_id for e in _of(b, ChildSaDeleted)] == [cb.child_id]
    assert set(_children(a, sid)) == {ra.child_id} and set(_children(b, sid)) == {rb.child_id}
    # the new ESP SAs work both ways, start from zero, and carry the same limits
    _send(ra, rb, 5)
    _send(rb, ra, 5)
    assert ra.outbound.stats.packets == 5 and not ra.outbound.soft_expired
    assert ra.outbound.lifetime == ca.outbound.lifetime
    # quiet afterwards: no second rekey, exactly one CREATE_CHILD_SA ever
    net.run(until=net.now + 5 * LIFETIME_CHECK_INTERVAL)
    assert len(_of(a, ChildSaRekeyed)) == 1 and len(_of(a, ChildSaExpired)) == 1
    assert len({m.message_id for m in _requests(net, INITIATOR_IP, ExchangeType.CREATE_CHILD_SA)}) == 1
    assert not _of(a, ProtocolErrorEvent) and not _of(b, ProtocolErrorEvent)


def test_soft_byte_limit_on_the_inbound_sa_rekeys() -> None:
    net, a, b, sid = _establish(ChildConfig(rekey_bytes=10_000))
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    _send(cb, ca, 10, payload_len=972)  # 10 x 1000 inner bytes, all inbound for the initiator
    assert ca.inbound.stats.bytes == 10_000 and ca.inbound.soft_expired
    assert ca.outbound.stats.packets == 0
    net.run(until=net.now + LIFETIME_CHECK_INTERVAL + 1)
    [expired] = _of(a, ChildSaExpired)
    assert (expired.limit, expired.hard) == ("bytes", False)
    [ra] = _of(a, ChildSaRekeyed)
    rb = _peer_of(b, ra)
    _send(rb, ra, 3, payload_len=972)
    assert [e.child_id for e in _of(a, ChildSaDeleted)] == [ca.child_id]


def test_no_second_rekey_while_one_is_in_flight() -> None:
    net, a, b, sid = _establish(ChildConfig(rekey_packets=10, life_packets=1000))
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    _send(ca, cb, 10)
    net.loss = 1.0  # the peer becomes unreachable: the rekey request is retransmitted, never answered
    for _ in range(6):  # several polls while the rekey is outstanding, traffic still flowing
        _send(ca, cb, 10)
        net.run(until=net.now + LIFETIME_CHECK_INTERVAL)
    rekeys = _requests(net, INITIATOR_IP, ExchangeType.CREATE_CHILD_SA)
    assert len(rekeys) >= 3  # the first send and its retransmissions...
    assert len({m.message_id for m in rekeys}) == 1  # ...of one single request
    assert len(_of(a, ChildSaExpired)) == 1
    net.run(until=net.now + 200)
    assert _of(a, IkeSaDeleted)  # the peer is declared dead; nothing else was started
    assert len({m.message_id for m in _requests(net, INITIATOR_IP, ExchangeType.CREATE_CHILD_SA)}) == 1


def test_both_ends_reaching_the_soft_limit_at_once_settle_on_one_child() -> None:
    limits = ChildConfig(rekey_packets=50)
    net, a, b, sid = _establish(limits, limits)
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    _send(ca, cb, 50)  # the initiator's outbound and the responder's inbound cross together
    net.run(until=net.now + LIFETIME_CHECK_INTERVAL + 1)
    net.run(until=net.now + 3 * LIFETIME_CHECK_INTERVAL)
    assert len(_of(a, ChildSaExpired)) == 1 and len(_of(b, ChildSaExpired)) == 1
    assert len(_children(a, sid)) == 1 and len(_children(b, sid)) == 1  # the redundant SA was deleted
    now_a, now_b = _current(a), _current(b)
    assert now_a.spi_in == now_b.spi_out and now_a.spi_out == now_b.spi_in
    _send(now_a, now_b, 3)
    _send(now_b, now_a, 3)
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED


# ---- hard limits: delete -----------------------------------------------------------------------------


def test_hard_packet_limit_deletes_the_child_on_both_ends() -> None:
    net, a, b, sid = _establish(ChildConfig(life_packets=50))
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    _send(ca, cb, 50)
    with pytest.raises(EspLifetimeExpiredError):  # the data plane refuses at once...
        ca.outbound.encap(_ipv4())
    net.run(until=net.now + LIFETIME_CHECK_INTERVAL + 1)  # ...and the engine deletes the child
    [expired] = _of(a, ChildSaExpired)
    assert (expired.child_id, expired.limit, expired.hard) == (ca.child_id, "packets", True)
    [gone_a] = _of(a, ChildSaDeleted)
    [gone_b] = _of(b, ChildSaDeleted)
    assert gone_a.child_id == ca.child_id and not gone_a.by_peer
    assert gone_b.child_id == cb.child_id and gone_b.by_peer
    assert not _of(a, ChildSaRekeyed)
    assert _children(a, sid) == {} and _children(b, sid) == {}
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED  # the IKE SA stays
    net.run(until=net.now + 3 * LIFETIME_CHECK_INTERVAL)
    assert len(_of(a, ChildSaExpired)) == 1


def test_hard_byte_limit_reached_before_the_poll_deletes_without_rekey() -> None:
    # soft and hard both crossed between two polls: the hard limit wins, no rekey is attempted
    net, a, b, sid = _establish(ChildConfig(rekey_bytes=1_000, life_bytes=2_000))
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    _send(cb, ca, 2, payload_len=972)
    net.run(until=net.now + LIFETIME_CHECK_INTERVAL + 1)
    assert [(e.limit, e.hard) for e in _of(a, ChildSaExpired)] == [("bytes", True)]
    assert [e.child_id for e in _of(b, ChildSaDeleted)] == [cb.child_id]
    assert _requests(net, INITIATOR_IP, ExchangeType.CREATE_CHILD_SA) == []


def test_life_time_deletes_a_child_that_is_never_rekeyed() -> None:
    net, a, b, sid = _establish(ChildConfig(life_time=60.0))
    ca = _of(a, ChildSaCreated)[0]
    net.run(until=net.now + 59)
    assert not _of(a, ChildSaDeleted)
    net.run(until=net.now + 2)
    assert [(e.limit, e.hard) for e in _of(a, ChildSaExpired)] == [("time", True)]
    assert [e.child_id for e in _of(a, ChildSaDeleted)] == [ca.child_id]
    assert len(_of(b, ChildSaDeleted)) == 1


def test_rekey_time_comes_before_the_default_life_time() -> None:
    net, a, b, sid = _establish(ChildConfig(rekey_time=50.0))  # life_time defaults to 55 s
    net.run(until=net.now + 200)
    # a rekey every 50 s, each new child replacing (and deleting) the old one before its 55 s end
    expired = _of(a, ChildSaExpired)
    assert expired and all((e.limit, e.hard) == ("time", False) for e in expired)
    assert len(_of(a, ChildSaRekeyed)) == len(expired) >= 3
    assert len(_children(a, sid)) == 1


# ---- DPD sees the data plane ------------------------------------------------------------------------


def test_dpd_is_skipped_while_esp_arrives_and_sent_when_it_stops() -> None:
    net, a, b, sid = _establish(dpd_delay=30.0)
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    for _ in range(8):  # 160 s of inbound traffic, one packet every 20 s: no probe
        _send(cb, ca, 1)
        net.run(until=net.now + 20)
    assert _requests(net, INITIATOR_IP, ExchangeType.INFORMATIONAL) == []

    # outbound-only traffic is no sign of the peer's life
    _send(ca, cb, 5)
    quiet_from = net.now
    net.run(until=quiet_from + 31)
    probes = _requests(net, INITIATOR_IP, ExchangeType.INFORMATIONAL)
    assert len(probes) == 1
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED


def test_forged_esp_does_not_count_as_a_sign_of_life() -> None:
    net, a, b, sid = _establish(dpd_delay=30.0)
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    genuine = cb.outbound.encap(_ipv4())
    forged = genuine[:-1] + bytes([genuine[-1] ^ 1])  # ICV broken
    with pytest.raises(EspAuthenticationError):
        ca.inbound.decap(forged)
    net.run(until=net.now + 31)
    assert len(_requests(net, INITIATOR_IP, ExchangeType.INFORMATIONAL)) == 1


@dataclass
class _CounterlessSA:
    """What a user's ESP factory might return: no `stats`."""

    spi: bytes


def test_esp_factory_without_counters_keeps_plain_dpd_and_no_volume_checks() -> None:
    icfg, rcfg = _configs(ChildConfig(rekey_packets=10), dpd_delay=30.0)
    net, a, b, _ = pair(initiator=icfg, responder=rcfg, esp_factory=lambda p: _CounterlessSA(p.spi))
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert _of(a, ChildSaCreated)
    net.run(until=net.now + 31)
    assert len(_requests(net, INITIATOR_IP, ExchangeType.INFORMATIONAL)) == 1
    assert not _of(a, ChildSaExpired) and not _of(a, ProtocolErrorEvent)
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED


# ---- properties ----------------------------------------------------------------------------------------


@dataclass
class _Stats:
    packets: int
    bytes: int


@dataclass
class _FakeSA:
    stats: _Stats


@dataclass
class _FakeChild:
    inbound: Any
    outbound: Any
    limits: VolumeLimits
    expire_at: float | None = None


_count = st.integers(min_value=0, max_value=10_000)


@given(
    limits=st.builds(VolumeLimits, soft_packets=_count, hard_packets=_count, soft_bytes=_count, hard_bytes=_count),
    counts=st.tuples(_count, _count, _count, _count),
)
def test_assess_matches_the_limits(limits: VolumeLimits, counts: tuple[int, int, int, int]) -> None:
    pin, bin_, pout, bout = counts
    child = _FakeChild(_FakeSA(_Stats(pin, bin_)), _FakeSA(_Stats(pout, bout)), limits)
    verdict = assess(child, 0.0)  # type: ignore[arg-type]  # duck-typed: assess reads these four fields

    def reached(value: int, limit: int) -> bool:
        return limit > 0 and value >= limit

    pairs = [(pin, bin_), (pout, bout)]
    hard = any(reached(p, limits.hard_packets) or reached(b, limits.hard_bytes) for p, b in pairs)
    soft = any(reached(p, limits.soft_packets) or reached(b, limits.soft_bytes) for p, b in pairs)
    expected = Action.EXPIRE if hard else Action.REKEY if soft else Action.NONE
    assert verdict.action is expected
    assert (verdict.limit in ("packets", "bytes")) == (expected is not Action.NONE)


def _live(node: Node) -> list[ChildEvent]:
    deleted = {e.child_id for e in _of(node, ChildSaDeleted)}
    return [e for e in _of(node, ChildSaCreated) + _of(node, ChildSaRekeyed) if e.child_id not in deleted]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 40), st.floats(1.0, 25.0)), min_size=1, max_size=8
    )
)
def test_any_traffic_schedule_leaves_the_ends_in_agreement(schedule: list[tuple[int, int, float]]) -> None:
    # Soft limit 30 packets, hard 60 on both ends. Whatever the traffic: no ESP SA ever goes past its
    # hard limit, the ends agree on the live Child SA (one that works), and a child only disappears
    # without a successor after a hard-limit event (a burst can cross both limits between two polls).
    limits = ChildConfig(rekey_packets=30, life_packets=60)
    net, a, b, sid = _establish(limits, limits)
    for forward, backward, seconds in schedule:
        live = _live(a)
        if live:
            ea = max(live, key=lambda e: e.child_id)
            eb = _peer_of(b, ea)
            for sender, receiver, count in ((ea, eb, forward), (eb, ea, backward)):
                for _ in range(count):
                    try:
                        packet = sender.outbound.encap(_ipv4())
                    except EspLifetimeExpiredError:
                        break
                    receiver.inbound.decap(packet)
        net.run(until=net.now + seconds)
    net.run(until=net.now + 3 * LIFETIME_CHECK_INTERVAL)
    assert not _of(a, ProtocolErrorEvent) and not _of(b, ProtocolErrorEvent)
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED
    for node in (a, b):
        for event in _of(node, ChildSaCreated) + _of(node, ChildSaRekeyed):
            for sa in (event.inbound, event.outbound):
                assert sa.stats.packets <= 60
    live_a, live_b = _live(a), _live(b)
    assert {(e.spi_in, e.spi_out) for e in live_a} == {(e.spi_out, e.spi_in) for e in live_b}
    assert set(_children(a, sid)) == {e.child_id for e in live_a}
    assert len(live_a) <= 1
    if live_a:
        _send(live_a[0], _peer_of(b, live_a[0]), 2)
        _send(_peer_of(b, live_a[0]), live_a[0], 2)
    else:
        hard = [e for e in _of(a, ChildSaExpired) + _of(b, ChildSaExpired) if e.hard]
        assert hard


def test_refused_soft_rekeys_are_retried_a_bounded_number_of_times_then_hard_deletes() -> None:
    # the initiator asks for PFS on rekeys, the responder has no group: every rekey is refused
    net, a, b, sid = _establish(
        ChildConfig(esp_proposals="aes128gcm16-x25519", rekey_packets=10, life_packets=100),
        ChildConfig(esp_proposals="aes128gcm16"),
    )
    ca, cb = _of(a, ChildSaCreated)[0], _of(b, ChildSaCreated)[0]
    _send(ca, cb, 10)
    net.run(until=net.now + (MAX_SOFT_REKEYS + 3) * LIFETIME_CHECK_INTERVAL)
    soft = _of(a, ChildSaExpired)
    assert len(soft) == MAX_SOFT_REKEYS and not any(e.hard for e in soft)  # one per poll, then no more
    assert len({m.message_id for m in _requests(net, INITIATOR_IP, ExchangeType.CREATE_CHILD_SA)}) == MAX_SOFT_REKEYS
    assert len(_of(a, ProtocolErrorEvent)) == MAX_SOFT_REKEYS
    assert not _of(a, ChildSaRekeyed) and set(_children(a, sid)) == {ca.child_id}
    _send(ca, cb, 5)  # the old SA still carries traffic up to its hard limit...
    _send(ca, cb, 85)
    net.run(until=net.now + LIFETIME_CHECK_INTERVAL + 1)  # ...where it is deleted
    assert [(e.limit, e.hard) for e in _of(a, ChildSaExpired)][-1] == ("packets", True)
    assert [e.child_id for e in _of(b, ChildSaDeleted)] == [cb.child_id]


_small = st.integers(min_value=0, max_value=40)


@settings(max_examples=60, deadline=None)
@given(
    limits=st.builds(VolumeLimits, soft_packets=_small, hard_packets=_small, soft_bytes=_small, hard_bytes=_small),
    sent=_small,
)
def test_assess_on_real_esp_sas_agrees_with_the_counters(limits: VolumeLimits, sent: int) -> None:
    # the cheap pre-check on the ESP SA's own soft state must never hide what the counters say
    from ikev2lib.child_sa import EspParams, default_esp_factory

    def sa(direction: str, spi: bytes) -> Any:
        return default_esp_factory(
            EspParams(spi=spi, algorithm="aes128gcm16", key=bytes(20), integ_key=b"", direction=direction,
                      mode="transport", esn=False, replay_window=64, udp_encap=False, limits=limits)
        )

    outbound, inbound = sa("outbound", b"\x00\x00\x10\x00"), sa("inbound", b"\x00\x00\x10\x01")
    for _ in range(sent):
        try:
            outbound.encap(b"x", next_header=17)  # one inner byte per packet
        except EspLifetimeExpiredError:
            break
    real = _FakeChild(inbound, outbound, limits)
    counters_only = _FakeChild(
        _FakeSA(_Stats(inbound.stats.packets, inbound.stats.bytes)),
        _FakeSA(_Stats(outbound.stats.packets, outbound.stats.bytes)),
        limits,
    )
    assert assess(real, 0.0) == assess(counters_only, 0.0)  # type: ignore[arg-type]
