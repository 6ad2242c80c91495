"""IKE SA snapshots (ikev2lib.ha.snapshot): a second endpoint takes over the responder's IKE SA and
Child SA from a sealed record and carries on with the peer, in the simulated network, without any
renegotiation; nothing it sends repeats a nonce of the first; bad records restore nothing."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.esp import EspReplayError
from ikev2lib.events import ChildSaCreated, ChildSaRekeyed, IkeSaRekeyed, IkeSaRestored
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.ha.snapshot import SNAPSHOT_VERSION, HandOver, SnapshotError, capture, restore, seal, unseal
from ikev2lib.state import IkeState
from tests.engine.network import INITIATOR_IP, RESPONDER_IP, Network, Node, pair

KEY = bytes(range(32))
LABEL = b"/ikev2lib/sas/1"
WALL = 1_800_000_000.0
PING = bytes.fromhex("4500001c000100004001f7c30a0100010a020001") + bytes(8)  # an IPv4 header and 8 octets


def _established() -> tuple[Network, Node, Node, int, int]:
    net, a, b, icfg = pair()
    ia = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    ib = b.endpoint.ike_sa_ids()[0]
    assert a.endpoint.state_of(ia) == b.endpoint.state_of(ib) == IkeState.ESTABLISHED
    return net, a, b, ia, ib


def _take_over(net: Network, b: Node, ib: int, *, wall_later: float = 2.0,
               hand_over: HandOver = HandOver()) -> tuple[Node, int, dict]:  # type: ignore[type-arg]
    """Seal B's SA, unseal and restore it in a fresh endpoint at B's address, which replaces B."""
    record = capture(b.endpoint.connection(ib), net.now, WALL)
    blob = seal(record, KEY, LABEL)
    config = b.endpoint.config
    # the old process is gone: everything for its address reaches b2 (added in its place)
    b2 = net.add(IkeEndpoint(config, local_addr=(RESPONDER_IP, 500)))
    restored = restore(b2.endpoint, unseal(blob, KEY, LABEL), net.now, WALL + wall_later, hand_over)
    return b2, restored, record


def _children(node: Node, ike_sa_id: int):  # type: ignore[no-untyped-def]
    return list(node.endpoint.connection(ike_sa_id).children.values())


def test_a_restored_responder_carries_on_without_renegotiating() -> None:
    net, a, b, ia, ib = _established()
    a_child, b_child = _children(a, ia)[0], _children(b, ib)[0]
    for _ in range(5):  # traffic both ways before the take-over
        b_child.inbound.decap(a_child.outbound.encap(PING))
        a_child.inbound.decap(b_child.outbound.encap(PING))
    old_packet = a_child.outbound.encap(PING)
    b_child.inbound.decap(old_packet)
    b2, ib2, record = _take_over(net, b, ib)
    assert ib2 == ib  # the handle survives
    restored_sa = b2.endpoint.connection(ib2)
    assert (restored_sa.spi_i, restored_sa.spi_r) == (b.endpoint.connection(ib).spi_i, b.endpoint.connection(ib).spi_r)
    [event] = b2.of_type(IkeSaRestored)
    assert event.children == 1 and event.remote_addr[0] == INITIATOR_IP
    [created] = b2.of_type(ChildSaCreated)
    assert created.spi_in == b_child.spi_in and created.spi_out == b_child.spi_out
    # ESP: the peer's next packets decrypt; a packet the old process had already taken is a replay
    new_child = _children(b2, ib2)[0]
    assert new_child.inbound.decap(a_child.outbound.encap(PING))[1] == PING
    with pytest.raises(EspReplayError):
        new_child.inbound.decap(old_packet)
    # ours skip the margin: never a sequence number (and so a nonce) the old process may have used
    assert new_child.outbound.next_sequence == b_child.outbound.next_sequence + HandOver().esp_seq_margin
    assert a_child.inbound.decap(new_child.outbound.encap(PING))[1] == PING
    # IKE: the peer's DPD, a Child SA rekey and an IKE SA rekey of ours, all on the same keys and IDs
    a.endpoint.send_dpd(ia)
    net.run()
    a.endpoint.rekey_child_sa(ia, a_child.child_id)
    net.run()
    assert b2.of_type(ChildSaRekeyed) and a.of_type(ChildSaRekeyed)
    b2.endpoint.rekey_ike_sa(ib2)
    net.run()
    assert b2.of_type(IkeSaRekeyed) and a.of_type(IkeSaRekeyed)
    assert a.endpoint.state_of(ia) == IkeState.ESTABLISHED == b2.endpoint.state_of(ib2)
    assert "dropped" not in a.endpoint.stats and "dropped" not in b2.endpoint.stats


def test_the_ike_iv_counter_jumps_past_the_old_process() -> None:
    net, a, b, ia, ib = _established()
    old = b.endpoint.connection(ib).message_state().next_iv
    b2, ib2, _ = _take_over(net, b, ib)
    new = b2.endpoint.connection(ib2).message_state().next_iv
    assert old is not None and new == old + HandOver().iv_margin


def test_the_cached_response_answers_the_peers_retransmission() -> None:
    net, a, b, ia, ib = _established()
    a.endpoint.send_dpd(ia)
    net.drop = lambda data, src, dst: dst == INITIATOR_IP  # B's answer is lost
    net.run(until=net.now + 0.5)
    net.drop = None
    b2, _, _ = _take_over(net, b, ib)
    net.run()  # A retransmits; B2 answers from the cache it took over
    assert b2.endpoint.stats.get("retransmitted_requests") == 1
    assert a.endpoint.connection(ia).window_free and "dropped" not in a.endpoint.stats


def test_a_request_in_flight_is_sent_again_exactly() -> None:
    net, a, b, ia, ib = _established()
    b.endpoint.send_dpd(ib)
    net.drop = lambda data, src, dst: dst == INITIATOR_IP  # B's request never arrives
    net.run(until=net.now + 0.5)
    net.drop = None
    sent = [d for d, src, dst in net.tap if src[0] == RESPONDER_IP][-1]
    b2, ib2, record = _take_over(net, b, ib)
    assert record["in_flight"] is not None
    start = len(net.tap)
    net.run()
    resent = [d for d, src, dst in net.tap[start:] if src[0] == RESPONDER_IP]
    assert resent[0] == sent  # the same message ID, the same octets: no second request under that ID
    assert b2.endpoint.connection(ib2).window_free and b2.endpoint.stats["handed_over_answers"] == 1


def test_deadlines_count_the_time_between_record_and_restore() -> None:
    net, a, b, ia, ib = _established()
    sa = b.endpoint.connection(ib)
    sa.rekey_at = net.now + 100.0
    b2, ib2, _ = _take_over(net, b, ib, wall_later=30.0)
    assert b2.endpoint.connection(ib2).rekey_at == pytest.approx(net.now + 70.0)


# ---- records that must restore nothing ------------------------------------------------------------


def _sealed() -> tuple[Network, Node, int, bytes]:
    net, _, b, _, ib = _established()
    return net, b, ib, seal(capture(b.endpoint.connection(ib), net.now, WALL), KEY, LABEL)


@pytest.mark.parametrize("case", ["wrong key", "wrong label", "truncated", "tampered", "newer version",
                                  "empty", "foreign"])
def test_bad_records_are_refused(case: str) -> None:
    _, _, _, blob = _sealed()
    key, label = KEY, LABEL
    if case == "wrong key":
        key = os.urandom(32)
    elif case == "wrong label":
        label = b"/ikev2lib/sas/2"
    elif case == "truncated":
        blob = blob[:-1]
    elif case == "tampered":
        blob = blob[:40] + bytes([blob[40] ^ 1]) + blob[41:]
    elif case == "newer version":
        blob = blob[:7] + bytes([SNAPSHOT_VERSION + 1]) + blob[8:]
    elif case == "empty":
        blob = b""
    else:
        blob = b"IKEv2HB" + blob[7:]
    with pytest.raises(SnapshotError) as info:
        unseal(blob, key, label)
    if case == "newer version":
        assert "newer than this library" in str(info.value)


def test_a_record_for_another_connection_or_a_taken_spi_restores_nothing() -> None:
    net, b, ib, blob = _sealed()
    record = unseal(blob, KEY, LABEL)
    other = IkeEndpoint(None, local_addr=(RESPONDER_IP, 500))
    with pytest.raises(SnapshotError, match="no connection"):
        restore(other, record, net.now, WALL, HandOver())
    assert len(other) == 0 and other.ike_sa_ids() == []
    twice = IkeEndpoint(b.endpoint.config, local_addr=(RESPONDER_IP, 500))
    restore(twice, record, net.now, WALL, HandOver())
    with pytest.raises(SnapshotError, match="already in use"):
        restore(twice, record, net.now, WALL, HandOver())
    assert len(twice) == 1


def test_only_established_sas_are_captured() -> None:
    net, a, b, icfg = pair()
    ia = a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    with pytest.raises(LocalProtocolError, match="only established"):
        capture(a.endpoint.connection(ia), net.now, WALL)


def test_a_sealed_record_holds_no_plaintext_key() -> None:
    net, b, ib, blob = _sealed()
    keys = b.endpoint.connection(ib).keys
    assert keys is not None
    for secret in (keys.sk_d, keys.sk_ei, keys.sk_er, _children(b, ib)[0].keys_in[0]):
        assert secret not in blob


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_any_damage_to_a_sealed_record_is_a_snapshot_error(data: st.DataObject) -> None:
    blob = _BLOB
    position = data.draw(st.integers(0, len(blob) - 1))
    kind = data.draw(st.sampled_from(["flip", "cut", "extend"]))
    if kind == "flip":
        damaged = blob[:position] + bytes([blob[position] ^ data.draw(st.integers(1, 255))]) + blob[position + 1:]
    elif kind == "cut":
        damaged = blob[:position]
    else:
        damaged = blob + data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(SnapshotError):
        unseal(damaged, KEY, LABEL)


_FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**70), st.text(max_size=8),
                          st.lists(st.integers(0, 3), max_size=3), st.dictionaries(st.text(max_size=3), st.none()))


@given(st.data())
@settings(max_examples=150, deadline=None)
def test_an_authentic_but_wrong_record_is_refused_cleanly(data: st.DataObject) -> None:
    """Even a record sealed with the right key (a bug or an older writer) cannot crash the restore."""
    record = dict(_RECORD)
    name = data.draw(st.sampled_from(sorted(record)))
    record[name] = data.draw(_FIELD_VALUES)
    endpoint = IkeEndpoint(_CONFIG, local_addr=(RESPONDER_IP, 500))
    try:
        restore(endpoint, record, 0.0, WALL, HandOver())
    except LocalProtocolError:
        assert len(endpoint) == 0 and endpoint.ike_sa_ids() == []


def _fixture_record():  # type: ignore[no-untyped-def]
    net, b, ib, blob = _sealed()
    return blob, unseal(blob, KEY, LABEL), b.endpoint.config


_BLOB, _RECORD, _CONFIG = _fixture_record()
