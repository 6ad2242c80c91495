"""Pre-shared keys (RFC 7296 2.15, method 2, Shared Key Message Integrity Code)."""

from __future__ import annotations

from ..config import IkeConfig
from ..crypto import psk_auth_data, verify_psk_auth
from ..exceptions import LocalProtocolError, RemoteProtocolError
from ..identities import id_matches, own_id
from ..wire import AuthMethod, IDi, NotifyType
from .base import Authenticator, Peer, PeerProof, Verified, Verifier

__all__ = ["PskAuthenticator"]


class PskAuthenticator(Authenticator, Verifier):
    """The key shared with a peer is its `peer_psks` entry (a gateway's secrets, by identity), else
    the configuration's general `psk`. The same object signs and verifies: the key is symmetric."""

    __slots__ = ("_config",)
    method = int(AuthMethod.SHARED_KEY_MIC)

    def __init__(self, config: IkeConfig) -> None:
        self._config = config

    def _key_for(self, peer: Peer) -> bytes | None:
        if peer is not None:
            payload = own_id(IDi, peer) if isinstance(peer, str) else peer
            for identity, key in self._config.peer_psks:
                if id_matches(payload, identity):
                    return key
        return self._config.psk or None

    def sign(self, prf_id: int, octets: bytes, peer: Peer) -> bytes:
        key = self._key_for(peer)
        if key is None:
            raise LocalProtocolError("no pre-shared key for this peer")
        return psk_auth_data(prf_id, key, octets)

    def verify(self, prf_id: int, octets: bytes, proof: PeerProof) -> Verified:
        key = self._key_for(proof.id_payload)
        if key is None:
            raise RemoteProtocolError("no pre-shared key for this peer", notify=NotifyType.AUTHENTICATION_FAILED)
        if not verify_psk_auth(prf_id, key, octets, bytes(proof.auth.data)):
            raise RemoteProtocolError("pre-shared key AUTH does not verify", notify=NotifyType.AUTHENTICATION_FAILED)
        return Verified()
