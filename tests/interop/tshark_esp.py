"""Independent check of ESP with tshark: decrypt UDP-encapsulated ESP given Wireshark `esp_sa` rows.

`decode_esp(pcap, esp_sa_lines)` runs tshark with ESP decryption and authentication checking on,
one `-o uat:esp_sa:<line>` per row (the format ikev2lib.keyexport.esp_sa_table writes), and returns,
per ESP packet, its SPI, sequence number, whether tshark decrypted it, and the UDP payload of the
inner packet if it is IPv4/UDP.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .tshark import TSHARK, TSHARK_TIMEOUT, TsharkError

__all__ = ["DecodedEsp", "decode_esp"]


@dataclass(frozen=True)
class DecodedEsp:
    frame: int
    spi: int
    sequence: int
    src: str  # inner source address ("" if not decrypted)
    dst: str
    udp_payload: bytes | None  # inner UDP payload, None if nothing was decrypted


def decode_esp(pcap: Path, esp_sa_lines: Sequence[str]) -> list[DecodedEsp]:
    if not Path(TSHARK).exists():
        raise TsharkError(f"{TSHARK} not found: install the Debian package tshark")
    args = [TSHARK, "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE"]
    for line in esp_sa_lines:
        args += ["-o", f"uat:esp_sa:{line}"]
    # ip.src/udp.payload occur twice once decrypted (outer, inner), once if tshark could not decrypt
    args += ["-Y", "esp", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
             "-e", "frame.number", "-e", "esp.spi", "-e", "esp.sequence",
             "-e", "ip.src", "-e", "ip.dst", "-e", "udp.payload", "-e", "ip.proto"]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=TSHARK_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise TsharkError(f"tshark timed out after {TSHARK_TIMEOUT}s") from exc
    if proc.returncode != 0:
        raise TsharkError(f"tshark failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    out = []
    for line in proc.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 7 or not fields[0]:
            continue
        frame, spi, seq, srcs, dsts, payloads, _ = fields
        src, dst, udp = srcs.split("|"), dsts.split("|"), payloads.split("|")
        inner = len(src) >= 2 and len(udp) >= 2
        out.append(DecodedEsp(int(frame), int(spi.split("|")[0], 16), int(seq.split("|")[0]),
                              src[-1] if inner else "", dst[-1] if inner else "",
                              bytes.fromhex(udp[-1].replace(":", "")) if inner and udp[-1] else None))
    return out
