"""Authentication methods of IKE_AUTH (RFC 7296 2.15/2.16), one module each.

IKE_AUTH computes the signed octets (the same for every method) and hands them to an `Authenticator`:
ours builds the AUTH payload we send, the peer's (chosen by the AUTH method it used) verifies what it
sent. Adding a method (public key signatures, EAP) is a new module and a registry entry here; IKE_AUTH
does not change.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import IkeConfig
from ..wire import AuthMethod
from .base import Authenticator, Peer
from .psk import PskAuthenticator

__all__ = ["Authenticator", "Peer", "PskAuthenticator", "local_authenticator", "peer_authenticator"]

# AUTH method -> how to verify a peer that used it, for a given configuration
_VERIFIERS: dict[int, Callable[[IkeConfig], Authenticator]] = {
    AuthMethod.SHARED_KEY_MIC: PskAuthenticator,
}


def local_authenticator(config: IkeConfig) -> Authenticator:
    """How we authenticate ourselves under `config`."""
    return PskAuthenticator(config)


def peer_authenticator(config: IkeConfig, method: int) -> Authenticator | None:
    """How to verify a peer that authenticated with `method` (None: a method we do not accept)."""
    make = _VERIFIERS.get(method)
    return None if make is None else make(config)
