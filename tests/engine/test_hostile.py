"""Hostile input: garbage, mutated, replayed and out-of-order datagrams never raise out of
`receive_datagram` and never break a live engine."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2lib.events import ChildSaCreated, IkeSaDeleted, IkeSaEstablished
from ikev2lib.state import IkeState
from ikev2lib.wire import ExchangeType, Message

from .network import INITIATOR_IP, RESPONDER_IP, ike_config, pair

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _live_pair():  # type: ignore[no-untyped-def]
    # MOBIKE off: these tests read the captured datagrams as IKE on port 500 (no non-ESP marker)
    net, a, b, icfg = pair(initiator=ike_config(local_id="alice@example.org", remote_id="gw.example.org", mobike=False))
    sid = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert a.of_type(ChildSaCreated) and b.of_type(ChildSaCreated)
    return net, a, b, sid


def _still_works(net, a, b, sid) -> None:  # type: ignore[no-untyped-def]
    before = len(a.of_type(ChildSaCreated))
    a.endpoint.create_child_sa(sid)
    net.run()
    assert len(a.of_type(ChildSaCreated)) == before + 1
    assert a.endpoint.state_of(sid) == IkeState.ESTABLISHED


def _mutate(data: bytes, flips: list[int], cut: int | None, header_patch: tuple[int, int] | None) -> bytes:
    buf = bytearray(data)
    for bit in flips:
        if buf:
            index = bit % (len(buf) * 8)
            buf[index // 8] ^= 1 << (index % 8)
    if header_patch is not None and len(buf) >= 28:
        offset, value = header_patch
        buf[16 + offset % 12] = value & 0xFF
    if cut is not None:
        buf = buf[: cut % (len(buf) + 1)]
    return bytes(buf)


@SETTINGS
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_never_raise(garbage: list[bytes]) -> None:
    net, a, b, sid = _live_pair()
    for data in garbage:
        b.endpoint.receive_datagram(data, (INITIATOR_IP, 500), net.now)
        a.endpoint.receive_datagram(b"\x00\x00\x00\x00" + data, (RESPONDER_IP, 4500), net.now)
        b.endpoint.receive_datagram(b"\xff", (INITIATOR_IP, 4500), net.now)
    net.run()
    _still_works(net, a, b, sid)


@SETTINGS
@given(
    st.integers(min_value=0, max_value=3),
    st.lists(st.integers(min_value=0), max_size=4),
    st.one_of(st.none(), st.integers(min_value=0)),
    st.one_of(st.none(), st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255))),
)
def test_mutated_handshake_datagrams_never_raise(
    which: int, flips: list[int], cut: int | None, header_patch: tuple[int, int] | None
) -> None:
    net, a, b, sid = _live_pair()
    data, src, dst_ip = net.tap[which]
    target = net.nodes[dst_ip].endpoint
    target.receive_datagram(_mutate(data, flips, cut, header_patch), src, net.now)
    net.run()
    _still_works(net, a, b, sid)


@SETTINGS
@given(st.binary(min_size=1, max_size=200), st.integers(min_value=0, max_value=5), st.booleans())
def test_forged_messages_with_live_spis_never_raise(body: bytes, message_id: int, response: bool) -> None:
    net, a, b, sid = _live_pair()
    established = a.of_type(IkeSaEstablished)[0]
    for exchange in (ExchangeType.IKE_AUTH, ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL, 99):
        flags = 0x08 | (0x20 if response else 0)
        header = struct.pack(
            ">8s8sBBBBII", established.spi_i, established.spi_r, 46, 0x20, exchange, flags, message_id, 28 + 4 + len(body)
        )
        forged = header + struct.pack(">BBH", 0, 0, 4 + len(body)) + body
        b.endpoint.receive_datagram(forged, (INITIATOR_IP, 500), net.now)
    net.run()
    assert b.endpoint.stats.get("dropped", 0) >= 1
    _still_works(net, a, b, sid)


def test_replayed_and_reordered_old_messages_change_nothing() -> None:
    net, a, b, sid = _live_pair()
    a.endpoint.create_child_sa(sid)
    net.run()
    history = list(net.tap)
    children_a = len(a.endpoint.connection(sid).children)
    for data, src, dst_ip in reversed(history):  # every old datagram again, newest first
        net.nodes[dst_ip].endpoint.receive_datagram(data, src, net.now)
    net.run()
    assert len(a.endpoint.connection(sid).children) == children_a
    assert len(a.of_type(IkeSaEstablished)) == 1 and len(b.of_type(IkeSaEstablished)) == 1
    assert len(b.endpoint) == 1  # the replayed IKE_SA_INIT did not create a second SA
    _still_works(net, a, b, sid)


def test_out_of_window_request_is_dropped() -> None:
    net, a, b, sid = _live_pair()
    conn = a.endpoint.connection(sid)
    a.endpoint.send_dpd(sid)
    request = a.endpoint.datagrams_to_send(net.now)[0][0]
    message = Message.parse(request)
    assert message.message_id == 2
    # skip ahead: pretend message 2 was lost, send a later one with ID 5 (forged header, same body)
    forged = bytearray(request)
    struct.pack_into(">I", forged, 20, 5)
    b.endpoint.receive_datagram(bytes(forged), (INITIATOR_IP, 500), net.now)
    assert b.endpoint.datagrams_to_send(net.now) == []
    b.endpoint.receive_datagram(request, (INITIATOR_IP, 500), net.now)
    assert len(b.endpoint.datagrams_to_send(net.now)) == 1
    assert conn.state == IkeState.ESTABLISHED


def test_sa_init_flood_switches_to_cookies_and_stays_bounded() -> None:
    from ikev2lib import endpoint as ep

    net, a, b, sid = _live_pair()
    template = Message.parse(net.tap[0][0])
    for i in range(ep.COOKIE_THRESHOLD + 50):
        template.spi_i = struct.pack(">Q", 0x1000_0000_0000_0000 + i)
        b.endpoint.receive_datagram(template.serialize(), (f"198.51.100.{i % 250}", 500), net.now)
    b.endpoint.datagrams_to_send(net.now)
    assert b.endpoint.half_open_count == ep.COOKIE_THRESHOLD
    assert b.endpoint.stats["cookies_sent"] == 50
    _still_works(net, a, b, sid)


def test_per_peer_limit() -> None:
    from ikev2lib import endpoint as ep

    net, a, b, sid = _live_pair()
    template = Message.parse(net.tap[0][0])
    for i in range(ep.MAX_SAS_PER_PEER + 5):
        template.spi_i = struct.pack(">Q", 0x2000_0000_0000_0000 + i)
        b.endpoint.receive_datagram(template.serialize(), ("203.0.113.9", 500), net.now)
    assert b.endpoint.stats["dropped_peer_limit"] == 5


def test_per_peer_limit_is_configurable() -> None:
    net, a, b, sid = _live_pair()
    b.endpoint.max_sas_per_peer = 40  # a hub whose spokes share one NAT address
    template = Message.parse(net.tap[0][0])
    for i in range(45):
        template.spi_i = struct.pack(">Q", 0x3000_0000_0000_0000 + i)
        b.endpoint.receive_datagram(template.serialize(), ("203.0.113.9", 500), net.now)
    assert b.endpoint.stats["dropped_peer_limit"] == 5


def _refused_sa_init_template(net):  # type: ignore[no-untyped-def]
    """A captured IKE_SA_INIT request rewritten to offer only AES-GCM-192, which is not configured."""
    from ikev2lib.wire import SA, Proposal, Transform

    template = Message.parse(net.tap[0][0])
    template.payloads = [
        SA([Proposal(1, 1, b"", [Transform(1, 20, 192), Transform(2, 5), Transform(4, 31)])])
        if isinstance(p, SA)
        else p
        for p in template.payloads
    ]
    return template


def test_undrained_queues_stay_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import ikev2lib.context as context

    monkeypatch.setattr(context, "MAX_QUEUED_EVENTS", 5)
    monkeypatch.setattr(context, "MAX_QUEUED_DATAGRAMS", 7)
    net, a, b, sid = _live_pair()
    template = _refused_sa_init_template(net)
    for i in range(20):  # every request fails negotiation: a refusal each
        template.spi_i = struct.pack(">Q", 0x3000_0000_0000_0000 + i)
        b.endpoint.receive_datagram(template.serialize(), (f"198.51.100.{i}", 500), net.now)
    assert b.endpoint.stats["sa_init_refused"] == 20
    # events about unauthenticated input only fill half the queue; they never push others out
    assert len(b.endpoint.ctx.events) == 3 and "events_dropped" not in b.endpoint.stats
    assert len(b.endpoint.datagrams_to_send(net.now)) == 7 and b.endpoint.stats["datagrams_dropped"] == 13
    # real events still evict the oldest when the user does not drain the queue
    for i in range(6):
        b.endpoint.ctx.emit(IkeSaDeleted(ike_sa_id=i, spi_i=bytes(8), spi_r=bytes(8), reason="x", by_peer=False))
    assert len(b.endpoint.ctx.events) == 5 and b.endpoint.stats["events_dropped"] == 4


def test_refused_sa_init_flood_is_counted_budgeted_and_keeps_real_events() -> None:
    from ikev2lib import endpoint as ep

    net, a, b, sid = _live_pair()
    real = [IkeSaDeleted(ike_sa_id=i, spi_i=bytes(8), spi_r=bytes(8), reason="x", by_peer=False) for i in range(3)]
    for event in real:  # events the user has not drained yet
        b.endpoint.ctx.emit(event)
    template = _refused_sa_init_template(net)
    flood = 5_000
    for i in range(flood):  # all within the same second, from many spoofable sources
        template.spi_i = struct.pack(">Q", 0x4000_0000_0000_0000 + i)
        b.endpoint.receive_datagram(template.serialize(), (f"198.51.{i // 250}.{i % 250}", 500), net.now)
    stats = b.endpoint.stats
    assert stats["sa_init_refused"] == flood
    answers = [d for d, _ in b.endpoint.datagrams_to_send(net.now)]
    assert len(answers) == ep.SA_INIT_REFUSALS_PER_SECOND == flood - stats["sa_init_refusals_unanswered"]
    events = list(b.endpoint.ctx.events)
    assert events[: len(real)] == real  # nothing real was evicted
    assert len(events) - len(real) == ep.SA_INIT_REFUSAL_EVENTS_PER_SECOND
    assert stats["sa_init_refusal_events_suppressed"] == flood - ep.SA_INIT_REFUSAL_EVENTS_PER_SECOND
    net.now += 1.0  # a new second: a new budget
    template.spi_i = struct.pack(">Q", 0x5000_0000_0000_0000)
    b.endpoint.receive_datagram(template.serialize(), ("198.51.100.77", 500), net.now)
    assert len(b.endpoint.datagrams_to_send(net.now)) == 1
    _still_works(net, a, b, sid)


def test_authentic_request_beyond_the_window_is_reported_not_answered() -> None:
    from ikev2lib.wire import Notify, NotifyType

    net, a, b, sid = _live_pair()
    conn = a.endpoint.connection(sid)
    future = conn._build(ExchangeType.INFORMATIONAL, 7, False, [])[0]  # a valid request with message ID 7
    b.endpoint.receive_datagram(future, (INITIATOR_IP, 500), net.now)
    out = b.endpoint.datagrams_to_send(net.now)
    assert len(out) == 1
    report = Message.parse(out[0][0])
    assert not report.is_response and report.exchange_type == ExchangeType.INFORMATIONAL
    assert b.endpoint.stats["invalid_message_id_reports"] == 1
    from ikev2lib.protection import unprotect

    inner = unprotect(conn._in, out[0][0], report)  # type: ignore[arg-type]  # A's inbound keys
    notify = [p for p in inner if isinstance(p, Notify)][0]
    assert notify.notify_type == NotifyType.INVALID_MESSAGE_ID and notify.data == (7).to_bytes(4, "big")
    a.endpoint.receive_datagram(out[0][0], (RESPONDER_IP, 500), net.now)
    net.run()
    assert conn.state == IkeState.ESTABLISHED
    # rate limited: a second one right away is dropped without a report
    b.endpoint.receive_datagram(future, (INITIATOR_IP, 500), net.now)
    assert b.endpoint.datagrams_to_send(net.now) == []
    _still_works(net, a, b, sid)


def test_requests_for_unknown_ike_sas_get_a_rate_limited_invalid_ike_spi() -> None:
    from ikev2lib import endpoint as ep
    from ikev2lib.wire import NotifyType

    net, a, b, sid = _live_pair()
    template = Message.parse(net.tap[2][0])  # the IKE_AUTH request
    replies = []
    for i in range(ep.INVALID_SPI_REPLIES_PER_SECOND + 5):
        template.spi_r = struct.pack(">Q", 0x4000_0000_0000_0000 + i)
        b.endpoint.receive_datagram(template.serialize(), (INITIATOR_IP, 500), net.now)
        replies += b.endpoint.datagrams_to_send(net.now)
    assert len(replies) == ep.INVALID_SPI_REPLIES_PER_SECOND
    answer = Message.parse(replies[0][0])
    assert answer.is_response and answer.notify(NotifyType.INVALID_IKE_SPI) is not None
    assert answer.message_id == template.message_id
    # responses for unknown SAs are never answered
    template.is_response = True
    b.endpoint.receive_datagram(template.serialize(), (INITIATOR_IP, 500), net.now + 5)
    assert b.endpoint.datagrams_to_send(net.now + 5) == []


def test_authentic_ike_auth_on_an_established_sa_is_refused_without_killing_it() -> None:
    from ikev2lib.events import IkeSaDeleted, ProtocolErrorEvent

    net, a, b, sid = _live_pair()
    conn = a.endpoint.connection(sid)
    stray = conn._build(ExchangeType.IKE_AUTH, conn._send_mid, False, [])[0]  # authentic, next message ID
    conn._send_mid += 1
    b.endpoint.receive_datagram(stray, (INITIATOR_IP, 500), net.now)
    assert len(b.endpoint.datagrams_to_send(net.now)) == 1  # the error answer
    assert b.of_type(ProtocolErrorEvent) and not b.of_type(IkeSaDeleted)
    assert len(b.endpoint.ike_sa_ids()) == 1
    _still_works(net, a, b, sid)
