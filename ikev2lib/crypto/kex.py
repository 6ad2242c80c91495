"""Ephemeral key exchange for IKEv2 KE payloads (RFC 7296 2.14, 3.4; RFC 3526; RFC 5903; RFC 8031).

`KeyExchange.generate(group)` makes a fresh private key; `.public_bytes()` is the KE payload data
and `.shared_secret(peer)` is g^ir in the fixed-length form that SKEYSEED/KEYMAT use. Peer values
are validated; a bad one raises `RemoteProtocolError` (INVALID_SYNTAX, RFC 7296 3.4: "the KE data
... of the wrong length" and RFC 6989 for the value checks).

ML-KEM (groups 36/37, draft-ietf-ipsecme-ikev2-mlkem) is a key encapsulation, not a symmetric
exchange: the initiator sends `generate(group).public_bytes()` (the encapsulation key) and calls
`shared_secret(ciphertext)`; the responder calls `KeyExchange.respond(group, encapsulation_key)`,
which returns the object whose `public_bytes()` is the ciphertext, and the secret. `respond` works
for every group, so a responder can use it throughout.
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dh, ec, mlkem, x448, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import CryptographyDeprecationWarning

from ..exceptions import LocalProtocolError, RemoteProtocolError
from .groups import GROUPS, KEM_GROUPS, SUPPORTED_GROUPS, GroupInfo, public_length, response_length

__all__ = ["KeyExchange", "SUPPORTED_GROUPS", "KEM_GROUPS", "public_length", "response_length"]

_INVALID_SYNTAX = 7  # RFC 7296 3.10.1
_MODP_GENERATOR = 2  # RFC 3526: every MODP group uses g = 2

_KEM_KEYS: dict[str, type[mlkem.MLKEM768PrivateKey] | type[mlkem.MLKEM1024PrivateKey]] = {
    "mlkem768": mlkem.MLKEM768PrivateKey,
    "mlkem1024": mlkem.MLKEM1024PrivateKey,
}
_KEM_PUBLIC: dict[str, type[mlkem.MLKEM768PublicKey] | type[mlkem.MLKEM1024PublicKey]] = {
    "mlkem768": mlkem.MLKEM768PublicKey,
    "mlkem1024": mlkem.MLKEM1024PublicKey,
}

_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "secp256r1": ec.SECP256R1(),
    "secp384r1": ec.SECP384R1(),
    "secp521r1": ec.SECP521R1(),
}


# One cached parameter set per RFC 3526 group; keyed by the GROUPS primes only, never by peer data.
MODP_PARAMETER_CACHE = sum(1 for info in GROUPS.values() if info.kind == "modp")


@lru_cache(maxsize=MODP_PARAMETER_CACHE)
def _dh_parameters(prime: int) -> dh.DHParameters:
    # Built once per group from the RFC 3526 prime: no parameter generation at run time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return dh.DHParameterNumbers(prime, _MODP_GENERATOR).parameters()


def _info(group: int) -> GroupInfo:
    info = GROUPS.get(int(group))
    if info is None:
        raise LocalProtocolError(f"unsupported key exchange group {group}")
    return info


def _bad_peer(info: GroupInfo, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"invalid KE data for group {info.group}: {why}", notify=_INVALID_SYNTAX)


class KeyExchange:
    """One ephemeral key pair of a negotiated group. Use `generate`; the private key never leaves."""

    __slots__ = ("group", "_info", "_private", "_public")

    def __init__(self, info: GroupInfo, private: object, public: bytes) -> None:
        # Internal: built by `generate` / `from_private_bytes`.
        self.group: int = info.group
        self._info = info
        self._private = private
        self._public = public

    # construction ---------------------------------------------------------------------------
    @classmethod
    def generate(cls, group: int) -> KeyExchange:
        """A fresh key pair for `group` (unsupported group -> LocalProtocolError)."""
        info = _info(group)
        if info.kind == "modp":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                return cls._from_dh(info, _dh_parameters(info.prime).generate_private_key())
        if info.kind == "ecp":
            return cls._from_ec(info, ec.generate_private_key(_EC_CURVES[info.curve]))
        if info.kind == "kem":
            return cls._from_kem(info, _KEM_KEYS[info.curve].generate())
        if info.curve == "x25519":
            return cls._from_x(info, x25519.X25519PrivateKey.generate())
        return cls._from_x(info, x448.X448PrivateKey.generate())

    @classmethod
    def respond(cls, group: int, peer: bytes) -> tuple[KeyExchange, bytes]:
        """Responder side for any group: (object whose `public_bytes()` goes in our KE payload,
        shared secret). For ML-KEM this encapsulates to the initiator's key; for the others it is
        `generate(group)` followed by `shared_secret(peer)`."""
        info = _info(group)
        if info.kind != "kem":
            kex = cls.generate(group)
            return kex, kex.shared_secret(peer)
        peer = bytes(peer)
        if len(peer) != info.public_length:
            raise _bad_peer(info, f"length {len(peer)}, expected {info.public_length}")
        try:
            # from_public_bytes runs the FIPS 203 encapsulation key (modulus) check.
            secret, ciphertext = _KEM_PUBLIC[info.curve].from_public_bytes(peer).encapsulate()
        except ValueError as exc:
            raise _bad_peer(info, str(exc) or "invalid encapsulation key") from None
        return cls(info, None, ciphertext), secret

    @classmethod
    def from_private_bytes(cls, group: int, private: bytes) -> KeyExchange:
        """A key pair from a known private value (test vectors, reproducible runs): the big-endian
        exponent for MODP, the big-endian scalar for ECP, the RFC 7748 scalar for X25519/X448."""
        info = _info(group)
        try:
            if info.kind == "modp":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                    x = int.from_bytes(private, "big")
                    numbers = _dh_parameters(info.prime).parameter_numbers()
                    y = pow(_MODP_GENERATOR, x, info.prime)
                    key = dh.DHPrivateNumbers(x, dh.DHPublicNumbers(y, numbers)).private_key()
                return cls._from_dh(info, key)
            if info.kind == "ecp":
                scalar = int.from_bytes(private, "big")
                return cls._from_ec(info, ec.derive_private_key(scalar, _EC_CURVES[info.curve]))
            if info.kind == "kem":
                # FIPS 203 64-octet seed d || z.
                return cls._from_kem(info, _KEM_KEYS[info.curve].from_seed_bytes(private))
            if info.curve == "x25519":
                return cls._from_x(info, x25519.X25519PrivateKey.from_private_bytes(private))
            return cls._from_x(info, x448.X448PrivateKey.from_private_bytes(private))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise LocalProtocolError(f"invalid private value for group {group}: {exc}") from None

    @classmethod
    def _from_dh(cls, info: GroupInfo, key: dh.DHPrivateKey) -> KeyExchange:
        y = key.public_key().public_numbers().y
        return cls(info, key, y.to_bytes(info.public_length, "big"))

    @classmethod
    def _from_ec(cls, info: GroupInfo, key: ec.EllipticCurvePrivateKey) -> KeyExchange:
        point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return cls(info, key, point[1:])  # RFC 5903 section 7: x || y, no 0x04 prefix

    @classmethod
    def _from_kem(
        cls, info: GroupInfo, key: mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey
    ) -> KeyExchange:
        return cls(info, key, key.public_key().public_bytes_raw())

    @classmethod
    def _from_x(
        cls, info: GroupInfo, key: x25519.X25519PrivateKey | x448.X448PrivateKey
    ) -> KeyExchange:
        return cls(info, key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    # use ------------------------------------------------------------------------------------
    def public_bytes(self) -> bytes:
        """The KE payload data (fixed length, `public_length(group)`)."""
        return self._public

    def shared_secret(self, peer: bytes) -> bytes:
        """g^ir from the peer's KE data, fixed-length (RFC 7296 2.14: leading zeros kept).
        For ML-KEM (initiator only) `peer` is the responder's ciphertext."""
        info = self._info
        peer = bytes(peer)
        private = self._private
        if info.kind == "kem" and private is None:
            raise LocalProtocolError("the ML-KEM responder got its secret from respond()")
        expected = info.responder_length if info.kind == "kem" else info.public_length
        if len(peer) != expected:
            raise _bad_peer(info, f"length {len(peer)}, expected {expected}")
        if info.kind == "kem":
            kem_key = cast("mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey", private)
            # Decapsulation cannot fail: a bad ciphertext yields an unrelated secret (FIPS 203
            # implicit rejection) and the AUTH exchange then fails.
            return kem_key.decapsulate(peer)
        try:
            if info.kind == "modp":
                secret = self._modp_secret(cast("dh.DHPrivateKey", private), peer)
            elif info.kind == "ecp":
                ec_key = cast(ec.EllipticCurvePrivateKey, private)
                # from_encoded_point checks that the point is on the curve (RFC 6989 2.3).
                pub = ec.EllipticCurvePublicKey.from_encoded_point(ec_key.curve, b"\x04" + peer)
                secret = ec_key.exchange(ec.ECDH(), pub)
            elif info.curve == "x25519":
                x_key = cast(x25519.X25519PrivateKey, private)
                secret = x_key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
            else:
                x4_key = cast(x448.X448PrivateKey, private)
                secret = x4_key.exchange(x448.X448PublicKey.from_public_bytes(peer))
        except ValueError as exc:
            # cryptography refuses off-curve points and (RFC 7748 6 / RFC 8031 2.3) all-zero
            # X25519/X448 results from low-order points.
            raise _bad_peer(info, str(exc) or type(exc).__name__) from None
        if not any(secret):
            raise _bad_peer(info, "all-zero shared secret")
        return secret.rjust(info.secret_length, b"\x00")

    def _modp_secret(self, private: dh.DHPrivateKey, peer: bytes) -> bytes:
        info = self._info
        y = int.from_bytes(peer, "big")
        # RFC 6989 section 2.2: for the safe-prime MODP groups, 1 < y < p-1 is the whole check.
        if not 1 < y < info.prime - 1:
            raise _bad_peer(info, "public value out of range 1 < y < p-1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            numbers = _dh_parameters(info.prime).parameter_numbers()
            pub = dh.DHPublicNumbers(y, numbers).public_key()
            return private.exchange(pub)

    def __repr__(self) -> str:
        return f"KeyExchange(group={self.group})"
