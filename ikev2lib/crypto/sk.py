"""Protection of the Encrypted (SK) payload (RFC 7296 3.14; RFC 5282 for AES-GCM; RFC 7634 for
ChaCha20-Poly1305).

Body layout (the SK payload data after its 4-octet generic header)::

    IV | ciphertext(plaintext | padding | pad length) | ICV

* AEAD (AES-GCM with 8/12/16-octet ICV, ChaCha20-Poly1305): key material = key | 4-octet salt,
  nonce = salt | 8-octet IV, AAD = IKE header .. SK generic payload header (RFC 5282 5.1),
  no padding needed (RFC 5282 3 allows zero-length padding). The IV is a 64-bit counter owned
  by the `SKCipher` (RFC 5282 3.1: never reuse an IV with a key) and refused when exhausted.
  The counter is taken under a lock, so one cipher may protect messages from several threads.
* AES-CBC + HMAC: 16 random IV octets (RFC 7296 3.14: unpredictable), plaintext padded to the
  block size, ICV = truncated HMAC over IKE header .. end of ciphertext (`aad | IV | ciphertext`).

One `SKCipher` per key, i.e. per direction. `decrypt` verifies before decrypting/returning
anything; tag/ICV mismatch raises `IntegrityError`, impossible lengths `RemoteProtocolError`.
"""

from __future__ import annotations

import hmac as _stdlib_hmac
import os
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ..exceptions import IntegrityError, LocalProtocolError, RemoteProtocolError
from ..wire.enums import EncrId, IntegId
from .keys import encr_key_length, integ_key_length

__all__ = ["SKCipher", "sk_cipher", "MAX_SK_BODY", "AEAD_IV_LIMIT", "SK_ENCRYPTION_IDS", "SK_INTEGRITY_IDS"]

# An IKE message travels in one UDP datagram or one RFC 8229 TCP frame: both cap it at 65535
# octets, so no SK body can be larger; bigger inputs are refused before any crypto work.
MAX_SK_BODY = 65535
# The AEAD IV is a 64-bit message counter; after 2**64 messages the key must not be used again.
AEAD_IV_LIMIT = 2**64

_INVALID_SYNTAX = 7  # RFC 7296 3.10.1
_SALT = 4
_AEAD_IV = 8  # RFC 5282 3.1, RFC 7634 section 3: 8-octet explicit IV
_AES_BLOCK = 16

_GCM_ICV: dict[int, int] = {EncrId.AES_GCM_8: 8, EncrId.AES_GCM_12: 12, EncrId.AES_GCM_16: 16}
_IKE_ENCRS = frozenset({EncrId.AES_CBC, EncrId.CHACHA20_POLY1305, *_GCM_ICV})  # what sk_cipher builds
# Integrity transform -> (hash, truncated ICV length) (RFC 4868 2.3, RFC 2404).
_HMAC_INTEG: dict[int, tuple[type[hashes.HashAlgorithm], int]] = {
    IntegId.HMAC_SHA1_96: (hashes.SHA1, 12),
    IntegId.HMAC_SHA2_256_128: (hashes.SHA256, 16),
    IntegId.HMAC_SHA2_384_192: (hashes.SHA384, 24),
    IntegId.HMAC_SHA2_512_256: (hashes.SHA512, 32),
}
# The encryption and integrity transforms sk_cipher builds (read by crypto/capabilities.py).
SK_ENCRYPTION_IDS: frozenset[int] = frozenset(int(e) for e in _IKE_ENCRS)
SK_INTEGRITY_IDS: frozenset[int] = frozenset(int(i) for i in _HMAC_INTEG)


def _malformed(why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed Encrypted payload: {why}", notify=_INVALID_SYNTAX)


def _strip_padding(padded: bytes) -> bytes:
    # Runs only on authenticated data. RFC 7296 3.14: the last octet is the pad length.
    if not padded:
        raise _malformed("empty plaintext (no pad length octet)")
    pad_len = padded[-1]
    if pad_len + 1 > len(padded):
        raise _malformed(f"pad length {pad_len} exceeds the plaintext")
    return padded[: len(padded) - pad_len - 1]


class SKCipher:
    """Encrypts/decrypts SK payload bodies for one key (one direction). Build with `sk_cipher`."""

    __slots__ = ("encr_id", "iv_size", "icv_size", "block_size")

    def __init__(self, encr_id: int, iv_size: int, icv_size: int, block_size: int) -> None:
        self.encr_id = encr_id
        self.iv_size = iv_size
        self.icv_size = icv_size
        self.block_size = block_size  # padding granularity of the plaintext

    # A copy would carry its own IV counter: two objects encrypting under one key reuse IVs.
    def __copy__(self) -> SKCipher:
        raise LocalProtocolError("an SK cipher cannot be copied (its IV counter must stay unique)")

    def __deepcopy__(self, memo: object) -> SKCipher:
        return self.__copy__()

    def __reduce__(self) -> str | tuple[object, ...]:
        raise LocalProtocolError("an SK cipher cannot be pickled (its IV counter must stay unique)")

    def _padded_length(self, plain_len: int) -> int:
        # plaintext + pad length octet, rounded up to the block size.
        n = plain_len + 1
        return -(-n // self.block_size) * self.block_size

    def body_length(self, plain_len: int) -> int:
        """Length of the SK body `encrypt` produces for `plain_len` octets of payloads, so the
        caller can fill in the IKE header and SK payload lengths (part of the AAD) first."""
        if plain_len < 0:
            raise LocalProtocolError("negative plaintext length")
        return self.iv_size + self._padded_length(plain_len) + self.icv_size

    def _pad(self, plaintext: bytes) -> bytes:
        total = self._padded_length(len(plaintext))
        pad_len = total - len(plaintext) - 1
        return plaintext + b"\x00" * pad_len + bytes((pad_len,))

    def _check_encrypt_input(self, plaintext: bytes) -> None:
        if self.body_length(len(plaintext)) > MAX_SK_BODY:
            raise LocalProtocolError(f"plaintext of {len(plaintext)} octets does not fit an IKE message")

    def _check_body(self, body: bytes) -> None:
        if len(body) > MAX_SK_BODY:
            raise _malformed(f"body of {len(body)} octets exceeds {MAX_SK_BODY}")
        minimum = self.iv_size + self._padded_length(0) + self.icv_size
        if len(body) < minimum:
            raise _malformed(f"body of {len(body)} octets is shorter than {minimum}")
        if (len(body) - self.iv_size - self.icv_size) % self.block_size:
            raise _malformed("ciphertext is not a multiple of the cipher block size")

    def encrypt(self, aad: bytes, plaintext: bytes) -> bytes:
        """IV | ciphertext | ICV for `plaintext` (the inner payload chain); `aad` = IKE header
        through the SK generic payload header, with the final lengths already in place."""
        raise NotImplementedError

    def decrypt(self, aad: bytes, body: bytes) -> bytes:
        """The inner payload chain, padding removed, after verifying the ICV/tag."""
        raise NotImplementedError

    @property
    def next_iv(self) -> int | None:
        """The IV counter the next message takes (AEAD), None where IVs are random (CBC)."""
        return None

    def skip_ivs(self, next_iv: int) -> None:
        """Move the IV counter forward to `next_iv` (never back): a process that takes over this key
        from another must not repeat any IV the other may have used. A no-op for random IVs."""

    def __repr__(self) -> str:
        return f"SKCipher(encr_id={self.encr_id}, icv_size={self.icv_size})"


class _AeadSKCipher(SKCipher):
    __slots__ = ("_salt", "_key", "_aead_cls", "_gcm_key", "_next_iv", "_iv_lock")

    def __init__(self, encr_id: int, key: bytes, icv_size: int) -> None:
        # AEAD ciphers need no block alignment: padding may be empty (RFC 5282 3, RFC 7634 3).
        super().__init__(encr_id, _AEAD_IV, icv_size, 1)
        self._salt = key[-_SALT:]
        raw = key[:-_SALT]
        self._key = raw  # length already checked by sk_cipher()
        self._aead_cls: type[AESGCM] | type[ChaCha20Poly1305] | None = None
        self._gcm_key: algorithms.AES | None = None
        if encr_id == EncrId.CHACHA20_POLY1305:
            self._aead_cls = ChaCha20Poly1305
        elif icv_size == 16:
            self._aead_cls = AESGCM
        else:
            # Truncated GCM tags (RFC 4106 / RFC 5282: ICV 8 or 12) need the streaming API.
            self._gcm_key = algorithms.AES(raw)
        self._next_iv = 0
        # Read, check and increment of the counter as one step. Not itertools.count: it is atomic only
        # through the GIL's scheduling points on CPython builds with a GIL, and past Py_ssize_t (the
        # counter runs to 2**64) it switches to a slow mode that free-threaded builds had to fix apart.
        self._iv_lock = threading.Lock()

    def _aead(self) -> AESGCM | ChaCha20Poly1305 | None:
        # Built per message, not kept: an AEAD object holds ~2.5 KB of OpenSSL contexts, which
        # would be most of an idle IKE SA's memory, while IKE messages are rare (~2 us to build).
        return None if self._aead_cls is None else self._aead_cls(self._key)

    def _take_iv(self) -> bytes:
        with self._iv_lock:
            counter = self._next_iv
            if counter >= AEAD_IV_LIMIT:
                raise LocalProtocolError("AEAD IV space exhausted: rekey the IKE SA")
            self._next_iv = counter + 1
        return counter.to_bytes(_AEAD_IV, "big")

    @property
    def next_iv(self) -> int | None:
        with self._iv_lock:
            return self._next_iv

    def skip_ivs(self, next_iv: int) -> None:
        if not 0 <= next_iv <= AEAD_IV_LIMIT:
            raise LocalProtocolError("IV counter out of range")
        with self._iv_lock:
            if next_iv < self._next_iv:
                raise LocalProtocolError("the IV counter only moves forward")
            self._next_iv = next_iv

    def _seal(self, iv: bytes, aad: bytes, data: bytes) -> bytes:
        nonce = self._salt + iv
        aead = self._aead()
        if aead is not None:
            return aead.encrypt(nonce, data, aad)
        if self._gcm_key is None:  # pragma: no cover - one of the two is always set
            raise LocalProtocolError("cipher not initialised")
        enc = Cipher(self._gcm_key, modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        ct = enc.update(data) + enc.finalize()
        return ct + enc.tag[: self.icv_size]

    def _open(self, iv: bytes, aad: bytes, sealed: bytes) -> bytes:
        nonce = self._salt + iv
        aead = self._aead()
        try:
            if aead is not None:
                return aead.decrypt(nonce, sealed, aad)
            if self._gcm_key is None:  # pragma: no cover
                raise LocalProtocolError("cipher not initialised")
            ct, tag = sealed[: -self.icv_size], sealed[-self.icv_size :]
            dec = Cipher(self._gcm_key, modes.GCM(nonce, tag, min_tag_length=self.icv_size)).decryptor()
            dec.authenticate_additional_data(aad)
            out = dec.update(ct)
            return out + dec.finalize()  # raises InvalidTag before `out` is ever returned
        except InvalidTag:
            raise IntegrityError("Encrypted payload authentication failed") from None

    def encrypt(self, aad: bytes, plaintext: bytes) -> bytes:
        self._check_encrypt_input(plaintext)
        iv = self._take_iv()
        return iv + self._seal(iv, bytes(aad), self._pad(bytes(plaintext)))

    def decrypt(self, aad: bytes, body: bytes) -> bytes:
        body = bytes(body)
        self._check_body(body)
        iv, sealed = body[: self.iv_size], body[self.iv_size :]
        return _strip_padding(self._open(iv, bytes(aad), sealed))


class _CbcHmacSKCipher(SKCipher):
    __slots__ = ("_aes", "_integ_key", "_hash")

    def __init__(self, encr_id: int, key: bytes, integ_id: int, integ_key: bytes) -> None:
        hash_cls, icv_size = _HMAC_INTEG[integ_id]
        super().__init__(encr_id, _AES_BLOCK, icv_size, _AES_BLOCK)
        self._aes = algorithms.AES(key)
        self._integ_key = integ_key
        self._hash = hash_cls

    def _icv(self, signed: bytes) -> bytes:
        h = _hmac.HMAC(self._integ_key, self._hash())
        h.update(signed)
        return h.finalize()[: self.icv_size]

    def encrypt(self, aad: bytes, plaintext: bytes) -> bytes:
        self._check_encrypt_input(plaintext)
        iv = os.urandom(_AES_BLOCK)
        enc = Cipher(self._aes, modes.CBC(iv)).encryptor()
        ct = enc.update(self._pad(bytes(plaintext))) + enc.finalize()
        return iv + ct + self._icv(bytes(aad) + iv + ct)

    def decrypt(self, aad: bytes, body: bytes) -> bytes:
        body = bytes(body)
        self._check_body(body)
        signed, icv = body[: -self.icv_size], body[-self.icv_size :]
        # Constant-time comparison: no timing oracle on the ICV (RFC 7296 3.14 checks first).
        if not _stdlib_hmac.compare_digest(self._icv(bytes(aad) + signed), icv):
            raise IntegrityError("Encrypted payload ICV mismatch")
        iv, ct = signed[: self.iv_size], signed[self.iv_size :]
        dec = Cipher(self._aes, modes.CBC(iv)).decryptor()
        return _strip_padding(dec.update(ct) + dec.finalize())


def sk_cipher(
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    enc_key: bytes,
    integ_key: bytes = b"",
) -> SKCipher:
    """An `SKCipher` for one direction: pass SK_ei/SK_ai to protect what the initiator sends,
    SK_er/SK_ar for the responder's messages. `enc_key` includes the salt for AEAD ciphers."""
    encr_id = int(encr_id)
    integ = int(integ_id) if integ_id is not None else IntegId.NONE
    if encr_id not in _IKE_ENCRS:
        raise LocalProtocolError(f"encryption transform {encr_id} is not supported for IKE")
    expected = encr_key_length(encr_id, encr_key_bits)
    if len(enc_key) != expected:
        raise LocalProtocolError(f"encryption key is {len(enc_key)} octets, expected {expected}")
    enc_key = bytes(enc_key)
    if encr_id == EncrId.AES_CBC:
        if integ not in _HMAC_INTEG:
            raise LocalProtocolError(f"AES-CBC needs an HMAC integrity transform, not {integ_id}")
        if len(integ_key) != integ_key_length(integ):
            raise LocalProtocolError("integrity key has the wrong length")
        return _CbcHmacSKCipher(encr_id, enc_key, integ, bytes(integ_key))
    if integ != IntegId.NONE or integ_key:
        raise LocalProtocolError("a combined-mode cipher takes no integrity transform or key")
    icv = 16 if encr_id == EncrId.CHACHA20_POLY1305 else _GCM_ICV[encr_id]
    return _AeadSKCipher(encr_id, enc_key, icv)
