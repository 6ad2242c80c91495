"""Proposal selection (RFC 7296 2.7, 3.3.6) and traffic selector narrowing (2.9)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikev2lib.exceptions import RemoteProtocolError
from ikev2lib.negotiation import (
    narrow_traffic_selectors,
    select_proposal,
    ts_from_cidr,
    ts_to_text,
    ts_within,
    validate_chosen_proposal,
)
from ikev2lib.proposals import parse_proposals
from ikev2lib.wire import NotifyType, ProtocolId, TrafficSelector, Transform, TransformType

IKE, ESP = ProtocolId.IKE, ProtocolId.ESP


def test_first_acceptable_initiator_proposal_wins_not_ours() -> None:
    offered = parse_proposals("aes256gcm16-prfsha384-ecp384,aes128gcm16-prfsha256-x25519", IKE)
    ours = parse_proposals("aes128gcm16-prfsha256-x25519,aes256gcm16-prfsha384-ecp384", IKE)
    chosen = select_proposal(offered, ours)
    assert chosen.number == 1
    assert (chosen.encr_id, chosen.encr_key_bits, chosen.prf_id, chosen.ke_group) == (20, 256, 6, 20)


def test_within_a_proposal_the_initiators_transform_order_decides() -> None:
    offered = parse_proposals("aes256gcm16-aes128gcm16-prfsha512-prfsha256-x25519-ecp256", IKE)
    ours = parse_proposals("aes128gcm16-aes256gcm16-prfsha256-prfsha512-ecp256-x25519", IKE)
    chosen = select_proposal(offered, ours)
    assert (chosen.encr_key_bits, chosen.prf_id, chosen.ke_group) == (256, 7, 31)
    assert len(chosen.transforms) == 3  # AEAD: no integrity transform


def test_no_proposal_chosen() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        select_proposal(parse_proposals("aes256gcm16-prfsha384-ecp384", IKE), parse_proposals("aes128gcm16-prfsha256-x25519", IKE))
    assert info.value.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_key_length_must_match() -> None:
    with pytest.raises(RemoteProtocolError):
        select_proposal(parse_proposals("aes256gcm16-prfsha256-x25519", IKE), parse_proposals("aes128gcm16-prfsha256-x25519", IKE))


def test_cbc_needs_integrity_and_gets_it() -> None:
    offered = parse_proposals("aes256-sha256-modp2048", IKE)
    chosen = select_proposal(offered, parse_proposals("aes256-sha256-modp2048", IKE))
    assert chosen.integ_id == 12 and not chosen.is_aead and chosen.ke_group == 14


def test_esp_esn_and_pfs() -> None:
    offered = parse_proposals("aes128gcm16-x25519-esn-noesn", ESP)
    assert select_proposal(offered, parse_proposals("aes128gcm16-x25519-noesn", ESP)).esn is False
    assert select_proposal(offered, parse_proposals("aes128gcm16-x25519-esn", ESP)).esn is True
    # we want PFS, the peer offers none
    with pytest.raises(RemoteProtocolError):
        select_proposal(parse_proposals("aes128gcm16", ESP), parse_proposals("aes128gcm16-x25519", ESP))
    # the peer wants PFS, we have none configured
    with pytest.raises(RemoteProtocolError):
        select_proposal(offered, parse_proposals("aes128gcm16", ESP))


def test_protocols_do_not_mix() -> None:
    with pytest.raises(RemoteProtocolError):
        select_proposal(parse_proposals("aes128gcm16", ESP), parse_proposals("aes128gcm16-prfsha256-x25519", IKE))


def test_validate_chosen_proposal_rejects_extra_or_foreign_transforms() -> None:
    offered = parse_proposals("aes128gcm16-prfsha256-x25519", IKE)
    answer = parse_proposals("aes128gcm16-prfsha256-x25519", IKE)[0]
    assert validate_chosen_proposal(answer, offered).ke_group == 31
    two = parse_proposals("aes128gcm16-prfsha256-x25519-ecp256", IKE)[0]
    with pytest.raises(RemoteProtocolError):
        validate_chosen_proposal(two, parse_proposals("aes128gcm16-prfsha256-x25519-ecp256", IKE))
    foreign = parse_proposals("aes128gcm16-prfsha256-ecp256", IKE)[0]
    with pytest.raises(RemoteProtocolError):
        validate_chosen_proposal(foreign, offered)
    renumbered = parse_proposals("aes128gcm16-prfsha256-x25519", IKE)[0]
    renumbered.number = 7
    with pytest.raises(RemoteProtocolError):
        validate_chosen_proposal(renumbered, offered)


def test_unknown_transforms_from_the_peer_are_skipped_not_fatal() -> None:
    offered = parse_proposals("aes128gcm16-prfsha256-x25519", IKE)
    offered[0].transforms.insert(0, Transform(TransformType.ENCR, 1234))
    offered[0].transforms.append(Transform(77, 5))  # unknown transform type: we cannot accept it
    with pytest.raises(RemoteProtocolError):
        select_proposal(offered, parse_proposals("aes128gcm16-prfsha256-x25519", IKE))
    offered[0].transforms.pop()
    assert select_proposal(offered, parse_proposals("aes128gcm16-prfsha256-x25519", IKE)).encr_id == 20


# ---- traffic selectors ---------------------------------------------------------------------------


def test_narrowing_is_the_intersection() -> None:
    theirs = [ts_from_cidr("10.0.0.0/8")]
    ours = [ts_from_cidr("10.1.2.0/24"), ts_from_cidr("192.168.0.0/16")]
    assert [ts_to_text(t) for t in narrow_traffic_selectors(theirs, ours)] == ["10.1.2.0/24"]


def test_narrowing_ports_and_protocols() -> None:
    theirs = [ts_from_cidr("10.0.0.0/24", ip_protocol=17, ports=(1000, 2000))]
    ours = [ts_from_cidr("10.0.0.0/16", ports=(1500, 65535))]
    narrowed = narrow_traffic_selectors(theirs, ours)
    assert (narrowed[0].ip_protocol, narrowed[0].start_port, narrowed[0].end_port) == (17, 1500, 2000)
    assert ts_to_text(narrowed[0]) == "10.0.0.0/24[17/1500-2000]"


def test_ts_unacceptable() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        narrow_traffic_selectors([ts_from_cidr("10.0.0.0/8")], [ts_from_cidr("2001:db8::/32")])
    assert info.value.notify == NotifyType.TS_UNACCEPTABLE
    with pytest.raises(RemoteProtocolError):
        narrow_traffic_selectors(
            [ts_from_cidr("10.0.0.0/8", ip_protocol=6)], [ts_from_cidr("10.0.0.0/8", ip_protocol=17)]
        )


def test_non_cidr_range_text() -> None:
    ts = TrafficSelector.from_range("10.0.0.1", "10.0.0.5")
    assert ts_to_text(ts) == "10.0.0.1..10.0.0.5"


_v4 = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def _ranges(draw: st.DrawFn) -> TrafficSelector:
    a, b = sorted((draw(_v4), draw(_v4)))
    p1, p2 = sorted((draw(st.integers(0, 65535)), draw(st.integers(0, 65535))))
    proto = draw(st.sampled_from([0, 6, 17]))
    return TrafficSelector.from_range(ipaddress.IPv4Address(a), ipaddress.IPv4Address(b), proto, p1, p2)


@given(st.lists(_ranges(), min_size=1, max_size=4), st.lists(_ranges(), min_size=1, max_size=4))
def test_narrowed_selectors_lie_within_both_sides(theirs: list[TrafficSelector], ours: list[TrafficSelector]) -> None:
    try:
        narrowed = narrow_traffic_selectors(theirs, ours)
    except RemoteProtocolError as exc:
        assert exc.notify == NotifyType.TS_UNACCEPTABLE
        # nothing overlaps: no address of any of ours lies in any of theirs with compatible ports
        for t in theirs:
            for o in ours:
                overlap = max(int(t.start_ip), int(o.start_ip)) <= min(int(t.end_ip), int(o.end_ip))
                ports = max(t.start_port, o.start_port) <= min(t.end_port, o.end_port)
                protos = not (t.ip_protocol and o.ip_protocol and t.ip_protocol != o.ip_protocol)
                assert not (overlap and ports and protos)
        return
    assert ts_within(narrowed, theirs) and ts_within(narrowed, ours)
