"""Public-key AUTH data: the signature primitives of IKEv2 certificate authentication.

The signed octets are those of RFC 7296 section 2.15 (`auth.signed_octets`); this module only signs
and verifies them. Methods:

- 1, RSA Digital Signature (RFC 7296 3.8): RSASSA-PKCS1-v1_5 with SHA-1; AUTH data = the signature.
- 9/10/11, ECDSA (RFC 4754): SHA-256 on P-256, SHA-384 on P-384, SHA-512 on P-521; AUTH data = r | s,
  each a fixed-length big-endian integer of the curve's order size (not DER).
- 14, Digital Signature (RFC 7427 section 3): AUTH data = one octet ASN.1 length, the DER of the
  signature AlgorithmIdentifier, the signature value. Schemes are in `SIGNATURE_SCHEMES`; Ed25519 and
  Ed448 sign the octets themselves (RFC 8420, hash "Identity").

Verification takes peer data, so `verify` answers True or False and never raises on any input: the
caller turns False into an AUTHENTICATION_FAILED Notify (as with `verify_psk_auth`), and the peer is
not told which check failed. Signing is our side, so misuse raises `LocalProtocolError`. Errors name
key types and sizes, never key material.

Unlike strongSwan, which parses the peer's AlgorithmIdentifier with its generic ASN.1 parser
(`signature_params_parse` in pubkey_authenticator.c), we match its exact DER against a table of the
encodings we know: nothing of an unknown or oddly parameterised encoding is ever interpreted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from ..exceptions import LocalProtocolError, ParseError
from ..wire.enums import AuthMethod, HashAlgorithm, lookup

__all__ = [
    "MAX_SIGNATURE_HASHES",
    "MIN_RSA_BITS",
    "SIGNATURE_METHODS",
    "SIGNATURE_SCHEMES",
    "SignatureScheme",
    "decode_signature_hashes",
    "encode_signature_hashes",
    "key_description",
    "method_for_key",
    "sign",
    "split_signature_auth_data",
    "verify",
]

# RSA moduli below 2048 bits give less than 112-bit security, the floor NIST SP 800-131A sets for
# signatures; we neither sign with nor accept signatures from such keys.
MIN_RSA_BITS = 2048
# Hash IDs accepted in one SIGNATURE_HASH_ALGORITHMS notify. IANA has registered five (1-5); 64 leaves
# room for future ones while bounding what a peer's list makes us keep (RFC 7427 section 4).
MAX_SIGNATURE_HASHES = 64

SIGNATURE_METHODS: tuple[int, ...] = (
    AuthMethod.RSA_SIG,
    AuthMethod.ECDSA_SHA256_P256,
    AuthMethod.ECDSA_SHA384_P384,
    AuthMethod.ECDSA_SHA512_P521,
    AuthMethod.DIGITAL_SIGNATURE,
)

KeyKind = Literal["rsa", "rsa-pss", "ecdsa", "ed25519", "ed448"]

_DER_SHA256_RSA = bytes.fromhex("300d06092a864886f70d01010b0500")
"""sha256WithRSAEncryption 1.2.840.113549.1.1.11, NULL parameters (RFC 7427 A.1.2)."""
_DER_SHA384_RSA = bytes.fromhex("300d06092a864886f70d01010c0500")
"""sha384WithRSAEncryption 1.2.840.113549.1.1.12, NULL parameters (RFC 7427 A.1.3)."""
_DER_SHA512_RSA = bytes.fromhex("300d06092a864886f70d01010d0500")
"""sha512WithRSAEncryption 1.2.840.113549.1.1.13, NULL parameters (RFC 7427 A.1.4)."""
# The same three OIDs with the parameters absent: RFC 4055 section 5 has senders use NULL, but
# some send none, and both mean the same.
_DER_SHA256_RSA_NO_PARAMS = bytes.fromhex("300b06092a864886f70d01010b")
_DER_SHA384_RSA_NO_PARAMS = bytes.fromhex("300b06092a864886f70d01010c")
_DER_SHA512_RSA_NO_PARAMS = bytes.fromhex("300b06092a864886f70d01010d")

# RSASSA-PSS 1.2.840.113549.1.1.10 with explicit RSASSA-PSS-params (RFC 4055 section 3.1): hashAlgorithm
# id-sha256/384/512 (2.16.840.1.101.3.4.2.1/2/3), maskGenAlgorithm id-mgf1 (1.2.840.113549.1.1.8) over the
# same hash, saltLength = hash length, trailerField 1 (the DEFAULT, so omitted in DER). The hash
# AlgorithmIdentifiers carry NULL parameters, as RFC 7427 A.4.3 shows for SHA-256 and strongSwan and
# `cryptography` emit; SHA-384/512 follow the same pattern.
_DER_PSS_SHA256 = bytes.fromhex(
    "3041 06092a864886f70d01010a 3034"
    " a00f 300d 0609608648016503040201 0500"
    " a11c 301a 06092a864886f70d010108 300d 0609608648016503040201 0500"
    " a203 020120"
)
_DER_PSS_SHA384 = bytes.fromhex(
    "3041 06092a864886f70d01010a 3034"
    " a00f 300d 0609608648016503040202 0500"
    " a11c 301a 06092a864886f70d010108 300d 0609608648016503040202 0500"
    " a203 020130"
)
_DER_PSS_SHA512 = bytes.fromhex(
    "3041 06092a864886f70d01010a 3034"
    " a00f 300d 0609608648016503040203 0500"
    " a11c 301a 06092a864886f70d010108 300d 0609608648016503040203 0500"
    " a203 020140"
)
# The same with the hash parameters absent: RFC 4055 section 2.1 has implementations accept both.
_DER_PSS_SHA256_NO_HASH_PARAMS = bytes.fromhex(
    "303d 06092a864886f70d01010a 3030"
    " a00d 300b 0609608648016503040201"
    " a11a 3018 06092a864886f70d010108 300b 0609608648016503040201"
    " a203 020120"
)
_DER_PSS_SHA384_NO_HASH_PARAMS = bytes.fromhex(
    "303d 06092a864886f70d01010a 3030"
    " a00d 300b 0609608648016503040202"
    " a11a 3018 06092a864886f70d010108 300b 0609608648016503040202"
    " a203 020130"
)
_DER_PSS_SHA512_NO_HASH_PARAMS = bytes.fromhex(
    "303d 06092a864886f70d01010a 3030"
    " a00d 300b 0609608648016503040203"
    " a11a 3018 06092a864886f70d010108 300b 0609608648016503040203"
    " a203 020140"
)

_DER_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
"""ecdsa-with-SHA256 1.2.840.10045.4.3.2, parameters absent (RFC 7427 A.3.2; RFC 5758 section 3.2)."""
_DER_ECDSA_SHA384 = bytes.fromhex("300a06082a8648ce3d040303")
"""ecdsa-with-SHA384 1.2.840.10045.4.3.3, parameters absent (RFC 7427 A.3.3)."""
_DER_ECDSA_SHA512 = bytes.fromhex("300a06082a8648ce3d040304")
"""ecdsa-with-SHA512 1.2.840.10045.4.3.4, parameters absent (RFC 7427 A.3.4)."""

_DER_ED25519 = bytes.fromhex("300506032b6570")
"""id-Ed25519 1.3.101.112, parameters absent (RFC 8410 section 3; RFC 8420 section 2)."""
_DER_ED448 = bytes.fromhex("300506032b6571")
"""id-Ed448 1.3.101.113, parameters absent (RFC 8410 section 3; RFC 8420 section 2)."""


@dataclass(frozen=True, slots=True)
class SignatureScheme:
    """One RFC 7427 signature scheme. `accepted` holds every encoding of its AlgorithmIdentifier we
    take from a peer; the first is the one we send (`algorithm_identifier`)."""

    name: str
    key: KeyKind
    hash_id: HashAlgorithm
    accepted: tuple[bytes, ...]

    @property
    def algorithm_identifier(self) -> bytes:
        return self.accepted[0]


_H256, _H384, _H512, _IDENTITY = (
    HashAlgorithm.SHA2_256,
    HashAlgorithm.SHA2_384,
    HashAlgorithm.SHA2_512,
    HashAlgorithm.IDENTITY,
)
SIGNATURE_SCHEMES: tuple[SignatureScheme, ...] = (
    SignatureScheme("sha256WithRSAEncryption", "rsa", _H256, (_DER_SHA256_RSA, _DER_SHA256_RSA_NO_PARAMS)),
    SignatureScheme("sha384WithRSAEncryption", "rsa", _H384, (_DER_SHA384_RSA, _DER_SHA384_RSA_NO_PARAMS)),
    SignatureScheme("sha512WithRSAEncryption", "rsa", _H512, (_DER_SHA512_RSA, _DER_SHA512_RSA_NO_PARAMS)),
    SignatureScheme("RSASSA-PSS-SHA256", "rsa-pss", _H256, (_DER_PSS_SHA256, _DER_PSS_SHA256_NO_HASH_PARAMS)),
    SignatureScheme("RSASSA-PSS-SHA384", "rsa-pss", _H384, (_DER_PSS_SHA384, _DER_PSS_SHA384_NO_HASH_PARAMS)),
    SignatureScheme("RSASSA-PSS-SHA512", "rsa-pss", _H512, (_DER_PSS_SHA512, _DER_PSS_SHA512_NO_HASH_PARAMS)),
    SignatureScheme("ecdsa-with-SHA256", "ecdsa", _H256, (_DER_ECDSA_SHA256,)),
    SignatureScheme("ecdsa-with-SHA384", "ecdsa", _H384, (_DER_ECDSA_SHA384,)),
    SignatureScheme("ecdsa-with-SHA512", "ecdsa", _H512, (_DER_ECDSA_SHA512,)),
    SignatureScheme("Ed25519", "ed25519", _IDENTITY, (_DER_ED25519,)),
    SignatureScheme("Ed448", "ed448", _IDENTITY, (_DER_ED448,)),
)

_SCHEME_BY_DER: dict[bytes, SignatureScheme] = {der: s for s in SIGNATURE_SCHEMES for der in s.accepted}
_SCHEME_BY_KIND: dict[tuple[KeyKind, int], SignatureScheme] = {(s.key, s.hash_id): s for s in SIGNATURE_SCHEMES}
# Hashes in our order of preference for method 14 (SHA-256 first: every RFC 7427 peer has it).
_HASH_PREFERENCE: dict[KeyKind, tuple[HashAlgorithm, ...]] = {
    "rsa": (_H256, _H384, _H512),
    "rsa-pss": (_H256, _H384, _H512),
    "ecdsa": (_H256, _H384, _H512),
    "ed25519": (_IDENTITY,),
    "ed448": (_IDENTITY,),
}
_HASHES: dict[int, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}
# The curves methods 9/10/11 name, with their hash and the octet size of r and s (RFC 4754 section 7).
_ECDSA_METHODS: dict[int, tuple[str, HashAlgorithm, int]] = {
    AuthMethod.ECDSA_SHA256_P256: ("secp256r1", HashAlgorithm.SHA2_256, 32),
    AuthMethod.ECDSA_SHA384_P384: ("secp384r1", HashAlgorithm.SHA2_384, 48),
    AuthMethod.ECDSA_SHA512_P521: ("secp521r1", HashAlgorithm.SHA2_512, 66),
}
_METHOD_FOR_CURVE = {curve: method for method, (curve, _, _) in _ECDSA_METHODS.items()}
_HASH_LOOKUP = lookup(HashAlgorithm)

_AnyKey = PrivateKeyTypes | PublicKeyTypes
_PUBLIC_KEYS = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)


def _key_kind(key: _AnyKey) -> KeyKind | None:
    """What kind of signer `key` is, or None for a key this module does not sign or verify with
    (DSA, X25519, RSA below MIN_RSA_BITS, curves other than P-256/384/521)."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa" if key.key_size >= MIN_RSA_BITS else None
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return "ecdsa" if key.curve.name in _METHOD_FOR_CURVE else None
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "ed448"
    return None


def key_description(key: object) -> str:
    """A short name for a key's type and size, for messages (never any key material)."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"RSA-{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"ECDSA-{key.curve.name}"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "Ed25519"
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return "Ed448"
    return type(key).__name__


def _usable_key(key: PrivateKeyTypes) -> KeyKind:
    kind = None if isinstance(key, _PUBLIC_KEYS) else _key_kind(key)
    if kind is None:
        raise LocalProtocolError(
            f"cannot sign AUTH data with {key_description(key)} (needs a private key: RSA of at least {MIN_RSA_BITS} "
            "bits, ECDSA on P-256/P-384/P-521, Ed25519 or Ed448)"
        )
    return kind


def method_for_key(private_key: PrivateKeyTypes, peer_supports_rfc7427: bool) -> int:
    """The AUTH method to sign with: Digital Signature (14) when the peer sent SIGNATURE_HASH_ALGORITHMS,
    otherwise the classic method for the key (RSA -> 1, P-256/384/521 -> 9/10/11). Ed25519 and Ed448 have
    no classic method (RFC 8420), so without RFC 7427 support they raise LocalProtocolError."""
    _usable_key(private_key)
    if peer_supports_rfc7427:
        return AuthMethod.DIGITAL_SIGNATURE
    if isinstance(private_key, rsa.RSAPrivateKey):
        return AuthMethod.RSA_SIG
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return _METHOD_FOR_CURVE[private_key.curve.name]
    raise LocalProtocolError(
        f"{key_description(private_key)} needs RFC 7427 Digital Signature authentication (14), "
        "which the peer does not support"
    )


def _choose_scheme(kind: KeyKind, key: PrivateKeyTypes, hashes_peer_accepts: Collection[int]) -> SignatureScheme:
    accepted = {int(h) for h in hashes_peer_accepts}
    for hash_id in _HASH_PREFERENCE[kind]:
        if hash_id in accepted:
            return _SCHEME_BY_KIND[kind, hash_id]
    wanted = ", ".join(h.name for h in _HASH_PREFERENCE[kind])
    sent = ", ".join(str(h) for h in sorted(accepted)) or "none"
    raise LocalProtocolError(
        f"the peer's SIGNATURE_HASH_ALGORITHMS ({sent}) has no hash usable with {key_description(key)} "
        f"(needs one of {wanted})"
    )


def sign(
    method: int,
    private_key: PrivateKeyTypes,
    octets: bytes,
    *,
    hashes_peer_accepts: Collection[int] = (),
    rsa_pss: bool = False,
) -> bytes:
    """AUTH payload data for `method` over the signed octets.

    For Digital Signature (14) the scheme follows from the key and `hashes_peer_accepts` (the hash IDs
    of the peer's SIGNATURE_HASH_ALGORITHMS; SHA-256 preferred, Ed25519/Ed448 need Identity); RSA keys
    use PKCS#1 v1.5 unless `rsa_pss`. The other methods ignore both. Raises LocalProtocolError when
    the key does not fit the method or the peer accepts no usable hash."""
    kind = _usable_key(private_key)
    octets = bytes(octets)
    if method == AuthMethod.DIGITAL_SIGNATURE:
        if kind == "rsa" and rsa_pss:
            kind = "rsa-pss"
        scheme = _choose_scheme(kind, private_key, hashes_peer_accepts)
        der = scheme.algorithm_identifier
        return bytes([len(der)]) + der + _sign_scheme(scheme, private_key, octets)
    if method == AuthMethod.RSA_SIG:
        if not isinstance(private_key, rsa.RSAPrivateKey):
            raise LocalProtocolError(f"RSA Digital Signature (1) cannot be made with {key_description(private_key)}")
        # RFC 7296 3.8: RSASSA-PKCS1-v1_5; SHA-1 is the only hash method 1 has (RFC 7427 section 1)
        return private_key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
    if method in _ECDSA_METHODS:
        curve, hash_id, size = _ECDSA_METHODS[method]
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != curve:
            raise LocalProtocolError(
                f"ECDSA method {int(method)} needs a key on {curve}, not {key_description(private_key)}"
            )
        r, s = decode_dss_signature(private_key.sign(octets, ec.ECDSA(_HASHES[hash_id]())))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise LocalProtocolError(f"authentication method {int(method)} is not a signature method this library signs with")


def _sign_scheme(scheme: SignatureScheme, key: PrivateKeyTypes, octets: bytes) -> bytes:
    """The signature value of a method 14 AUTH payload (RFC 7427 section 3)."""
    if scheme.key in ("rsa", "rsa-pss") and isinstance(key, rsa.RSAPrivateKey):
        return key.sign(octets, _rsa_padding(scheme), _HASHES[scheme.hash_id]())
    if scheme.key == "ecdsa" and isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(octets, ec.ECDSA(_HASHES[scheme.hash_id]()))  # DER ECDSA-Sig-Value (RFC 7427 3)
    if scheme.key == "ed25519" and isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(octets)
    if scheme.key == "ed448" and isinstance(key, ed448.Ed448PrivateKey):
        return key.sign(octets)
    raise LocalProtocolError(f"scheme {scheme.name} cannot be used with {key_description(key)}")


def _rsa_padding(scheme: SignatureScheme) -> padding.AsymmetricPadding:
    if scheme.key == "rsa-pss":
        hash_cls = _HASHES[scheme.hash_id]
        # must equal the parameters the AlgorithmIdentifier names: MGF1 with the same hash, salt = hash length
        return padding.PSS(mgf=padding.MGF1(hash_cls()), salt_length=hash_cls.digest_size)
    return padding.PKCS1v15()


def split_signature_auth_data(auth_data: bytes) -> tuple[SignatureScheme, bytes] | None:
    """The scheme and signature value of method 14 AUTH data, or None if the length octet does not
    fit the data or the AlgorithmIdentifier is not exactly one of the known encodings."""
    data = bytes(auth_data)
    if not data:
        return None
    end = 1 + data[0]
    if end > len(data):
        return None
    scheme = _SCHEME_BY_DER.get(data[1:end])
    if scheme is None:
        return None
    return scheme, data[end:]


def verify(
    method: int,
    public_key: PublicKeyTypes,
    octets: bytes,
    auth_data: bytes,
    *,
    accepted_hashes: Collection[int] | None = None,
) -> bool:
    """True if `auth_data` is a valid AUTH signature of `method` by `public_key` over the octets.

    Every input is the peer's (method, AUTH data, the key from its certificate), so anything wrong,
    including a key type that does not fit the method or an RSA key under MIN_RSA_BITS, is False and
    nothing raises. `accepted_hashes`, if given (the hash IDs we announced), also limits method 14."""
    kind = _key_kind(public_key)
    if kind is None:
        return False
    octets = bytes(octets)
    data = bytes(auth_data)
    if method == AuthMethod.DIGITAL_SIGNATURE:
        split = split_signature_auth_data(data)
        if split is None:
            return False
        scheme, signature = split
        if accepted_hashes is not None and scheme.hash_id not in {int(h) for h in accepted_hashes}:
            return False
        return _verify_scheme(scheme, public_key, octets, signature)
    if method == AuthMethod.RSA_SIG:
        if not isinstance(public_key, rsa.RSAPublicKey):
            return False
        return _checked(lambda: public_key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1()))
    if method in _ECDSA_METHODS:
        curve, hash_id, size = _ECDSA_METHODS[method]
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != curve:
            return False
        if len(data) != 2 * size:
            return False
        r = int.from_bytes(data[:size], "big")
        s = int.from_bytes(data[size:], "big")
        der = encode_dss_signature(r, s)
        return _checked(lambda: public_key.verify(der, octets, ec.ECDSA(_HASHES[hash_id]())))
    return False


def _verify_scheme(scheme: SignatureScheme, key: PublicKeyTypes, octets: bytes, signature: bytes) -> bool:
    if scheme.key in ("rsa", "rsa-pss"):
        if not isinstance(key, rsa.RSAPublicKey):
            return False
        hash_cls = _HASHES[scheme.hash_id]
        return _checked(lambda: key.verify(signature, octets, _rsa_padding(scheme), hash_cls()))
    if scheme.key == "ecdsa":
        if not isinstance(key, ec.EllipticCurvePublicKey):
            return False
        try:
            r, s = decode_dss_signature(signature)  # strict DER: no trailing data, minimal INTEGERs
        except ValueError:
            return False
        if r <= 0 or s <= 0:
            return False
        hash_cls = _HASHES[scheme.hash_id]
        return _checked(lambda: key.verify(signature, octets, ec.ECDSA(hash_cls())))
    if scheme.key == "ed25519":
        if not isinstance(key, ed25519.Ed25519PublicKey):
            return False
        return _checked(lambda: key.verify(signature, octets))
    if scheme.key == "ed448":
        if not isinstance(key, ed448.Ed448PublicKey):
            return False
        return _checked(lambda: key.verify(signature, octets))
    return False


def _checked(verification: Callable[[], None]) -> bool:
    """`cryptography` reports a bad signature by raising InvalidSignature; we answer False."""
    try:
        verification()
    except InvalidSignature:
        return False
    return True


def encode_signature_hashes(hash_ids: Iterable[int]) -> bytes:
    """SIGNATURE_HASH_ALGORITHMS notify data: each hash ID as two octets (RFC 7427 section 4)."""
    ids = [int(h) for h in hash_ids]
    if len(ids) > MAX_SIGNATURE_HASHES:
        raise LocalProtocolError(f"at most {MAX_SIGNATURE_HASHES} signature hash IDs, got {len(ids)}")
    for h in ids:
        if not 0 <= h <= 0xFFFF:
            raise LocalProtocolError(f"signature hash ID {h} does not fit two octets")
    return b"".join(h.to_bytes(2, "big") for h in ids)


def decode_signature_hashes(data: bytes) -> tuple[int, ...]:
    """The hash IDs of SIGNATURE_HASH_ALGORITHMS notify data, in the peer's order: known IDs as
    `HashAlgorithm` members, unknown ones kept as ints (callers ignore them). Raises ParseError (offset
    within the notify data) on an odd length or more than MAX_SIGNATURE_HASHES IDs."""
    data = bytes(data)
    if len(data) % 2:
        raise ParseError("SIGNATURE_HASH_ALGORITHMS data has an odd length", len(data) - 1)
    if len(data) // 2 > MAX_SIGNATURE_HASHES:
        limit = MAX_SIGNATURE_HASHES
        raise ParseError(f"SIGNATURE_HASH_ALGORITHMS lists more than {limit} hashes", 2 * limit)
    values = (int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    return tuple(_HASH_LOOKUP.get(v, v) for v in values)
