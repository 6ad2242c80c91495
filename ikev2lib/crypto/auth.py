"""Shared-key AUTH payload data (RFC 7296 section 2.15).

    InitiatorSignedOctets = RealMessage1 | NonceRData | MACedIDForI
    MACedIDForI = prf(SK_pi, RestOfInitIDPayload)
    AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)

(and symmetrically for the responder with SK_pr, NonceIData and IDr). RestOfIDPayload is the ID
payload body without its generic header: ID type, 3 reserved octets, identification data.
The same construction with the EAP MSK as shared secret authenticates EAP (2.16).
"""

from __future__ import annotations

import hmac as _stdlib_hmac

from ..exceptions import LocalProtocolError
from .prf import prf_for

__all__ = ["KEY_PAD", "signed_octets", "psk_auth_data", "verify_psk_auth"]

KEY_PAD = b"Key Pad for IKEv2"  # 17 ASCII octets, no terminator (RFC 7296 2.15)


def signed_octets(
    prf_id: int, sk_p: bytes, message_bytes: bytes, peer_nonce: bytes, id_payload_body: bytes
) -> bytes:
    """The octets an AUTH payload covers: our own first message as sent (IKE_SA_INIT request
    for the initiator, response for the responder), the PEER's nonce data, and
    prf(SK_pi or SK_pr, ID payload body)."""
    return bytes(message_bytes) + bytes(peer_nonce) + prf_for(prf_id).compute(sk_p, id_payload_body)


def psk_auth_data(prf_id: int, psk: bytes, signed_octets: bytes) -> bytes:
    """AUTH payload data for authentication method 2 (Shared Key Message Integrity Code)."""
    if not psk:
        raise LocalProtocolError("the pre-shared key must not be empty")
    prf = prf_for(prf_id)
    return prf.compute(prf.compute(psk, KEY_PAD), signed_octets)


def verify_psk_auth(prf_id: int, psk: bytes, signed_octets: bytes, auth_data: bytes) -> bool:
    """True if the peer's AUTH data matches; compared in constant time."""
    expected = psk_auth_data(prf_id, psk, signed_octets)
    return _stdlib_hmac.compare_digest(expected, bytes(auth_data))
