"""Public key signatures with X.509 certificates: RSA (method 1), ECDSA (9/10/11) and RFC 7427 Digital
Signature (14, any key type), with the peer's chain validated against our trust anchors first."""

from __future__ import annotations

from collections.abc import Collection

from cryptography import x509

from ..crypto import signature
from ..exceptions import RemoteProtocolError
from ..pki import CertFailure, CertificateError, Credential, TrustStore, validate_chain
from ..wire import AuthMethod, Cert, CertEncoding, NotifyType, Payload
from .base import Authenticator, Peer, PeerProof, Verified, Verifier

__all__ = ["SIGNATURE_METHODS", "PubkeyAuthenticator", "PubkeyVerifier"]

SIGNATURE_METHODS = frozenset(
    int(m)
    for m in (
        AuthMethod.RSA_SIG, AuthMethod.ECDSA_SHA256_P256, AuthMethod.ECDSA_SHA384_P384,
        AuthMethod.ECDSA_SHA512_P521, AuthMethod.DIGITAL_SIGNATURE,
    )
)  # fmt: skip


class PubkeyAuthenticator(Authenticator):
    """We sign with `credential`'s key: Digital Signature (14) with a hash from the peer's
    SIGNATURE_HASH_ALGORITHMS when it sent that notify (RFC 7427 4), the key's classic method otherwise."""

    __slots__ = ("_credential", "_peer_hashes", "_send_certs", "_rsa_pss", "method")

    def __init__(
        self, credential: Credential, *, peer_hashes: Collection[int], send_certs: bool, rsa_pss: bool
    ) -> None:
        self._credential = credential
        self._peer_hashes = tuple(peer_hashes)
        self._send_certs = send_certs
        self._rsa_pss = rsa_pss
        self.method = signature.method_for_key(credential.key, bool(self._peer_hashes))

    @property
    def certificate(self) -> x509.Certificate:
        return self._credential.certificate

    def cert_payloads(self) -> list[Payload]:
        if not self._send_certs:
            return []
        return [Cert(CertEncoding.X509_SIGNATURE, der) for der in self._credential.cert_payloads()]

    def sign(self, prf_id: int, octets: bytes, peer: Peer) -> bytes:
        return signature.sign(
            self.method, self._credential.key, octets, hashes_peer_accepts=self._peer_hashes, rsa_pss=self._rsa_pss
        )


class PubkeyVerifier(Verifier):
    """The peer's first X.509 CERT payload is its end-entity certificate, the others candidates for
    the path to one of `trust`'s anchors (RFC 7296 3.6); the chain is checked at `wall_time`, bound to
    the peer's ID, and only then is the signature checked with its key."""

    __slots__ = ("_trust", "_wall_time", "_accepted_hashes")

    def __init__(self, trust: TrustStore, *, wall_time: float, accepted_hashes: Collection[int]) -> None:
        self._trust = trust
        self._wall_time = wall_time
        self._accepted_hashes = tuple(accepted_hashes)

    def verify(self, prf_id: int, octets: bytes, proof: PeerProof) -> Verified:
        # other encodings (hash and URL, raw keys, ...) are not fetched or used; RFC 7296 3.6 lets us skip them
        ders = [bytes(c.data) for c in proof.certificates if c.encoding == CertEncoding.X509_SIGNATURE]
        if not ders:
            raise CertificateError(CertFailure.NO_CERTIFICATE, "the peer sent no X.509 certificate")
        identity = (int(proof.id_payload.id_type), bytes(proof.id_payload.data))
        chain = validate_chain(self._trust, ders[0], ders[1:], now=self._wall_time, identity=identity)
        method = int(proof.auth.method)
        if not signature.verify(
            method, chain.public_key, octets, bytes(proof.auth.data), accepted_hashes=self._accepted_hashes
        ):
            key = signature.key_description(chain.public_key)
            raise RemoteProtocolError(
                f"AUTH method {method} signature does not verify with the certificate's {key}",
                notify=NotifyType.AUTHENTICATION_FAILED,
            )
        return Verified(chain.end_entity)
