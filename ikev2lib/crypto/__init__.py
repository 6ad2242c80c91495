"""IKE-side cryptography on `cryptography` (hazmat): prf/prf+, SKEYSEED/SK_*/KEYMAT, key exchange
groups, SK payload protection, shared-key AUTH and public-key signature AUTH data (signature.py:
`signature.sign` / `signature.verify`). Transform IDs are IANA numbers (plain ints or
the `ikev2lib.wire` IntEnums). Keys are never logged: reprs show lengths only. `IKE_TRANSFORMS`
is what all of it can run, as one table (capabilities.py)."""

from __future__ import annotations

from .auth import KEY_PAD, psk_auth_data, signed_octets, verify_psk_auth
from .capabilities import IKE_TRANSFORMS
from .groups import KEM_GROUPS, SUPPORTED_GROUPS, public_length, response_length
from .kex import KeyExchange
from .keys import (
    ChildKeys,
    IkeKeys,
    child_key_lengths,
    derive_child_keymat,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    encr_key_length,
    ike_key_lengths,
    integ_key_length,
    split_child_keymat,
)
from .prf import PRF_PLUS_MAX_ITERATIONS, SUPPORTED_PRFS, Prf
from .signature import (
    MAX_SIGNATURE_HASHES,
    MIN_RSA_BITS,
    SIGNATURE_METHODS,
    SIGNATURE_SCHEMES,
    SignatureScheme,
    decode_signature_hashes,
    encode_signature_hashes,
    method_for_key,
    split_signature_auth_data,
)
from .sk import AEAD_IV_LIMIT, MAX_SK_BODY, SKCipher, sk_cipher

__all__ = [
    "AEAD_IV_LIMIT",
    "ChildKeys",
    "IKE_TRANSFORMS",
    "IkeKeys",
    "KEM_GROUPS",
    "KEY_PAD",
    "KeyExchange",
    "MAX_SK_BODY",
    "PRF_PLUS_MAX_ITERATIONS",
    "Prf",
    "SKCipher",
    "SUPPORTED_GROUPS",
    "SUPPORTED_PRFS",
    "child_key_lengths",
    "derive_child_keymat",
    "derive_ike_keys",
    "derive_rekeyed_ike_keys",
    "encr_key_length",
    "ike_key_lengths",
    "integ_key_length",
    "psk_auth_data",
    "public_length",
    "response_length",
    "signed_octets",
    "sk_cipher",
    "split_child_keymat",
    "verify_psk_auth",
    # public-key AUTH (signature.py; sign/verify stay module-qualified: `signature.sign`)
    "MAX_SIGNATURE_HASHES",
    "MIN_RSA_BITS",
    "SIGNATURE_METHODS",
    "SIGNATURE_SCHEMES",
    "SignatureScheme",
    "decode_signature_hashes",
    "encode_signature_hashes",
    "method_for_key",
    "split_signature_auth_data",
]
