"""The interface every authentication method implements."""

from __future__ import annotations

import abc

from ..wire import IDi, IDr

__all__ = ["Authenticator", "Peer"]

Peer = IDi | IDr | str | None  # the other side: its ID payload, a configured identity, or unknown


class Authenticator(abc.ABC):
    """One AUTH method, bound to the configuration of one IKE SA."""

    __slots__ = ()
    method: int  # the AUTH payload's Auth Method (IANA "IKEv2 Authentication Method")

    @abc.abstractmethod
    def sign(self, prf_id: int, octets: bytes, peer: Peer) -> bytes:
        """AUTH data proving we are us to `peer` over the signed octets (RFC 7296 2.15)."""

    @abc.abstractmethod
    def verify(self, prf_id: int, octets: bytes, peer: IDi | IDr, data: bytes) -> bool:
        """True if `data` proves that `peer` (its authenticated-to-be ID payload) signed `octets`."""
