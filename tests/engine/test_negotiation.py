"""Proposal selection (RFC 7296 2.7, 3.3.6) and traffic selector narrowing (2.9)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.crypto import KeyExchange, derive_ike_keys, ike_key_lengths, sk_cipher

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
from ikev2lib.suites import RUNNABLE, esp_suite_name
from ikev2lib.wire import NotifyType, Proposal, ProtocolId, TrafficSelector, Transform, TransformType

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


# ---- only what we can run is chosen ----------------------------------------------------------------
# `ours` below comes from parse_proposals directly, which knows every strongSwan keyword: a configuration
# (IkeConfig/ChildConfig) refuses these strings, but select_proposal must not rely on that.


def test_a_cipher_we_cannot_run_is_skipped_within_a_proposal() -> None:
    text = "aes128ccm16-aes128gcm16-prfmd5-prfsha256-modp1024-mlkem512-x25519"
    chosen = select_proposal(parse_proposals(text, IKE), parse_proposals(text, IKE))
    assert (chosen.encr_id, chosen.encr_key_bits, chosen.prf_id, chosen.ke_group) == (20, 128, 5, 31)
    # ... and the keys derive and protect (no failure at key derivation)
    _, keys = derive_ike_keys(5, chosen.encr_id, chosen.encr_key_bits, None, bytes(32), bytes(32),
                              bytes(32), bytes(8), bytes(8))  # fmt: skip
    assert sk_cipher(chosen.encr_id, chosen.encr_key_bits, None, keys.sk_ei).encrypt(b"", b"x")


def test_a_proposal_we_cannot_run_is_skipped_for_the_next() -> None:
    text = "aes128ccm16-prfsha256-x25519,aes128-aesxcbc-x25519,aes128gcm16-prfsha256-x25519"
    assert select_proposal(parse_proposals(text, IKE), parse_proposals(text, IKE)).number == 3


def test_esp_gets_a_suite_the_data_plane_runs() -> None:
    text = "aes128ctr-aes128-aesxcbc-md5-sha256"
    chosen = select_proposal(parse_proposals(text, ESP, b"\1\2\3\4"), parse_proposals(text, ESP))
    assert (chosen.encr_id, chosen.encr_key_bits, chosen.integ_id) == (12, 128, 12)
    assert esp_suite_name(chosen.encr_id, chosen.encr_key_bits, chosen.integ_id) == "aes128-sha256"
    text = "aes128ccm16-aes256gcm16-mlkem512-modp1536-x25519"
    chosen = select_proposal(parse_proposals(text, ESP, b"\1\2\3\4"), parse_proposals(text, ESP))
    assert (chosen.encr_id, chosen.encr_key_bits, chosen.ke_group) == (20, 256, 31)


def test_only_unrunnable_transforms_give_no_proposal_chosen() -> None:
    for text, protocol in (("aes128ccm16-prfsha256-x25519", IKE), ("aes128gcm16-prfsha256-modp1024", IKE),
                           ("3des-sha1", ESP), ("aes128gcm16-ke1_mlkem768-prfsha256-x25519", IKE)):  # fmt: skip
        with pytest.raises(RemoteProtocolError) as info:
            select_proposal(parse_proposals(text, protocol), parse_proposals(text, protocol))
        assert info.value.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_pfs_with_only_unrunnable_groups_is_refused_not_dropped() -> None:
    # we want PFS but run none of our groups: no Child SA without a key exchange either
    ours = parse_proposals("aes128gcm16-modp1024", ESP)
    for offered in ("aes128gcm16-modp1024", "aes128gcm16"):
        with pytest.raises(RemoteProtocolError):
            select_proposal(parse_proposals(offered, ESP), ours)


def test_an_esn_transform_in_an_ike_proposal_is_not_chosen() -> None:
    offered = parse_proposals("aes128gcm16-prfsha256-x25519", IKE)
    offered[0].transforms.append(Transform(TransformType.ESN, 0))  # RFC 7296 3.3.3: ESP and AH only
    with pytest.raises(RemoteProtocolError):
        select_proposal(offered, parse_proposals("aes128gcm16-prfsha256-x25519", IKE))


def test_a_cipher_needing_integrity_is_never_chosen_without_one() -> None:
    # raw Proposal objects may lack what the keyword parser insists on
    bare_cbc = [Proposal(1, IKE, b"", [Transform(1, 12, 128), Transform(2, 5), Transform(4, 31)])]
    with pytest.raises(RemoteProtocolError):
        select_proposal(bare_cbc, bare_cbc)


@pytest.mark.parametrize(
    "answer, protocol",
    [("aes128ccm16-prfsha256-x25519", IKE), ("aes128gcm16-prfsha256-modp1024", IKE),
     ("aes128gcm16-prfsha256-mlkem512", IKE), ("aes128-md5", ESP), ("aes128ctr-sha256", ESP)],
)  # fmt: skip
def test_an_answer_choosing_what_we_cannot_run_is_refused(answer: str, protocol: ProtocolId) -> None:
    # even when we offered it (raw API): the answer would fail at key derivation or ESP SA setup
    offered = parse_proposals(answer, protocol)
    with pytest.raises(RemoteProtocolError, match="cannot run") as info:
        validate_chosen_proposal(parse_proposals(answer, protocol)[0], offered)
    assert info.value.notify == NotifyType.NO_PROPOSAL_CHOSEN


# (type, id, key length): runnable and unrunnable transforms of every type, for random offers
_ALPHABET = st.sampled_from(
    [(1, 20, 128), (1, 16, 128), (1, 12, 256), (1, 13, 128), (1, 3, None), (1, 28, None), (1, 21, 128), (2, 5, None),
     (2, 1, None), (3, 12, None), (3, 5, None), (3, 1, None), (3, 0, None), (4, 31, None), (4, 2, None),
     (4, 36, None), (4, 0, None), (5, 0, None), (5, 1, None), (6, 36, None)]
)  # fmt: skip
_OFFERS = st.lists(st.lists(_ALPHABET, min_size=1, max_size=7), min_size=1, max_size=3)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from([IKE, ESP]), _OFFERS, _OFFERS)
def test_whatever_is_selected_runs(protocol: ProtocolId, theirs: list[list[tuple[int, int, int | None]]],
                                   ours: list[list[tuple[int, int, int | None]]]) -> None:  # fmt: skip
    def proposals(lists: list[list[tuple[int, int, int | None]]], spi: bytes) -> list[Proposal]:
        return [Proposal(n, protocol, spi, [Transform(*t) for t in items]) for n, items in enumerate(lists, 1)]

    spi = b"\1\2\3\4" if protocol == ESP else b""
    offered = proposals(theirs, spi)
    try:
        chosen = select_proposal(offered, proposals(ours, b""))
    except RemoteProtocolError as exc:
        assert exc.notify == NotifyType.NO_PROPOSAL_CHOSEN
        return
    assert all((int(t.transform_type), int(t.transform_id), t.key_length) in RUNNABLE[protocol] for t in chosen.transforms)
    if protocol == ESP:
        assert esp_suite_name(chosen.encr_id, chosen.encr_key_bits, chosen.integ_id) is not None
    elif chosen.prf_id is not None:
        enc_len, integ_len = ike_key_lengths(chosen.encr_id, chosen.encr_key_bits, chosen.integ_id)
        sk_cipher(chosen.encr_id, chosen.encr_key_bits, chosen.integ_id, bytes(enc_len), bytes(integ_len))
    if chosen.ke_group is not None:
        KeyExchange.generate(chosen.ke_group)
    # the initiator accepts the answer the responder builds from it
    assert validate_chosen_proposal(chosen.to_wire(spi), offered).transforms == chosen.transforms


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
