"""The key types certificate authentication runs, and the one rule for which keys are strong enough.

RSA (at least `MIN_RSA_BITS`), ECDSA on P-256/P-384/P-521 (RFC 7296 methods 9-11, RFC 7427), Ed25519
and Ed448 (RFC 8420). Our own keys (credentials.py) and the keys in a peer's certificates (trust.py)
pass the same `key_problem` check, so the two sides cannot drift apart.
"""

from __future__ import annotations

from typing import TypeAlias

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

# one RSA floor and one way to name a key, shared with the signatures that use these keys
from ..crypto.signature import MIN_RSA_BITS, key_description

__all__ = [
    "CURVES",
    "MIN_RSA_BITS",
    "PrivateKey",
    "PublicKey",
    "as_private_key",
    "as_public_key",
    "key_description",
    "key_problem",
]

# The curves with an IKEv2 ECDSA method (RFC 4754): anything else is unsupported rather than weak.
CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

PrivateKey: TypeAlias = (
    rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
)
PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


def key_problem(key: object) -> tuple[bool, str] | None:
    """None if `key` (private or public) may sign IKE AUTH payloads, else (weak, why): `weak` is True
    for a supported algorithm with too small a key, False for an unsupported algorithm."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < MIN_RSA_BITS:
            return True, f"RSA key of {key.key_size} bits is too small (at least {MIN_RSA_BITS} required)"
        return None
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if not isinstance(key.curve, CURVES):
            return False, f"elliptic curve {key.curve.name} is not supported (P-256, P-384 or P-521)"
        return None
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return None
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return None
    return False, f"{key_description(key)} keys are not supported (RSA, ECDSA, Ed25519 or Ed448)"


def as_private_key(key: object) -> PrivateKey | None:
    """`key` typed as one of the private key types here, or None (sizes are `key_problem`'s job)."""
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return key
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return key
    return None


def as_public_key(key: object) -> PublicKey | None:
    """`key` typed as one of the public key types here, or None."""
    if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        return key
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return key
    return None
