"""Write the seed corpus of fuzz_decap.c: valid packets for each of its SA configurations (raw mode) and
ESP plaintexts with valid and invalid trailers (crafted mode). Run: .venv/bin/python fuzz/esp/make_corpus.py"""

from __future__ import annotations

import struct
from pathlib import Path

from ikev2lib.esp import EspSA

KEYMAT = bytes((i * 7 + 3) & 0xFF for i in range(36))
# Must match CONFIGS in fuzz_decap.c: (algorithm, mode, esn, udp)
CONFIGS = [("aes128gcm16", "tunnel", False, False), ("aes256gcm8", "transport", True, False),
           ("chacha20poly1305", "tunnel", False, True), ("aes192gcm12", "transport", False, False)]  # fmt: skip
KEY_LEN = {"aes128gcm16": 16, "aes256gcm8": 32, "chacha20poly1305": 32, "aes192gcm12": 24}


def ipv4(payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0, b"\n\1\0\1", b"\n\2\0\1") + payload


def main() -> None:
    out = Path(__file__).parent / "corpus"
    out.mkdir(exist_ok=True)
    for i, (alg, mode, esn, udp) in enumerate(CONFIGS):
        key = KEYMAT[: KEY_LEN[alg] + 4]
        sa = EspSA(0x1000 + i, alg, key, "outbound", mode, esn=esn, udp_encap=(4500, 4500) if udp else None)
        for j, size in enumerate((0, 1, 40, 300)):
            inner = ipv4(bytes(size)) if mode == "tunnel" else bytes(range(size % 256)) * 1
            kw = {} if mode == "tunnel" else {"next_header": 17}
            (out / f"raw-{i}-{j}").write_bytes(bytes([i]) + sa.encap(inner, **kw))
        seq = struct.pack("!I", 7)
        for j, trailer in enumerate((b"\x01\x02\x02\x04", b"\x00\x04", b"\x01\x03\x02\x04", b"\x00\x3b", b"\xff\x04")):
            (out / f"crafted-{i}-{j}").write_bytes(bytes([0x80 | i]) + seq + ipv4(b"abcdef") + trailer)


if __name__ == "__main__":
    main()
