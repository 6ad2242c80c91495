"""IKEv2 key derivation (RFC 7296 sections 2.14, 2.17, 2.18) and transform key lengths.

Key material layout, all from prf+ in this order:

* IKE SA (2.14): ``SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr`` from
  ``prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)``.
* Child SA (2.17): ``KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr)``; keys are taken as
  initiator->responder encryption key, then its integrity key, then responder->initiator
  encryption key, then its integrity key (`split_child_keymat`). For AEAD/CTR/GMAC the
  "encryption key" includes the 4-octet salt/nonce at its end (RFC 4106 8.1, RFC 3686 5.1,
  RFC 4543 3.2, RFC 7634 4), and there is no integrity key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..exceptions import LocalProtocolError
from ..wire.enums import EncrId, IntegId
from .prf import Prf, prf_for

__all__ = [
    "IkeKeys",
    "ChildKeys",
    "derive_ike_keys",
    "derive_rekeyed_ike_keys",
    "derive_child_keymat",
    "child_key_lengths",
    "ike_key_lengths",
    "integ_key_length",
    "encr_key_length",
    "split_child_keymat",
]

IKE_SPI_SIZE = 8  # RFC 7296 3.1: IKE SPIs are 8 octets
_AES_KEY_BITS = (128, 192, 256)
_SALT = 4  # GCM/GMAC salt (RFC 4106/4543), CTR nonce (RFC 3686), ChaCha20 salt (RFC 7634)

# Integrity transform -> key length in octets (RFC 7296 3.3.5: key = the HMAC output size).
_INTEG_KEY_LEN: dict[int, int] = {
    IntegId.NONE: 0,
    IntegId.HMAC_SHA1_96: 20,  # RFC 2404
    IntegId.AES_XCBC_96: 16,  # RFC 3566
    IntegId.AES_CMAC_96: 16,  # RFC 4494
    IntegId.HMAC_SHA2_256_128: 32,  # RFC 4868 2.1.1
    IntegId.HMAC_SHA2_384_192: 48,
    IntegId.HMAC_SHA2_512_256: 64,
}
# Encryption transforms that provide their own integrity (no integrity key).
# Algorithm combinations whose key lengths are remembered: the functions below are pure functions of
# negotiated ids, asked for at every key derivation and SK cipher set-up (errors are not cached).
KEY_LENGTH_CACHE = 64
_COMBINED = frozenset(
    {
        EncrId.AES_GCM_8,
        EncrId.AES_GCM_12,
        EncrId.AES_GCM_16,
        EncrId.NULL_AUTH_AES_GMAC,
        EncrId.CHACHA20_POLY1305,
    }
)


@functools.lru_cache(maxsize=KEY_LENGTH_CACHE)
def encr_key_length(encr_id: int, key_bits: int | None) -> int:
    """Octets of keying material for an encryption transform, salt/nonce included."""
    encr_id = int(encr_id)
    if encr_id == EncrId.NULL:
        return 0
    if encr_id == EncrId.CHACHA20_POLY1305:
        # Fixed 256-bit key; a Key Length attribute must not be sent (RFC 7634 section 2).
        if key_bits not in (None, 256):
            raise LocalProtocolError("ChaCha20-Poly1305 has a fixed 256-bit key")
        return 32 + _SALT
    if encr_id in (
        EncrId.AES_CBC,
        EncrId.AES_CTR,
        EncrId.AES_GCM_8,
        EncrId.AES_GCM_12,
        EncrId.AES_GCM_16,
        EncrId.NULL_AUTH_AES_GMAC,
    ):
        if key_bits not in _AES_KEY_BITS:
            raise LocalProtocolError(f"AES transform {encr_id} needs key length 128/192/256, not {key_bits}")
        salt = 0 if encr_id == EncrId.AES_CBC else _SALT
        return key_bits // 8 + salt
    raise LocalProtocolError(f"unsupported encryption transform {encr_id}")


def integ_key_length(integ_id: int | None) -> int:
    """Octets of integrity key for an integrity transform (0 for none)."""
    if integ_id is None:
        return 0
    try:
        return _INTEG_KEY_LEN[int(integ_id)]
    except KeyError:
        raise LocalProtocolError(f"unsupported integrity transform {integ_id}") from None


@functools.lru_cache(maxsize=KEY_LENGTH_CACHE)
def child_key_lengths(encr_id: int, key_bits: int | None, integ_id: int | None) -> tuple[int, int]:
    """(encryption key length incl. salt, integrity key length) for one direction of a Child SA."""
    enc = encr_key_length(encr_id, key_bits)
    integ = integ_key_length(integ_id)
    if int(encr_id) in _COMBINED and integ:
        raise LocalProtocolError("a combined-mode cipher must not have an integrity transform")
    if int(encr_id) not in _COMBINED and not integ:
        # RFC 7296 3.3.3 / RFC 8221: a non-AEAD cipher (and ESP NULL) needs integrity protection.
        raise LocalProtocolError(f"encryption transform {encr_id} needs an integrity transform")
    return enc, integ


def ike_key_lengths(encr_id: int, key_bits: int | None, integ_id: int | None) -> tuple[int, int]:
    """(SK_e length incl. salt, SK_a length) for the IKE SA; only IKE-capable ciphers."""
    if int(encr_id) in (EncrId.NULL, EncrId.AES_CTR, EncrId.NULL_AUTH_AES_GMAC):
        raise LocalProtocolError(f"encryption transform {encr_id} is not allowed for IKE")
    return child_key_lengths(encr_id, key_bits, integ_id)


def _secret_repr(name: str, fields: dict[str, bytes]) -> str:
    # Never print key material: lengths only.
    inner = ", ".join(f"{k}=<{len(v)} bytes>" for k, v in fields.items())
    return f"{name}({inner})"


@dataclass(frozen=True, repr=False)
class IkeKeys:
    """The seven IKE SA keys (RFC 7296 2.14). SK_e* include the salt for AEAD ciphers."""

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:
        return _secret_repr("IkeKeys", dict(vars(self)))


@dataclass(frozen=True, repr=False)
class ChildKeys:
    """One Child SA's keys split from KEYMAT (RFC 7296 2.17): `*_i` protect initiator->responder
    traffic, `*_r` responder->initiator. `encr_*` include the salt/nonce where the cipher has one."""

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes

    def __repr__(self) -> str:
        return _secret_repr("ChildKeys", dict(vars(self)))


def _check_spis(spi_i: bytes, spi_r: bytes) -> None:
    if len(spi_i) != IKE_SPI_SIZE or len(spi_r) != IKE_SPI_SIZE:
        raise LocalProtocolError("IKE SPIs must be 8 octets each")


def _split_ike_keys(
    prf: Prf,
    skeyseed: bytes,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeKeys:
    enc_len, integ_len = ike_key_lengths(encr_id, encr_key_bits, integ_id)
    # SK_d, SK_pi and SK_pr are PRF keys: their length is the PRF's preferred key size (2.13/2.14).
    prf_len = prf.key_size
    sizes = (prf_len, integ_len, integ_len, enc_len, enc_len, prf_len, prf_len)
    stream = prf.plus(skeyseed, ni + nr + spi_i + spi_r, sum(sizes))
    parts = []
    pos = 0
    for size in sizes:
        parts.append(stream[pos : pos + size])
        pos += size
    return IkeKeys(*parts)


def derive_ike_keys(
    prf_id: int,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    shared_secret: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> tuple[bytes, IkeKeys]:
    """IKE_SA_INIT keys: SKEYSEED = prf(Ni | Nr, g^ir), then the seven SK_* (RFC 7296 2.14)."""
    _check_spis(spi_i, spi_r)
    prf = prf_for(prf_id)
    if prf.is_fixed_key_size:
        # AES-XCBC/CMAC PRFs take a 128-bit key: the first 64 bits of each nonce (2.14).
        seed_key = ni[:8] + nr[:8]
    else:
        seed_key = ni + nr
    skeyseed = prf.compute(seed_key, shared_secret)
    keys = _split_ike_keys(prf, skeyseed, encr_id, encr_key_bits, integ_id, ni, nr, spi_i, spi_r)
    return skeyseed, keys


def derive_rekeyed_ike_keys(
    prf_id: int,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    old_sk_d: bytes,
    shared_secret: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
    *,
    old_prf_id: int | None = None,
    additional_secrets: bytes = b"",
) -> tuple[bytes, IkeKeys]:
    """Keys of a new IKE SA from a CREATE_CHILD_SA rekey (RFC 7296 2.18):
    SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), computed with the OLD SA's PRF
    (`old_prf_id`, default: same as `prf_id`); the SK_* come from the NEW SA's PRF, nonces of
    the rekey exchange and the new SPIs.

    The same formula updates the keys after each RFC 9370 additional key exchange (section
    2.2.2: SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr) with the IKE_SA_INIT nonces and SPIs).
    A rekey with additional key exchanges passes their secrets SK(1) | ... | SK(n) as
    `additional_secrets`; they follow the nonces (RFC 9370 2.2.4)."""
    _check_spis(spi_i, spi_r)
    old_prf = prf_for(prf_id if old_prf_id is None else old_prf_id)
    skeyseed = old_prf.compute(old_sk_d, shared_secret + ni + nr + additional_secrets)
    keys = _split_ike_keys(prf_for(prf_id), skeyseed, encr_id, encr_key_bits, integ_id, ni, nr, spi_i, spi_r)
    return skeyseed, keys


def derive_child_keymat(
    prf_id: int,
    sk_d: bytes,
    ni: bytes,
    nr: bytes,
    length: int,
    shared_secret: bytes | None = None,
    additional_secrets: bytes = b"",
) -> bytes:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 2.17). Pass `shared_secret` when the
    CREATE_CHILD_SA exchange carried KE payloads (PFS); with RFC 9370 additional key exchanges pass
    their secrets SK(1) | ... | SK(n) as `additional_secrets`: they follow the nonces (RFC 9370 2.2.4).
    Use `split_child_keymat` to cut the result."""
    seed = ni + nr if shared_secret is None else shared_secret + ni + nr
    seed += additional_secrets
    return prf_for(prf_id).plus(sk_d, seed, length)


def split_child_keymat(keymat: bytes, encr_len: int, integ_len: int) -> ChildKeys:
    """Cut KEYMAT in the RFC 7296 2.17 order: encr(i->r), integ(i->r), encr(r->i), integ(r->i)."""
    if encr_len < 0 or integ_len < 0 or len(keymat) != 2 * (encr_len + integ_len):
        raise LocalProtocolError("KEYMAT length does not match the key lengths")
    a = encr_len
    b = a + integ_len
    c = b + encr_len
    return ChildKeys(keymat[:a], keymat[a:b], keymat[b:c], keymat[c:])
