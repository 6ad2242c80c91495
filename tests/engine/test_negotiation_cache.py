"""The negotiation fast paths (memoised matching, derived ids, the selector containment test) give
the same answers as the plain computations, and never keep a hostile offer in their caches."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib import negotiation
from ikev2lib.exceptions import RemoteProtocolError
from ikev2lib.negotiation import select_proposal, transforms_cacheable, ts_within, validate_chosen_proposal
from ikev2lib.proposals import parse_proposals
from ikev2lib.wire import SA, Proposal, ProtocolId, TrafficSelector, Transform
from ikev2lib.wire.sa import TransformAttribute

IKE = ProtocolId.IKE

# A small alphabet, so that random offers often match: (type, id, key length)
_TRANSFORMS = st.sampled_from(
    [(1, 20, 128), (1, 20, 256), (1, 12, 128), (1, 28, None), (2, 5, None), (2, 7, None), (3, 12, None),
     (3, 0, None), (4, 31, None), (4, 19, None), (4, 0, None), (5, 0, None), (5, 1, None)]
)  # fmt: skip
_LISTS = st.lists(_TRANSFORMS, min_size=0, max_size=8)


def _proposal(number: int, items: list[tuple[int, int, int | None]]) -> Proposal:
    return Proposal(number, IKE, b"", [Transform(t, i, k) for t, i, k in items])


def _uncached_select(offered: list[Proposal], ours: list[Proposal]) -> tuple[int, tuple[Transform, ...]] | None:
    # select_proposal's loop with the uncached matcher
    for proposal in offered:
        for mine in ours:
            theirs = tuple(proposal.transforms)
            picks = negotiation._match_positions.__wrapped__(theirs, tuple(mine.transforms), IKE)
            if picks is not None:
                return proposal.number, tuple(theirs[i] for i in picks)
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(_LISTS, min_size=1, max_size=3), st.lists(_LISTS, min_size=1, max_size=3))
def test_memoised_selection_equals_the_plain_one(offered_lists: list[list[tuple[int, int, int | None]]],
                                                 our_lists: list[list[tuple[int, int, int | None]]]) -> None:  # fmt: skip
    offered = [_proposal(n, items) for n, items in enumerate(offered_lists, 1)]
    ours = [_proposal(n, items) for n, items in enumerate(our_lists, 1)]
    expected = _uncached_select(offered, ours)
    for _ in range(2):  # the second round answers from the caches
        try:
            got = select_proposal(offered, ours)
        except RemoteProtocolError:
            assert expected is None
            continue
        assert expected == (got.number, got.transforms)
        ids = {int(t.transform_type): int(t.transform_id) for t in reversed(got.transforms)}
        assert got.encr_id == ids.get(1, 0)
        assert got.prf_id == ids.get(2)
        assert got.ke_group == (ids.get(4) or None)
        assert got.esn == (ids.get(5) == 1)


def test_validated_answer_is_the_same_from_the_cache() -> None:
    offer = parse_proposals("aes128gcm16-prfsha256-x25519,aes256gcm16-prfsha384-ecp384", IKE)
    answer = SA([Proposal(2, IKE, b"", [Transform(1, 20, 256), Transform(2, 6), Transform(4, 20)])])
    first = validate_chosen_proposal(answer.proposals[0], offer)
    second = validate_chosen_proposal(answer.proposals[0], offer)
    assert first == second and (second.encr_key_bits, second.prf_id, second.ke_group) == (256, 6, 20)
    bad = Proposal(2, IKE, b"", [Transform(1, 20, 256), Transform(2, 5), Transform(4, 20)])
    for _ in range(2):  # a refusal is never cached as an answer
        try:
            validate_chosen_proposal(bad, offer)
        except RemoteProtocolError:
            continue
        raise AssertionError("an answer with a transform we did not offer was accepted")


def test_hostile_offers_are_never_cache_keys() -> None:
    ours = parse_proposals("aes128gcm16-prfsha256-x25519", IKE)
    big = TransformAttribute(0x7000, bytes(4000))
    with_attribute = Proposal(1, IKE, b"", [Transform(1, 20, 128, (big,)), Transform(2, 5), Transform(4, 31)])
    many = Proposal(1, IKE, b"", [Transform(1, 12, 128)] * 40 + list(ours[0].transforms))
    for hostile in (with_attribute, many):
        assert not transforms_cacheable(tuple(hostile.transforms))
        before = negotiation._match_positions.cache_info().currsize, negotiation._derived.cache_info().currsize
        chosen = select_proposal([hostile], ours)  # still negotiated, just not remembered
        assert chosen.encr_id == 20 and chosen.prf_id == 5 and chosen.ke_group == 31
        after = negotiation._match_positions.cache_info().currsize, negotiation._derived.cache_info().currsize
        assert after[0] == before[0]
        if hostile is with_attribute:  # the selection itself carries the attribute
            assert after[1] == before[1]


_ADDR = st.integers(0, 6)


@st.composite
def _selectors(draw: st.DrawFn) -> TrafficSelector:
    ts_type = draw(st.sampled_from([7, 8, 7, 9]))
    size = draw(st.sampled_from([4, 16, 3])) if draw(st.booleans()) else (4 if ts_type == 7 else 16)
    return TrafficSelector(
        ts_type, draw(st.sampled_from([0, 6, 17])), draw(st.sampled_from([0, 1, 80])),
        draw(st.sampled_from([0, 80, 65535])), draw(_ADDR).to_bytes(size, "big"), draw(_ADDR).to_bytes(size, "big"),
    )  # fmt: skip


def _within_by_intersection(inner: list[TrafficSelector], outer: list[TrafficSelector]) -> bool:
    # the definition: every selector equals its intersection with one of `outer`
    def inside(ts: TrafficSelector, big: TrafficSelector) -> bool:
        common = negotiation._intersect(ts, big)
        return (
            common is not None
            and negotiation._bounds(common) == negotiation._bounds(ts)
            and (common.start_port, common.end_port, common.ip_protocol) == (ts.start_port, ts.end_port, ts.ip_protocol)
        )

    return bool(inner) and all(any(inside(ts, big) for big in outer) for ts in inner)


@settings(max_examples=500, deadline=None)
@given(st.lists(_selectors(), max_size=3), st.lists(_selectors(), max_size=3))
def test_ts_within_matches_the_intersection_definition(inner: list[TrafficSelector], outer: list[TrafficSelector]) -> None:
    assert ts_within(inner, outer) == _within_by_intersection(inner, outer)
