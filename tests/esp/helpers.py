"""Small builders shared by the ESP tests."""

from __future__ import annotations

import struct
from array import array
from types import ModuleType
from typing import Any

from ikev2lib.esp.params import ALGORITHMS

KEY_LEN = {f"aes{bits}gcm{icv}": bits // 8 for bits in (128, 192, 256) for icv in (8, 12, 16)}
KEY_LEN["chacha20poly1305"] = 32
ALGS = sorted(KEY_LEN)  # AEAD: deterministic IVs, so both back ends produce identical packets
CBC_ALGS = [f"aes{bits}-{h}" for bits in (128, 192, 256) for h in ("sha1", "sha256", "sha384", "sha512")]


def keymat(alg: str, seed: int = 1) -> bytes:
    n = ALGORITHMS[alg].keymat_len  # cipher key || salt (AEAD) or cipher key || HMAC key (CBC)
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(n))


def ipv4(payload: bytes = b"hello", proto: int = 17) -> bytes:
    total = 20 + len(payload)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, proto, 0, bytes([10, 1, 0, 1]),
                       bytes([10, 2, 0, 1])) + payload  # fmt: skip


def ipv6(payload: bytes = b"hello", nh: int = 17) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, bytes(15) + b"\1", bytes(15) + b"\2") + payload


def pair(backend: ModuleType, alg: str = "aes128gcm16", mode: str = "tunnel", spi: int = 0x1000,
         **kw: Any) -> tuple[Any, Any]:  # fmt: skip
    key = keymat(alg)
    inbound_kw = dict(kw)
    return (backend.EspSA(spi, alg, key, "outbound", mode, **{k: v for k, v in kw.items() if k != "replay_window"}),
            backend.EspSA(spi, alg, key, "inbound", mode, **inbound_kw))  # fmt: skip


def pack(packets: list[bytes]) -> tuple[bytearray, array[int], array[int]]:
    buf = bytearray(b"".join(packets))
    offs, lens, pos = array("I"), array("I"), 0
    for p in packets:
        offs.append(pos)
        lens.append(len(p))
        pos += len(p)
    return buf, offs, lens


def out_arrays(n: int, size: int) -> tuple[bytearray, array[int], array[int], bytearray, bytearray]:
    return bytearray(size), array("I", bytes(4 * n)), array("I", bytes(4 * n)), bytearray(n), bytearray(n)
