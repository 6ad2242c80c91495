"""Write the seed corpus of fuzz_decap.c: valid packets for each of its SA configurations (raw mode) and
ESP plaintexts with valid and invalid trailers (crafted mode). Run: .venv/bin/python fuzz/esp/make_corpus.py"""

from __future__ import annotations

import struct
from pathlib import Path

from ikev2lib.esp import EspSA
from ikev2lib.esp.params import ALGORITHMS

KEYMAT = bytes((i * 7 + 3) & 0xFF for i in range(96))
# Must match CONFIGS in fuzz_decap.c: (algorithm, mode, esn, udp)
CONFIGS = [("aes128gcm16", "tunnel", False, False), ("aes256gcm8", "transport", True, False),
           ("chacha20poly1305", "tunnel", False, True), ("aes192gcm12", "transport", False, False),
           ("aes256-sha256", "tunnel", False, False), ("aes128-sha1", "transport", True, True),
           ("aes192-sha512", "tunnel", True, False)]  # fmt: skip


def ipv4(payload: bytes) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0, b"\n\1\0\1", b"\n\2\0\1") + payload


def main() -> None:
    out = Path(__file__).parent / "corpus"
    out.mkdir(exist_ok=True)
    for i, (alg, mode, esn, udp) in enumerate(CONFIGS):
        cbc = "-" in alg
        key = KEYMAT[: ALGORITHMS[alg].keymat_len]  # key || salt, or key || HMAC key (CBC)
        sa = EspSA(0x1000 + i, alg, key, "outbound", mode, esn=esn, udp_encap=(4500, 4500) if udp else None)
        for j, size in enumerate((0, 1, 40, 300)):
            inner = ipv4(bytes(size)) if mode == "tunnel" else bytes(range(size % 256)) * 1
            kw = {} if mode == "tunnel" else {"next_header": 17}
            (out / f"raw-{i}-{j}").write_bytes(bytes([i]) + sa.encap(inner, **kw))
        seq = struct.pack("!I", 7)
        for j, trailer in enumerate((b"\x01\x02\x02\x04", b"\x00\x04", b"\x01\x03\x02\x04", b"\x00\x3b", b"\xff\x04")):
            # the harness cuts CBC plaintexts to whole AES blocks: size those to fit exactly
            payload = bytes(-(20 + len(trailer)) % 16) if cbc else b"abcdef"
            (out / f"crafted-{i}-{j}").write_bytes(bytes([0x80 | i]) + seq + ipv4(payload) + trailer)


if __name__ == "__main__":
    main()
