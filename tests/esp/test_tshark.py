"""Independent check with Wireshark's ESP dissector (tshark, libgcrypt): it decrypts our packets and
verifies their ICV, for every AES-GCM key size and ICV length (8/12/16: scapy cannot check truncated
ICVs), in tunnel mode and UDP-encapsulated. Wireshark 4.0 has no ChaCha20-Poly1305 for ESP (scapy
covers it) and no ESN in its SA table."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from types import ModuleType

from scapy.layers.inet import ICMP, IP, UDP
from scapy.packet import Raw
from scapy.utils import wrpcap

from tests.esp.helpers import keymat

ICV_NAMES = {8: "AES-GCM with 8 octet ICV [RFC4106]", 12: "AES-GCM with 12 octet ICV [RFC4106]",
             16: "AES-GCM with 16 octet ICV [RFC4106]"}  # fmt: skip
TSHARK_TIMEOUT = 60  # seconds


def test_tshark_decrypts_and_verifies_our_packets(backend: ModuleType, tmp_path: Path) -> None:
    uat, packets, expected = [], [], []
    spi = 0x2000
    for bits in (128, 192, 256):
        for icv in (8, 12, 16):
            for udp in (False, True):
                spi += 1
                alg = f"aes{bits}gcm{icv}"
                key = keymat(alg, seed=spi)
                sa = backend.EspSA(spi, alg, key, "outbound", "tunnel", udp_encap=(4500, 4500) if udp else None)
                uat.append(f'"IPv4","*","*","0x{spi:08x}","{ICV_NAMES[icv]}","0x{key.hex()}","NULL",""')
                for n in range(2):
                    icmp_seq = (spi & 0xFF) * 10 + n
                    inner = IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(seq=icmp_seq) / Raw(b"ping" * (n * 50 + 1))
                    frame = sa.encap(bytes(inner))
                    if udp:
                        packets.append(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(frame))
                    else:
                        packets.append(IP(src="192.0.2.1", dst="192.0.2.2", proto=50) / Raw(frame))
                    expected.append((str(icmp_seq), "1", "0"))
    # One forged packet: the dissector must report a bad ICV (so this test can fail).
    bad = bytearray(sa.encap(bytes(IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(seq=9999))))
    bad[-1] ^= 1
    packets.append(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(bytes(bad)))
    for p in packets:
        if p.haslayer(UDP):
            p[UDP].sport = p[UDP].dport = 4500
    wrpcap(str(tmp_path / "esp.pcap"), packets)
    conf = tmp_path / "wireshark"
    conf.mkdir()
    (conf / "esp_sa").write_text("\n".join(uat) + "\n")
    result = subprocess.run(
        ["tshark", "-n", "-r", str(tmp_path / "esp.pcap"), "-o", "esp.enable_encryption_decode:TRUE",
         "-o", "esp.enable_authentication_check:TRUE", "-T", "fields", "-e", "icmp.seq", "-e", "esp.icv_good",
         "-e", "esp.icv_bad"],
        capture_output=True, text=True, timeout=TSHARK_TIMEOUT, check=True,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)},
    )  # fmt: skip
    # tshark 4.4 (Debian 13) prints booleans as True/False, 3.6 (Debian 12) as 1/0
    bools = {"True": "1", "False": "0"}
    rows = [tuple(bools.get(f, f) for f in line.split("\t")) for line in result.stdout.splitlines()]
    assert rows[:-1] == expected
    assert rows[-1][1:] == ("0", "1")  # the forged packet: ICV bad
