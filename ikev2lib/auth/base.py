"""The interfaces of authentication methods: proving who we are, and checking the peer's proof."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from cryptography import x509

from ..wire import Auth, Cert, IDi, IDr, Payload

__all__ = ["Authenticator", "Peer", "PeerProof", "Verified", "Verifier"]

Peer = IDi | IDr | str | None  # the other side: its ID payload, a configured identity, or unknown


@dataclass(frozen=True, slots=True)
class PeerProof:
    """What the peer sent in IKE_AUTH to prove its identity: its ID, AUTH and CERT payloads."""

    id_payload: IDi | IDr
    auth: Auth
    certificates: tuple[Cert, ...] = ()


@dataclass(frozen=True, slots=True)
class Verified:
    """A peer that proved its identity; `certificate` is its validated end-entity certificate."""

    certificate: x509.Certificate | None = None


class Authenticator(abc.ABC):
    """How we authenticate ourselves in one IKE SA (one AUTH method, bound to its configuration)."""

    __slots__ = ()
    method: int  # the AUTH payload's Auth Method (IANA "IKEv2 Authentication Method")

    @property
    def certificate(self) -> x509.Certificate | None:
        """Our end-entity certificate, if we authenticate with one (our DN identity is taken from it)."""
        return None

    def cert_payloads(self) -> list[Payload]:
        """CERT payloads to send before AUTH (RFC 7296 3.6)."""
        return []

    @abc.abstractmethod
    def sign(self, prf_id: int, octets: bytes, peer: Peer) -> bytes:
        """AUTH data proving we are us to `peer` over the signed octets (RFC 7296 2.15)."""


class Verifier(abc.ABC):
    """How we check a peer that used one AUTH method."""

    __slots__ = ()

    @abc.abstractmethod
    def verify(self, prf_id: int, octets: bytes, proof: PeerProof) -> Verified:
        """Check that the peer named in `proof` signed `octets`. Raises RemoteProtocolError (notify
        AUTHENTICATION_FAILED) saying what failed; never anything else on the peer's data."""
