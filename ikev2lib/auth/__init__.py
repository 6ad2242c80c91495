"""Authentication methods of IKE_AUTH (RFC 7296 2.15/2.16), one module each.

IKE_AUTH computes the signed octets (the same for every method) and hands them to an `Authenticator`
(ours: builds the AUTH payload and any CERT payloads we send) or a `Verifier` (the peer's, chosen by
the AUTH method it used and allowed by the configuration's `remote_auth`). Adding a method (EAP) is a
new module and an entry here; IKE_AUTH does not change.
"""

from __future__ import annotations

from collections.abc import Collection

from ..config import IkeConfig
from ..exceptions import LocalProtocolError
from ..pki import select_credential
from ..wire import AuthMethod
from .base import Authenticator, Peer, PeerProof, Verified, Verifier
from .psk import PskAuthenticator
from .pubkey import SIGNATURE_METHODS, PubkeyAuthenticator, PubkeyVerifier

__all__ = [
    "Authenticator",
    "Peer",
    "PeerProof",
    "PskAuthenticator",
    "PubkeyAuthenticator",
    "PubkeyVerifier",
    "SIGNATURE_METHODS",
    "Verified",
    "Verifier",
    "accepts_method",
    "local_authenticator",
    "peer_verifier",
]


def local_authenticator(
    config: IkeConfig, *, peer_hashes: Collection[int], peer_certreq: Collection[bytes] | None
) -> Authenticator:
    """How we authenticate ourselves under `config`, given the peer's SIGNATURE_HASH_ALGORITHMS and
    CERTREQ hashes (None: it sent no CERTREQ)."""
    if config.local_auth == "psk":
        return PskAuthenticator(config)
    anchors = config.trust.anchors if config.trust is not None else ()
    credential = select_credential(config.credentials, peer_certreq or (), anchors)
    send = config.send_cert == "always" or (config.send_cert == "ifasked" and peer_certreq is not None)
    return PubkeyAuthenticator(credential, peer_hashes=peer_hashes, send_certs=send, rsa_pss=config.rsa_pss)


def accepts_method(config: IkeConfig, method: int) -> bool:
    """Whether `config`'s `remote_auth` lets a peer authenticate with AUTH method `method`."""
    if config.remote_auth == "psk":
        return method == AuthMethod.SHARED_KEY_MIC
    return method in SIGNATURE_METHODS


def peer_verifier(
    config: IkeConfig, method: int, *, wall_time: float, announced_hashes: Collection[int]
) -> Verifier | None:
    """How to check a peer that authenticated with `method` (None: `config` does not accept it)."""
    if not accepts_method(config, method):
        return None
    if config.remote_auth == "psk":
        return PskAuthenticator(config)
    if config.trust is None:  # IkeConfig refuses this; kept for type narrowing
        raise LocalProtocolError('remote_auth="pubkey" without a trust store')
    return PubkeyVerifier(config.trust, wall_time=wall_time, accepted_hashes=announced_hashes)
