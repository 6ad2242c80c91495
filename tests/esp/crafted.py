"""Authentic packets with chosen (bad) plaintext, sealed with pyca: reaches the checks after the ICV."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305


def seal(alg: str, keymat: bytes, spi: int, seq: int, plaintext: bytes, esn: bool = False) -> bytes:
    iv = seq.to_bytes(8, "big")
    header = spi.to_bytes(4, "big") + (seq & 0xFFFFFFFF).to_bytes(4, "big")
    aad = spi.to_bytes(4, "big") + ((seq >> 32).to_bytes(4, "big") if esn else b"") + header[4:]
    if alg == "chacha20poly1305":
        sealed = ChaCha20Poly1305(keymat[:-4]).encrypt(keymat[-4:] + iv, plaintext, aad)
    else:
        icv = int(alg.split("gcm")[1])
        sealed = AESGCM(keymat[:-4]).encrypt(keymat[-4:] + iv, plaintext, aad)[: len(plaintext) + icv]
    return header + iv + sealed
