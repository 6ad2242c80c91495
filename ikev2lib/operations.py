"""Local requests queued on an IKE SA until its request window is free (RFC 7296 2.3, window size 1).

One frozen dataclass per kind: `exchanges.start_operation` matches on the type, so a misspelled
kind is a type error, not a silently ignored string. They hold plain data (ids, configs), never
references into an IKE SA, so the successor of a rekeyed IKE SA can take them over as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ChildConfig
from .wire.redirect import Gateway

__all__ = [
    "Operation",
    "CreateChild",
    "RekeyChild",
    "DeleteChild",
    "RekeyIke",
    "DeleteIke",
    "SendDpd",
    "ReportInvalidMessageId",
    "UpdateSaAddresses",
    "SendAddressList",
    "CheckPeerAddress",
    "Redirect",
]


@dataclass(frozen=True, slots=True)
class CreateChild:
    config: ChildConfig
    resource: int | None = None  # RFC 9611: an additional per-resource Child SA for this resource index


@dataclass(frozen=True, slots=True)
class RekeyChild:
    child_id: int


@dataclass(frozen=True, slots=True)
class DeleteChild:
    child_id: int


@dataclass(frozen=True, slots=True)
class RekeyIke:
    pass


@dataclass(frozen=True, slots=True)
class DeleteIke:
    pass


@dataclass(frozen=True, slots=True)
class SendDpd:
    pass


@dataclass(frozen=True, slots=True)
class ReportInvalidMessageId:
    """RFC 7296 3.10.1: tell the peer (in a request of our own) which message ID we refused."""

    message_id: int


@dataclass(frozen=True, slots=True)
class UpdateSaAddresses:
    """RFC 4555 3.5, original initiator: tell the peer the IKE SA moved to our new address (the SA's
    `local_addr`). `tried`: local addresses the peer refused with UNACCEPTABLE_ADDRESSES."""

    tried: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SendAddressList:
    """RFC 4555 3.6: our address list changed, the SA's own address did not."""


@dataclass(frozen=True, slots=True)
class CheckPeerAddress:
    """RFC 4555 3.7, responder: a return routability check of the peer's new address before the
    IKE SA and its Child SAs move there."""

    addr: tuple[str, int]


@dataclass(frozen=True, slots=True)
class Redirect:
    """RFC 5685 6: send the established client to another gateway."""

    gateway: Gateway


Operation = (
    CreateChild | RekeyChild | DeleteChild | RekeyIke | DeleteIke | SendDpd | ReportInvalidMessageId
    | UpdateSaAddresses | SendAddressList | CheckPeerAddress | Redirect
)
