"""IKE-side crypto costs (pytest-benchmark). Run: .venv/bin/python -m pytest benchmarks/bench_crypto.py
--benchmark-enable -p no:cacheprovider. Compare rows within one run (the machine is shared and noisy);
`test_baseline_hmac_sha256` is the in-run reference the others can be read against."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from ikev2lib.crypto import KeyExchange, derive_ike_keys, sk_cipher

_AAD = bytes(32)
_PAYLOAD = bytes(200)


def test_baseline_hmac_sha256(benchmark: Any) -> None:
    benchmark(hmac.digest, b"k" * 32, _PAYLOAD, hashlib.sha256)


def test_x25519_generate_and_shared(benchmark: Any) -> None:
    peer = KeyExchange.generate(31).public_bytes()

    def run() -> bytes:
        return KeyExchange.generate(31).shared_secret(peer)

    benchmark(run)


def test_modp2048_generate(benchmark: Any) -> None:
    benchmark(KeyExchange.generate, 14)


def test_modp2048_shared(benchmark: Any) -> None:
    me, peer = KeyExchange.generate(14), KeyExchange.generate(14).public_bytes()
    benchmark(me.shared_secret, peer)


def test_ecp256_generate_and_shared(benchmark: Any) -> None:
    peer = KeyExchange.generate(19).public_bytes()
    benchmark(lambda: KeyExchange.generate(19).shared_secret(peer))


def test_derive_ike_keys_aes256gcm_sha256(benchmark: Any) -> None:
    benchmark(derive_ike_keys, 5, 20, 256, None, b"g" * 256, b"n" * 32, b"m" * 32, b"i" * 8, b"r" * 8)


def _sk_roundtrip(encr: int, bits: int | None, integ: int | None, ek: int, ik: int) -> Any:
    sender = sk_cipher(encr, bits, integ, b"\x01" * ek, b"\x02" * ik)
    receiver = sk_cipher(encr, bits, integ, b"\x01" * ek, b"\x02" * ik)

    def run() -> bytes:
        return receiver.decrypt(_AAD, sender.encrypt(_AAD, _PAYLOAD))

    return run


def test_sk_aes128gcm16_200b(benchmark: Any) -> None:
    benchmark(_sk_roundtrip(20, 128, None, 20, 0))


def test_sk_aes128gcm8_200b(benchmark: Any) -> None:
    benchmark(_sk_roundtrip(18, 128, None, 20, 0))


def test_sk_chacha20poly1305_200b(benchmark: Any) -> None:
    benchmark(_sk_roundtrip(28, None, None, 36, 0))


def test_sk_aes256cbc_sha256_200b(benchmark: Any) -> None:
    benchmark(_sk_roundtrip(12, 256, 12, 32, 32))


def test_mlkem768_full_exchange(benchmark: Any) -> None:
    def run() -> bytes:
        initiator = KeyExchange.generate(36)
        responder, _ = KeyExchange.respond(36, initiator.public_bytes())
        return initiator.shared_secret(responder.public_bytes())

    benchmark(run)
