"""Pure negotiation: choosing a proposal (RFC 7296 2.7, 3.3) and narrowing traffic selectors (2.9).

No state, no I/O: functions of the offered and the acceptable objects. Failures raise
`RemoteProtocolError` carrying the Notify a responder answers with (NO_PROPOSAL_CHOSEN,
TS_UNACCEPTABLE). Only transforms this library can run (`suites.RUNNABLE`) are ever chosen or accepted
in an answer: a peer offering, say, AES-CCM before AES-GCM gets AES-GCM, never a failure at key
derivation or ESP SA setup.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .exceptions import RemoteProtocolError
from .suites import RUNNABLE, TransformKey
from .wire import NotifyType, Proposal, TrafficSelector, Transform, TSType
from .wire.enums import EncrId, EsnId, IntegId, KeyExchangeId, TransformType

__all__ = [
    "AEAD_ENCR_IDS",
    "SelectedProposal",
    "select_proposal",
    "validate_chosen_proposal",
    "ts_from_cidr",
    "ts_from_config",
    "ts_to_text",
    "narrow_traffic_selectors",
    "ts_within",
    "ke_groups",
]

# RFC 5282 (AES-CCM, AES-GCM) and RFC 7634 (ChaCha20-Poly1305): no INTEG transform
AEAD_ENCR_IDS = frozenset(
    {
        EncrId.AES_CCM_8,
        EncrId.AES_CCM_12,
        EncrId.AES_CCM_16,
        EncrId.AES_GCM_8,
        EncrId.AES_GCM_12,
        EncrId.AES_GCM_16,
        EncrId.CHACHA20_POLY1305,
    }
)
# module-level names: read on every comparison below (a global is cheaper than an enum attribute)
_ENCR, _PRF, _INTEG = TransformType.ENCR, TransformType.PRF, TransformType.INTEG
_KE, _ESN = TransformType.KE, TransformType.ESN
_NO_ESN_KEY: TransformKey = (_ESN, EsnId.NO_ESN, None)  # no ESN configured means "noesn"
_NONE_IDS: dict[int, int] = {_INTEG: IntegId.NONE, _KE: KeyExchangeId.NONE}  # accepted in an answer as "absent"
_NOTHING: frozenset[TransformKey] = frozenset()
# Bound on the work a peer can make us do: proposals x transforms compared per negotiation.
MAX_OFFERED_PROPOSALS = 64


def _key(t: Transform) -> TransformKey:
    return (int(t.transform_type), int(t.transform_id), t.key_length)


@dataclass(frozen=True)
class SelectedProposal:
    """The outcome of a negotiation: one transform per type, in a proposal of the peer's numbering.

    The algorithm ids below are derived from `transforms` when the object is built (once per distinct
    transform set, see `_derived`) and are plain attributes afterwards: the engine reads them often.
    """

    number: int
    protocol_id: int
    spi: bytes  # the SPI the proposer put in the chosen proposal
    transforms: tuple[Transform, ...]
    encr_id: int = field(init=False, repr=False, compare=False)
    encr_key_bits: int | None = field(init=False, repr=False, compare=False)
    prf_id: int | None = field(init=False, repr=False, compare=False)
    integ_id: int | None = field(init=False, repr=False, compare=False)
    ke_group: int | None = field(init=False, repr=False, compare=False)
    esn: bool = field(init=False, repr=False, compare=False)
    is_aead: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        derive = _derived if transforms_cacheable(self.transforms) else _derived.__wrapped__
        self.__dict__.update(derive(self.transforms))  # frozen: fill the derived fields directly

    def to_wire(self, spi: bytes) -> Proposal:
        """The proposal to put in our answer, carrying our own SPI."""
        return Proposal(
            number=self.number,
            protocol_id=self.protocol_id,
            spi=spi,
            # attributes other than the key length are not echoed; Transforms are immutable, so one
            # without them is shared as is
            transforms=[
                t if not t.attributes else Transform(t.transform_type, t.transform_id, t.key_length)
                for t in self.transforms
            ],
        )


# Distinct transform sets whose derived ids are kept (a peer population negotiates few of them).
DERIVED_CACHE_SIZE = 256
# Longest transform list used as a cache key below (real proposals have a handful of transforms).
CACHEABLE_TRANSFORMS = 32
_ATTRIBUTES = operator.itemgetter(3)  # Transform.attributes


def transforms_cacheable(transforms: tuple[Transform, ...]) -> bool:
    """True for what real peers send (few transforms, no attributes besides the key length). Only
    such lists become cache keys, so a hostile offer (many transforms, big TLV attributes) is
    handled uncached and never kept in memory."""
    return len(transforms) <= CACHEABLE_TRANSFORMS and not any(map(_ATTRIBUTES, transforms))


@functools.lru_cache(maxsize=DERIVED_CACHE_SIZE)
def _derived(transforms: tuple[Transform, ...]) -> dict[str, object]:
    """The algorithm ids of a selected transform set (first transform of each type)."""
    ids: dict[int, int] = {}
    encr_key_bits: int | None = None
    for t in transforms:
        ttype = int(t.transform_type)
        if ttype not in ids:
            ids[ttype] = int(t.transform_id)
            if ttype == _ENCR:
                encr_key_bits = t.key_length
    encr_id = ids.get(_ENCR, 0)
    return {
        "encr_id": encr_id,
        "encr_key_bits": encr_key_bits,
        "prf_id": ids.get(_PRF),
        "integ_id": ids.get(_INTEG) or None,
        "ke_group": ids.get(_KE) or None,
        "esn": ids.get(_ESN) == EsnId.ESN,
        "is_aead": encr_id in AEAD_ENCR_IDS,
    }


# Distinct (offered, ours) transform-list pairs whose match is remembered: a peer population sends
# few distinct proposals, and a hit skips the per-type comparison below.
MATCH_CACHE_SIZE = 512


def _by_type(transforms: Sequence[Transform]) -> dict[int, list[int]]:
    """Transform type -> positions in `transforms`, in order."""
    table: dict[int, list[int]] = {}
    for i, t in enumerate(transforms):
        table.setdefault(int(t.transform_type), []).append(i)
    return table


def _match(offered: Proposal, ours: Proposal) -> tuple[Transform, ...] | None:
    """One transform of each type, in the offerer's order of preference, acceptable to `ours` and
    runnable here."""
    theirs = tuple(offered.transforms)
    match = _match_positions if transforms_cacheable(theirs) else _match_positions.__wrapped__
    picks = match(theirs, tuple(ours.transforms), int(offered.protocol_id))
    return None if picks is None else tuple([theirs[i] for i in picks])


@functools.lru_cache(maxsize=MATCH_CACHE_SIZE)
def _match_positions(
    theirs: tuple[Transform, ...], ours: tuple[Transform, ...], protocol: int
) -> tuple[int, ...] | None:
    # positions in `theirs` (not the objects: an equal cached key may hold other int/enum instances)
    theirs_by_type = _by_type(theirs)
    ours_by_type = _by_type(ours)
    runnable = RUNNABLE.get(protocol, _NOTHING)
    chosen: list[int] = []
    encr: Transform | None = None
    integ = False
    for ttype in sorted(set(theirs_by_type) | set(ours_by_type)):
        configured = {_key(ours[i]) for i in ours_by_type.get(ttype, [])}
        if ttype == _ESN and not configured:
            configured = {_NO_ESN_KEY}
        candidates = theirs_by_type.get(ttype, [])
        if ttype == _INTEG and encr is not None and int(encr.transform_id) in AEAD_ENCR_IDS:
            # an AEAD cipher takes no INTEG transform (or only NONE)
            if any(int(theirs[i].transform_id) != IntegId.NONE for i in candidates) and not any(
                int(theirs[i].transform_id) == IntegId.NONE for i in candidates
            ):
                return None
            continue
        if ttype == _ESN and not candidates:
            if _NO_ESN_KEY not in configured or _NO_ESN_KEY not in runnable:
                return None
            continue
        # a transform we cannot run is skipped, never chosen
        pick = next((i for i in candidates if (k := _key(theirs[i])) in configured and k in runnable), None)
        if pick is None:
            if ttype == _KE and not candidates and not configured:
                continue  # neither side wants a key exchange (no PFS); `configured`: ours may have none we run
            return None
        if ttype == _ENCR:
            encr = theirs[pick]
        elif ttype == _INTEG:
            integ = True
        chosen.append(pick)
    if encr is None or not (integ or int(encr.transform_id) in AEAD_ENCR_IDS):
        return None  # no cipher, or a cipher that needs an integrity transform (RFC 7296 3.3.3) without one
    return tuple(chosen)


def select_proposal(offered: Sequence[Proposal], acceptable: Sequence[Proposal]) -> SelectedProposal:
    """The first of the peer's proposals (in its order, RFC 7296 2.7) that one of ours accepts.

    Raises RemoteProtocolError(NO_PROPOSAL_CHOSEN) if none fits.
    """
    if len(offered) > MAX_OFFERED_PROPOSALS:
        raise RemoteProtocolError("too many proposals", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    for proposal in offered:
        for ours in acceptable:
            if int(proposal.protocol_id) != int(ours.protocol_id):
                continue
            chosen = _match(proposal, ours)
            if chosen is not None:
                return SelectedProposal(
                    number=proposal.number,
                    protocol_id=int(proposal.protocol_id),
                    spi=bytes(proposal.spi),
                    transforms=chosen,
                )
    raise RemoteProtocolError("no acceptable proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)


def validate_chosen_proposal(chosen: Proposal, offered: Sequence[Proposal]) -> SelectedProposal:
    """Check a responder's answer: exactly one transform per type, all from our proposal of that number."""
    ours = tuple(
        tuple(p.transforms)
        for p in offered
        if p.number == chosen.number and int(p.protocol_id) == int(chosen.protocol_id)
    )
    theirs = tuple(chosen.transforms)
    check = _checked_answer if transforms_cacheable(theirs) else _checked_answer.__wrapped__
    picks = check(theirs, ours, int(chosen.protocol_id))
    return SelectedProposal(
        number=chosen.number,
        protocol_id=int(chosen.protocol_id),
        spi=bytes(chosen.spi),
        transforms=tuple([theirs[i] for i in picks]),
    )


@functools.lru_cache(maxsize=MATCH_CACHE_SIZE)
def _checked_answer(
    theirs: tuple[Transform, ...], ours: tuple[tuple[Transform, ...], ...], protocol: int
) -> tuple[int, ...]:
    # positions in `theirs` of the selected transforms; raises (uncached) for an unacceptable answer
    types = [int(t.transform_type) for t in theirs]
    if len(types) != len(set(types)):
        raise RemoteProtocolError("answer has several transforms of one type", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    if not ours:
        raise RemoteProtocolError("answer does not match any offered proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    runnable = RUNNABLE.get(protocol, _NOTHING)
    for key in map(_key, theirs):
        if key not in runnable and _NONE_IDS.get(key[0]) != key[1]:
            raise RemoteProtocolError(
                f"answer chose a transform we cannot run: {key}", notify=NotifyType.NO_PROPOSAL_CHOSEN
            )
    for candidate in ours:
        picks = _match_positions.__wrapped__(theirs, candidate, protocol)  # the whole answer is what is cached
        if picks is not None:
            break
    else:
        raise RemoteProtocolError("no acceptable proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    if {_key(theirs[i]) for i in picks} != {_key(t) for t in theirs if not _is_none(t)}:
        raise RemoteProtocolError("answer contains transforms we did not offer", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    return picks


def _is_none(t: Transform) -> bool:
    # INTEG NONE / KE NONE in an answer are accepted as "absent"
    return _NONE_IDS.get(int(t.transform_type)) == int(t.transform_id)


def ke_groups(proposals: Iterable[Proposal]) -> list[int]:
    """Key exchange groups in order of preference, without duplicates."""
    groups: list[int] = []
    for proposal in proposals:
        for t in proposal.transforms:
            ident = int(t.transform_id)
            if int(t.transform_type) == _KE and ident != KeyExchangeId.NONE and ident not in groups:
                groups.append(ident)
    return groups


# ---- traffic selectors (RFC 7296 3.13.1) -------------------------------------------------------------

_TS_IPV4, _TS_IPV6 = TSType.TS_IPV4_ADDR_RANGE, TSType.TS_IPV6_ADDR_RANGE


def ts_from_cidr(text: str, ip_protocol: int = 0, ports: tuple[int, int] = (0, 65535)) -> TrafficSelector:
    """A range selector from "10.0.0.0/24" or "2001:db8::/64"."""
    network = ipaddress.ip_network(text, strict=False)
    ts_type = TSType.TS_IPV4_ADDR_RANGE if network.version == 4 else TSType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(
        ts_type=ts_type,
        ip_protocol=ip_protocol,
        start_port=ports[0],
        end_port=ports[1],
        start_address=network.network_address.packed,
        end_address=network.broadcast_address.packed,
    )


def _range_text(start: bytes, end: bytes) -> str:
    first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    if first.version == last.version and int(first) <= int(last):
        nets = list(ipaddress.summarize_address_range(first, last))
    if len(nets) == 1:
        return str(nets[0])
    return f"{first}..{last}"


def ts_to_text(ts: TrafficSelector) -> str:
    """strongSwan-like text: "10.0.0.0/24", with "[proto/port]" when restricted."""
    return _ts_text(bytes(ts.start_address), bytes(ts.end_address), ts.ip_protocol, ts.start_port, ts.end_port)


@functools.lru_cache(maxsize=4096)
def _ts_text(start: bytes, end: bytes, ip_protocol: int, start_port: int, end_port: int) -> str:
    text = _range_text(start, end)
    if ip_protocol or (start_port, end_port) != (0, 65535):
        port = str(start_port) if start_port == end_port else f"{start_port}-{end_port}"
        text += f"[{ip_protocol}/{port}]"
    return text


@functools.lru_cache(maxsize=1024)
def ts_from_config(cidr: str) -> TrafficSelector:
    """The selector of a configured network (cached: configs are parsed once; never mutate the result)."""
    return TrafficSelector.from_network(cidr)


def _bounds(ts: TrafficSelector) -> tuple[int, int, int] | None:
    ts_type = int(ts.ts_type)
    size = 4 if ts_type == _TS_IPV4 else 16 if ts_type == _TS_IPV6 else 0
    if size == 0 or len(ts.start_address) != size or len(ts.end_address) != size:
        return None
    return ts_type, int.from_bytes(ts.start_address, "big"), int.from_bytes(ts.end_address, "big")


def _intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    ba, bb = _bounds(a), _bounds(b)
    if ba is None or bb is None or ba[0] != bb[0]:
        return None
    start, end = max(ba[1], bb[1]), min(ba[2], bb[2])
    if start > end:
        return None
    if a.ip_protocol and b.ip_protocol and a.ip_protocol != b.ip_protocol:
        return None
    proto = a.ip_protocol or b.ip_protocol
    port_lo, port_hi = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if port_lo > port_hi:
        return None
    size = 4 if ba[0] == _TS_IPV4 else 16
    return TrafficSelector(
        ts_type=a.ts_type,
        ip_protocol=proto,
        start_port=port_lo,
        end_port=port_hi,
        start_address=start.to_bytes(size, "big"),
        end_address=end.to_bytes(size, "big"),
    )


# Bound on selectors compared in one narrowing (each side); more is a hostile or broken peer.
MAX_TRAFFIC_SELECTORS = 32


def narrow_traffic_selectors(
    offered: Sequence[TrafficSelector], ours: Sequence[TrafficSelector]
) -> list[TrafficSelector]:
    """The intersections of the peer's selectors with ours (RFC 7296 2.9), without duplicates.

    Raises RemoteProtocolError(TS_UNACCEPTABLE) when nothing is left.
    """
    if len(offered) > MAX_TRAFFIC_SELECTORS or len(ours) > MAX_TRAFFIC_SELECTORS:
        raise RemoteProtocolError("too many traffic selectors", notify=NotifyType.TS_UNACCEPTABLE)
    result: list[TrafficSelector] = []
    seen: set[tuple[int, int, int, int, bytes, bytes]] = set()
    for theirs in offered:
        for mine in ours:
            common = _intersect(theirs, mine)
            if common is None:
                continue
            ident = (
                int(common.ts_type),
                common.ip_protocol,
                common.start_port,
                common.end_port,
                bytes(common.start_address),
                bytes(common.end_address),
            )
            if ident not in seen:
                seen.add(ident)
                result.append(common)
    if not result:
        raise RemoteProtocolError("traffic selectors unacceptable", notify=NotifyType.TS_UNACCEPTABLE)
    return result


def ts_within(inner: Sequence[TrafficSelector], outer: Sequence[TrafficSelector]) -> bool:
    """True if every selector of `inner` lies inside one selector of `outer` (checks a narrowed answer)."""
    if not inner:
        return False
    return all(any(_covers(big, ts) for big in outer) for ts in inner)


def _covers(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    # the same test as `_intersect(inner, outer) == inner`, without building the intersection
    bi, bo = _bounds(inner), _bounds(outer)
    if bi is None or bo is None or bi[0] != bo[0] or not bo[1] <= bi[1] <= bi[2] <= bo[2]:
        return False
    if outer.ip_protocol and outer.ip_protocol != inner.ip_protocol:
        return False
    return outer.start_port <= inner.start_port <= inner.end_port <= outer.end_port
