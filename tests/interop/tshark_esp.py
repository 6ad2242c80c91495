"""Independent check of ESP with tshark: decrypt ESP (UDP-encapsulated or raw) given Wireshark
`esp_sa` rows.

`decode_esp(pcap, esp_sa_lines)` runs tshark with ESP decryption and authentication checking on,
one `-o uat:esp_sa:<line>` per row (the format ikev2lib.keyexport.esp_sa_table writes), and returns,
per ESP packet, its SPI, sequence number, how it travelled (outer IP protocol 50, or 17 with the UDP
ports), and the inner addresses and UDP payload if tshark decrypted an inner IPv4/UDP packet.
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
    ip_proto: int = 0  # of the outer IPv4 header: 50 raw ESP, 17 ESP in UDP (RFC 3948)
    udp_ports: tuple[int, int] | None = None  # outer UDP (source, destination) ports when ip_proto is 17


def decode_esp(pcap: Path, esp_sa_lines: Sequence[str]) -> list[DecodedEsp]:
    if not Path(TSHARK).exists():
        raise TsharkError(f"{TSHARK} not found: install the Debian package tshark")
    args = [TSHARK, "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE"]
    for line in esp_sa_lines:
        args += ["-o", f"uat:esp_sa:{line}"]
    # ip.src/udp.payload occur twice once decrypted (outer, inner), once if tshark could not decrypt
    args += ["-Y", "esp", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|",
             "-e", "frame.number", "-e", "esp.spi", "-e", "esp.sequence",
             "-e", "ip.src", "-e", "ip.dst", "-e", "udp.payload", "-e", "ip.proto",
             "-e", "udp.srcport", "-e", "udp.dstport"]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=TSHARK_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise TsharkError(f"tshark timed out after {TSHARK_TIMEOUT}s") from exc
    if proc.returncode != 0:
        raise TsharkError(f"tshark failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    out = []
    for line in proc.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 9 or not fields[0]:
            continue
        frame, spi, seq, srcs, dsts, payloads, protos, sports, dports = fields
        src, dst, udp = srcs.split("|"), dsts.split("|"), payloads.split("|")
        inner = len(src) >= 2 and bool(udp[-1])  # decrypted: an inner IP header (and UDP payload) too
        outer_proto = int(protos.split("|")[0])
        # the outer UDP header, if any, is the first occurrence (the inner one follows it)
        ports = (int(sports.split("|")[0]), int(dports.split("|")[0])) if outer_proto == 17 else None
        out.append(DecodedEsp(int(frame), int(spi.split("|")[0], 16), int(seq.split("|")[0]),
                              src[-1] if inner else "", dst[-1] if inner else "",
                              bytes.fromhex(udp[-1].replace(":", "")) if inner else None, outer_proto, ports))
    return out
