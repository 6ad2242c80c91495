"""IKEv2 pseudorandom functions and prf+ (RFC 7296 section 2.13).

HMAC-SHA2-256/384/512 (RFC 4868), HMAC-SHA1 (legacy), AES-CMAC-PRF-128 (RFC 4615) and
AES-XCBC-PRF-128 (RFC 4434). All primitives come from `cryptography`; only the XCBC mode, which
`cryptography` does not provide, is assembled here from AES block operations.
"""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from ..exceptions import LocalProtocolError
from ..wire.enums import PrfId

__all__ = ["Prf", "prf_for", "PRF_PLUS_MAX_ITERATIONS", "SUPPORTED_PRFS"]

# prf+ appends a one-octet counter, so it cannot produce more than 255 blocks (RFC 7296 2.13).
PRF_PLUS_MAX_ITERATIONS = 255

_AES_BLOCK = 16

_HMAC_HASHES: dict[int, hashes.HashAlgorithm] = {
    PrfId.HMAC_SHA1: hashes.SHA1(),
    PrfId.HMAC_SHA2_256: hashes.SHA256(),
    PrfId.HMAC_SHA2_384: hashes.SHA384(),
    PrfId.HMAC_SHA2_512: hashes.SHA512(),
}
_AES_PRFS = (PrfId.AES128_XCBC, PrfId.AES128_CMAC)

SUPPORTED_PRFS: tuple[int, ...] = tuple(sorted((*_HMAC_HASHES, *_AES_PRFS)))


def _aes_ecb_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _aes_xcbc_mac(key: bytes, data: bytes) -> bytes:
    """AES-XCBC-MAC (RFC 3566 section 4), full 128-bit output; `key` is exactly 16 bytes."""
    k1 = _aes_ecb_block(key, b"\x01" * _AES_BLOCK)
    k2 = _aes_ecb_block(key, b"\x02" * _AES_BLOCK)
    k3 = _aes_ecb_block(key, b"\x03" * _AES_BLOCK)
    if data and len(data) % _AES_BLOCK == 0:
        body, last, final_key = data[:-_AES_BLOCK], data[-_AES_BLOCK:], k2
    else:
        cut = len(data) - len(data) % _AES_BLOCK
        body, rest = data[:cut], data[cut:]
        last = rest + b"\x80" + b"\x00" * (_AES_BLOCK - len(rest) - 1)
        final_key = k3
    # CBC-MAC over all but the last block is the last block of an AES-CBC encryption with zero IV.
    e = b"\x00" * _AES_BLOCK
    if body:
        enc = Cipher(algorithms.AES(k1), modes.CBC(e)).encryptor()
        e = (enc.update(body) + enc.finalize())[-_AES_BLOCK:]
    return _aes_ecb_block(k1, _xor(_xor(e, last), final_key))


def _aes_cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


class Prf:
    """One negotiated PRF transform. Stateless: keys are passed per call."""

    __slots__ = ("prf_id", "output_size", "key_size", "_hash")

    def __init__(self, prf_id: int) -> None:
        self.prf_id = int(prf_id)
        self._hash: hashes.HashAlgorithm | None = _HMAC_HASHES.get(self.prf_id)
        if self._hash is not None:
            # HMAC PRFs: preferred key size = output size (RFC 7296 2.13, RFC 4868 2.1.2).
            self.output_size: int = self._hash.digest_size
            self.key_size: int = self._hash.digest_size
        elif self.prf_id in _AES_PRFS:
            self.output_size = _AES_BLOCK
            self.key_size = _AES_BLOCK
        else:
            raise LocalProtocolError(f"unsupported PRF transform {prf_id}")

    @property
    def is_fixed_key_size(self) -> bool:
        """True for the AES-based PRFs that RFC 7296 2.14 treats specially for SKEYSEED."""
        return self._hash is None

    def compute(self, key: bytes, data: bytes) -> bytes:
        """prf(key, data)."""
        if self._hash is not None:
            h = hmac.HMAC(key, self._hash)
            h.update(data)
            return h.finalize()
        if self.prf_id == PrfId.AES128_XCBC:
            # RFC 4434 section 2: a short key is zero-padded, a long one condensed by the MAC
            # under an all-zero key.
            if len(key) < _AES_BLOCK:
                key = key + b"\x00" * (_AES_BLOCK - len(key))
            elif len(key) > _AES_BLOCK:
                key = _aes_xcbc_mac(b"\x00" * _AES_BLOCK, key)
            return _aes_xcbc_mac(key, data)
        # RFC 4615 section 3: any key other than 128 bits is condensed by AES-CMAC(0^128, key).
        if len(key) != _AES_BLOCK:
            key = _aes_cmac(b"\x00" * _AES_BLOCK, key)
        return _aes_cmac(key, data)

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+(key, seed) truncated to `length` octets (RFC 7296 2.13):
        T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
        if length < 0:
            raise LocalProtocolError("prf+ length must not be negative")
        blocks = -(-length // self.output_size)
        if blocks > PRF_PLUS_MAX_ITERATIONS:
            raise LocalProtocolError(
                f"prf+ cannot produce {length} octets with a {self.output_size}-octet PRF "
                f"(at most {PRF_PLUS_MAX_ITERATIONS} iterations)"
            )
        out = bytearray()
        t = b""
        if self._hash is not None:
            # Every block uses the same HMAC key: set it up once and copy the keyed state per
            # block (about 40% faster than a fresh HMAC per block for SK_* derivation).
            keyed = hmac.HMAC(key, self._hash)
            for counter in range(1, blocks + 1):
                h = keyed.copy()
                h.update(t + seed + bytes((counter,)))
                t = h.finalize()
                out += t
            return bytes(out[:length])
        for counter in range(1, blocks + 1):
            t = self.compute(key, t + seed + bytes((counter,)))
            out += t
        return bytes(out[:length])

    def __repr__(self) -> str:
        return f"Prf({self.prf_id})"


@functools.lru_cache(maxsize=len(SUPPORTED_PRFS))
def prf_for(prf_id: int) -> Prf:
    """The shared `Prf` of `prf_id` (a Prf holds no key or state, so one object per id serves
    every caller; unsupported ids raise LocalProtocolError, uncached)."""
    return Prf(prf_id)
