"""Helpers every exchange module uses: finding payloads, identities, our proposals, error Notifies.

Nothing here keeps state. The proposal caches exist because the same configuration strings are parsed
for every handshake on a gateway; they hand out fresh `Proposal` objects (callers set SPIs and strip
transforms) that share the immutable `Transform`s.
"""

from __future__ import annotations

import functools
import os
from typing import TypeVar

from ..events import Address, ProtocolErrorEvent
from ..exceptions import LocalProtocolError, PeerNotifyError, RemoteProtocolError
from ..ike_sa import IkeSa
from ..natt import natd_hash
from ..negotiation import SelectedProposal, transforms_cacheable
from ..proposals import parse_proposals, proposal_to_keywords
from ..wire import (
    Notify,
    NotifyType,
    Payload,
    Proposal,
    ProtocolId,
    TrafficSelector,
    Transform,
    TransformType,
    TSi,
    TSr,
)

__all__ = [
    "NONCE_SIZE",
    "new_nonce",
    "ZERO_IKE_SPI",
    "find",
    "need",
    "find_notify",
    "error_notifies",
    "refusal",
    "requested_group",
    "selectors",
    "our_proposals",
    "parsed_proposals",
    "acceptable_esp",
    "without_ke",
    "describe",
    "error_answer",
    "report_error",
    "natd_notifies",
    "nat_seen",
]

NONCE_SIZE = 32  # our nonces: at least half the PRF key size (RFC 7296 2.10), 256 bits covers SHA-512
ZERO_IKE_SPI = bytes(8)
PROPOSAL_CACHE = 256  # configured proposal strings kept parsed
_KEYWORD_ORDER = {1: 0, 3: 1, 2: 2, 4: 3, 5: 4}  # strongSwan prints encr-integ-prf-ke-esn
_P = TypeVar("_P", bound=Payload)


def new_nonce() -> bytes:
    """A fresh nonce of ours (RFC 7296 2.10: random, at least 128 bits)."""
    return os.urandom(NONCE_SIZE)


# ---- payloads ----------------------------------------------------------------------------------


def find(payloads: list[Payload], kind: type[_P]) -> _P | None:
    for payload in payloads:
        if isinstance(payload, kind):
            return payload
    return None


def need(payloads: list[Payload], kind: type[_P], what: str) -> _P:
    for payload in payloads:
        if isinstance(payload, kind):
            return payload
    raise RemoteProtocolError(f"missing {what} payload", notify=NotifyType.INVALID_SYNTAX)


def find_notify(payloads: list[Payload], notify_type: int) -> Notify | None:
    for payload in payloads:
        if isinstance(payload, Notify) and payload.notify_type == notify_type:
            return payload
    return None


def error_notifies(payloads: list[Payload]) -> list[Notify]:
    return [p for p in payloads if isinstance(p, Notify) and p.is_error]


def refusal(payloads: list[Payload], what: str) -> PeerNotifyError | None:
    """The error the peer's answer carries (its first error Notify), if any."""
    errors = error_notifies(payloads)
    if not errors:
        return None
    return PeerNotifyError(f"{what} refused: {errors[0]!r}", notify=int(errors[0].notify_type))


def requested_group(payloads: list[Payload]) -> int | None:
    """The group an INVALID_KE_PAYLOAD answer asks for (RFC 7296 1.3); -1 if its data is malformed,
    None if the answer has no such notify."""
    notify = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
    if notify is None:
        return None
    return int.from_bytes(notify.data[:2], "big") if len(notify.data) >= 2 else -1


def selectors(payload: TSi | TSr) -> list[TrafficSelector]:
    return [s for s in payload.selectors if isinstance(s, TrafficSelector)]


# ---- our proposals -----------------------------------------------------------------------------


def without_ke(proposals: list[Proposal]) -> list[Proposal]:
    # IKE_AUTH creates the first Child SA with the IKE SA's keys: no KE transforms (RFC 7296 1.2)
    for proposal in proposals:
        proposal.transforms = [t for t in proposal.transforms if int(t.transform_type) != TransformType.KE]
    return proposals


@functools.lru_cache(maxsize=PROPOSAL_CACHE)
def parsed_proposals(text: str, protocol: int) -> tuple[Proposal, ...]:
    """Our proposals, parsed once; shared between calls, so only for read-only use (negotiation)."""
    return tuple(parse_proposals(text, ProtocolId(protocol)))


def our_proposals(text: str, protocol: int, spi: bytes = b"") -> list[Proposal]:
    """Fresh copies of our proposals for one offer (the caller may set SPIs and strip transforms)."""
    return [
        Proposal(number=p.number, protocol_id=p.protocol_id, spi=spi, transforms=list(p.transforms))
        for p in parsed_proposals(text, protocol)
    ]


@functools.lru_cache(maxsize=PROPOSAL_CACHE)
def acceptable_esp(text: str, for_auth: bool) -> tuple[Proposal, ...]:
    """Our ESP proposals as a responder compares them (IKE_AUTH: without KE); shared, read-only."""
    ours = our_proposals(text, ProtocolId.ESP)
    return tuple(without_ke(ours) if for_auth else ours)


def describe(selected: SelectedProposal) -> str:
    """strongSwan keywords of a selected proposal, for events."""
    # Transforms are hashable NamedTuples (an enum member hashes and compares as its int value)
    text = _describe_cached if transforms_cacheable(selected.transforms) else _describe_cached.__wrapped__
    return text(selected.number, selected.protocol_id, selected.transforms)


@functools.lru_cache(maxsize=PROPOSAL_CACHE)
def _describe_cached(number: int, protocol: int, selected: tuple[Transform, ...]) -> str:
    key = [(int(t.transform_type), int(t.transform_id), t.key_length) for t in selected]
    transforms = sorted(key, key=lambda t: _KEYWORD_ORDER.get(t[0], 9))
    proposal = Proposal(
        number=number,
        protocol_id=protocol,
        transforms=[Transform(transform_type=t, transform_id=i, key_length=k) for t, i, k in transforms],
    )
    try:
        return proposal_to_keywords(proposal)
    except (LocalProtocolError, KeyError, ValueError):
        return "/".join(f"{t}:{i}" for t, i, _ in transforms)


# ---- NAT detection (RFC 7296 2.23; MOBIKE repeats it on a new path, RFC 4555 3.5) ---------------

_NATD_SOURCE = int(NotifyType.NAT_DETECTION_SOURCE_IP)
_NATD_DESTINATION = int(NotifyType.NAT_DETECTION_DESTINATION_IP)


def natd_notifies(
    sa: IkeSa, spi_r: bytes, local: Address | None = None, remote: Address | None = None
) -> list[Payload]:
    """Our NAT_DETECTION_SOURCE/DESTINATION_IP for a message from `local` (default: the SA's
    address) to `remote` (default: the peer's); MOBIKE passes the addresses of a new path."""
    if sa.config.encap:
        source = os.urandom(20)  # pretend to be behind a NAT: forces UDP encapsulation (strongSwan encap=yes)
    else:
        source = natd_hash(sa.spi_i, spi_r, sa.local_addr if local is None else local)
    destination = natd_hash(sa.spi_i, spi_r, sa.remote_addr if remote is None else remote)
    return [
        Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=source),
        Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, data=destination),
    ]


def nat_seen(
    sa: IkeSa, payloads: list[Payload], spi_r: bytes, local: Address | None = None, remote: Address | None = None
) -> bool | None:
    """True if the peer's NAT_DETECTION notifies show a NAT, None if it sent none (no NAT-T). Also
    records which side is behind it (sa.nat_here: our address was translated; sa.nat_there: the
    peer's), which decides who sends keepalives and who follows a changed mapping. `local`/`remote`:
    the message's destination and source (default: the SA's addresses)."""
    sources: list[bytes] = []
    dests: list[bytes] = []
    for p in payloads:  # one pass; the hashes are public values, plain comparison is fine
        if isinstance(p, Notify):
            if p.notify_type == _NATD_SOURCE:
                sources.append(bytes(p.data))
            elif p.notify_type == _NATD_DESTINATION:
                dests.append(bytes(p.data))
    if not sources or not dests:
        return None
    peer_natted = natd_hash(sa.spi_i, spi_r, sa.remote_addr if remote is None else remote) not in sources
    me_natted = natd_hash(sa.spi_i, spi_r, sa.local_addr if local is None else local) not in dests
    sa.nat_here, sa.nat_there = me_natted, peer_natted
    return peer_natted or me_natted


# ---- errors ------------------------------------------------------------------------------------


def error_answer(exc: RemoteProtocolError | LocalProtocolError) -> Notify:
    """The Notify that answers a request we could not honour. A LocalProtocolError there means the
    peer chose something our own code cannot use (a group the crypto layer lacks): the same refusal."""
    if isinstance(exc, RemoteProtocolError):
        return Notify(exc.notify, data=exc.data)
    return Notify(NotifyType.NO_PROPOSAL_CHOSEN)


def report_error(sa: IkeSa, description: str, exc: RemoteProtocolError | LocalProtocolError | None = None) -> None:
    """A ProtocolErrorEvent for a failure on `sa` (the exception's Notify, and whether the peer sent it)."""
    notify = exc.notify if isinstance(exc, RemoteProtocolError) else None
    sa.ctx.emit(
        ProtocolErrorEvent(
            ike_sa_id=sa.ike_sa_id, remote_addr=sa.remote_addr, description=description, notify=notify,
            received=isinstance(exc, PeerNotifyError),
        )
    )  # fmt: skip
