"""Published vectors: draft-mcgrew-gcm-test-01 section 4 (AES-GCM ESP) and RFC 7634 Appendix A (ChaCha20)."""

from __future__ import annotations

from types import ModuleType

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from ikev2lib.esp import errors
from tests.esp import vectors as V


@pytest.mark.parametrize("case", V.GCM_CASES + V.AEAD_ONLY_CASES, ids=lambda c: c.name)
def test_gcm_vector_transcription(case: V.GcmCase) -> None:
    # The vector itself, checked with an independent AEAD (guards against transcription errors).
    key = case.keymat
    sealed = AESGCM(key[:-4]).encrypt(key[-4:] + bytes.fromhex(case.iv), bytes.fromhex(case.plaintext),
                                      bytes.fromhex(case.aad))  # fmt: skip
    assert sealed.hex() == case.ciphertext + case.tag


@pytest.mark.parametrize("case", V.GCM_CASES, ids=lambda c: c.name)
def test_gcm_vector_decap(backend: ModuleType, case: V.GcmCase) -> None:
    # The vectors' payloads are not consistent inner IP packets (the IP length covers the trailer), so
    # they are decapsulated in transport mode: the result is the payload and its next header.
    sa = backend.EspSA(case.spi, case.algorithm, case.keymat, "inbound", "transport", esn=case.esn)
    if case.seq > 1:
        sa.advance_sequence(case.seq)  # the receiver's window sits just below the vector's number
    plaintext = bytes.fromhex(case.plaintext)
    pad = plaintext[-2]
    nh, inner = sa.decap(case.packet)
    assert nh == plaintext[-1]
    assert inner == plaintext[: len(plaintext) - 2 - pad]
    assert sa.highest_sequence == case.seq
    with pytest.raises(errors.EspReplayError):
        sa.decap(case.packet)


@pytest.mark.parametrize("case", [c for c in V.GCM_CASES if c.esn], ids=lambda c: c.name)
def test_gcm_vector_esn_high_half_is_authenticated(backend: ModuleType, case: V.GcmCase) -> None:
    # Same packet, but the receiver infers another high half: the AAD differs, so the ICV fails.
    sa = backend.EspSA(case.spi, case.algorithm, case.keymat, "inbound", "transport", esn=True)
    seq = case.seq - (1 << 32) if case.seq >= 1 << 32 else case.seq + (1 << 32)
    sa.advance_sequence(seq)
    with pytest.raises(errors.EspAuthenticationError):
        sa.decap(case.packet)


def test_rfc7634_vector_transcription() -> None:
    aead = ChaCha20Poly1305(V.RFC7634_KEYMAT[:32])
    aad = V.RFC7634_SPI.to_bytes(4, "big") + V.RFC7634_SEQ.to_bytes(4, "big")
    assert aead.encrypt(V.RFC7634_KEYMAT[32:] + V.RFC7634_IV, V.RFC7634_PLAINTEXT, aad) == V.RFC7634_CIPHERTEXT_TAG


def test_rfc7634_appendix_a_decap(backend: ModuleType) -> None:
    sa = backend.EspSA(V.RFC7634_SPI, "chacha20poly1305", V.RFC7634_KEYMAT, "inbound", "tunnel")
    nh, inner = sa.decap(V.RFC7634_PACKET)
    assert nh == 4  # the trailer's next header: IPv4 in IPv4 tunnel mode
    assert inner == V.RFC7634_PLAINTEXT[:-4]  # minus padding 01 02, pad length 2, next header 4
    assert sa.stats.packets == 1 and sa.stats.bytes == 84


def test_rfc7634_encap_matches_an_independent_aead(backend: ModuleType) -> None:
    # Encap of the RFC's inner packet: the IV is the sequence number (RFC 7634 section 2 allows any
    # unique IV), so the expected packet is computed with pyca from the RFC's key, salt and plaintext.
    sa = backend.EspSA(V.RFC7634_SPI, "chacha20poly1305", V.RFC7634_KEYMAT, "outbound", "tunnel")
    sa.advance_sequence(V.RFC7634_SEQ)
    packet = sa.encap(V.RFC7634_PLAINTEXT[:-4])
    iv = V.RFC7634_SEQ.to_bytes(8, "big")
    aad = V.RFC7634_SPI.to_bytes(4, "big") + V.RFC7634_SEQ.to_bytes(4, "big")
    expected = ChaCha20Poly1305(V.RFC7634_KEYMAT[:32]).encrypt(V.RFC7634_KEYMAT[32:] + iv, V.RFC7634_PLAINTEXT, aad)
    assert packet == aad + iv + expected  # same trailer bytes as the RFC: 01 02 02 04


@pytest.mark.parametrize("case", V.GCM_CASES, ids=lambda c: c.name)
def test_gcm_encap_matches_an_independent_aead(backend: ModuleType, case: V.GcmCase) -> None:
    plaintext = bytes.fromhex(case.plaintext)
    pad, nh = plaintext[-2], plaintext[-1]
    payload = plaintext[: len(plaintext) - 2 - pad]
    assert pad == -(len(payload) + 2) % 4  # the vectors pad minimally, as encap does
    sa = backend.EspSA(case.spi, case.algorithm, case.keymat, "outbound", "transport", esn=case.esn)
    sa.advance_sequence(case.seq)
    packet = sa.encap(payload, next_header=nh)
    key, iv = case.keymat, case.seq.to_bytes(8, "big")
    expected = AESGCM(key[:-4]).encrypt(key[-4:] + iv, plaintext, bytes.fromhex(case.aad))
    assert packet == bytes.fromhex(case.aad[:8] + case.aad[-8:]) + iv + expected
