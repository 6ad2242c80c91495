"""Pure negotiation: choosing a proposal (RFC 7296 2.7, 3.3) and narrowing traffic selectors (2.9).

No state, no I/O: functions of the offered and the acceptable objects. Failures raise
`RemoteProtocolError` carrying the Notify a responder answers with (NO_PROPOSAL_CHOSEN,
TS_UNACCEPTABLE).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .exceptions import RemoteProtocolError
from .wire import NotifyType, Proposal, TrafficSelector, Transform, TSType

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

# RFC 5282 (AES-CCM 14-16, AES-GCM 18-20) and RFC 7634 (ChaCha20-Poly1305 28): no INTEG transform
AEAD_ENCR_IDS = frozenset({14, 15, 16, 18, 19, 20, 28})
_ENCR, _PRF, _INTEG, _KE, _ESN = 1, 2, 3, 4, 5
_NO_ESN = 0
# Bound on the work a peer can make us do: proposals x transforms compared per negotiation.
MAX_OFFERED_PROPOSALS = 64


def _key(t: Transform) -> tuple[int, int, int | None]:
    return (int(t.transform_type), int(t.transform_id), t.key_length)


@dataclass(frozen=True)
class SelectedProposal:
    """The outcome of a negotiation: one transform per type, in a proposal of the peer's numbering."""

    number: int
    protocol_id: int
    spi: bytes  # the SPI the proposer put in the chosen proposal
    transforms: tuple[Transform, ...]

    def _id(self, ttype: int) -> int | None:
        for t in self.transforms:
            if int(t.transform_type) == ttype:
                return int(t.transform_id)
        return None

    @functools.cached_property
    def encr_id(self) -> int:
        value = self._id(_ENCR)
        return 0 if value is None else value

    @functools.cached_property
    def encr_key_bits(self) -> int | None:
        for t in self.transforms:
            if int(t.transform_type) == _ENCR:
                return t.key_length
        return None

    @functools.cached_property
    def prf_id(self) -> int | None:
        return self._id(_PRF)

    @functools.cached_property
    def integ_id(self) -> int | None:
        value = self._id(_INTEG)
        return None if value in (None, 0) else value

    @functools.cached_property
    def ke_group(self) -> int | None:
        value = self._id(_KE)
        return None if value in (None, 0) else value

    @functools.cached_property
    def esn(self) -> bool:
        return self._id(_ESN) == 1

    @functools.cached_property
    def is_aead(self) -> bool:
        return self.encr_id in AEAD_ENCR_IDS

    def to_wire(self, spi: bytes) -> Proposal:
        """The proposal to put in our answer, carrying our own SPI."""
        return Proposal(
            number=self.number,
            protocol_id=self.protocol_id,
            spi=spi,
            transforms=[
                Transform(
                    transform_type=t.transform_type, transform_id=t.transform_id, key_length=t.key_length
                )
                for t in self.transforms
            ],
        )


def _by_type(proposal: Proposal) -> dict[int, list[Transform]]:
    table: dict[int, list[Transform]] = {}
    for t in proposal.transforms:
        table.setdefault(int(t.transform_type), []).append(t)
    return table


def _match(offered: Proposal, ours: Proposal) -> tuple[Transform, ...] | None:
    """One transform of each type, in the offerer's order of preference, acceptable to `ours`."""
    theirs_by_type = _by_type(offered)
    ours_by_type = _by_type(ours)
    chosen: list[Transform] = []
    encr: Transform | None = None
    for ttype in sorted(set(theirs_by_type) | set(ours_by_type)):
        acceptable = {_key(t) for t in ours_by_type.get(ttype, [])}
        if ttype == _ESN and not acceptable:
            acceptable = {(_ESN, _NO_ESN, None)}  # no ESN configured means "noesn"
        candidates = theirs_by_type.get(ttype, [])
        if ttype == _INTEG and encr is not None and int(encr.transform_id) in AEAD_ENCR_IDS:
            # an AEAD cipher takes no INTEG transform (or only NONE)
            if any(int(t.transform_id) != 0 for t in candidates) and not any(
                int(t.transform_id) == 0 for t in candidates
            ):
                return None
            continue
        if ttype == _ESN and not candidates:
            if (_ESN, _NO_ESN, None) not in acceptable:
                return None
            continue
        pick = next((t for t in candidates if _key(t) in acceptable), None)
        if pick is None:
            if ttype == _KE and not candidates and not acceptable:
                continue
            return None
        if ttype == _ENCR:
            encr = pick
        chosen.append(pick)
    if encr is None:
        return None
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
    types = [int(t.transform_type) for t in chosen.transforms]
    if len(types) != len(set(types)):
        raise RemoteProtocolError("answer has several transforms of one type", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    ours = [p for p in offered if p.number == chosen.number and int(p.protocol_id) == int(chosen.protocol_id)]
    if not ours:
        raise RemoteProtocolError("answer does not match any offered proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    result = select_proposal([chosen], ours)
    if {_key(t) for t in result.transforms} != {_key(t) for t in chosen.transforms if not _is_none(t)}:
        raise RemoteProtocolError("answer contains transforms we did not offer", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    return result


def _is_none(t: Transform) -> bool:
    # INTEG NONE / KE NONE in an answer are accepted as "absent"
    return int(t.transform_type) in (_INTEG, _KE) and int(t.transform_id) == 0


def ke_groups(proposals: Iterable[Proposal]) -> list[int]:
    """Key exchange groups in order of preference, without duplicates."""
    groups: list[int] = []
    for proposal in proposals:
        for t in proposal.transforms:
            if int(t.transform_type) == _KE and int(t.transform_id) != 0 and int(t.transform_id) not in groups:
                groups.append(int(t.transform_id))
    return groups


# ---- traffic selectors (RFC 7296 3.13.1) -------------------------------------------------------------

_TS_IPV4, _TS_IPV6 = 7, 8


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
    for ts in inner:
        ok = False
        for big in outer:
            common = _intersect(ts, big)
            if common is not None and _bounds(common) == _bounds(ts) and (
                common.start_port,
                common.end_port,
                common.ip_protocol,
            ) == (ts.start_port, ts.end_port, ts.ip_protocol):
                ok = True
                break
        if not ok:
            return False
    return True
