"""Key export for Wireshark: the files are off by default, and tshark (an independent implementation)
decrypts our IKE_AUTH and ESP packets with them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from scapy.all import IP, UDP, Raw, wrpcap

from ikev2lib.events import ChildSaCreated
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.keyexport import ESP_TABLE_NAME, IKE_TABLE_NAME, write_wireshark_keys

from .network import INITIATOR_IP, RESPONDER_IP, pair


def test_export_is_off_unless_asked_for(tmp_path: Path) -> None:
    net, a, b, icfg = pair()
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    with pytest.raises(LocalProtocolError):
        write_wireshark_keys(a.endpoint, tmp_path)
    assert not list(tmp_path.iterdir())


def test_tshark_decrypts_ike_and_esp_with_exported_keys(tmp_path: Path) -> None:
    net, a, b, icfg = pair(allow_key_export=True)
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    child = a.of_type(ChildSaCreated)[0]
    inner = bytes(IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=1234, dport=5678) / Raw(b"hello through esp"))
    packets = [
        IP(src=src[0], dst=dst) / UDP(sport=src[1], dport=500) / Raw(data) for data, src, dst in net.tap
    ]
    packets.append(IP(src=INITIATOR_IP, dst=RESPONDER_IP, proto=50) / Raw(child.outbound.encap(inner)))
    wrpcap(str(tmp_path / "capture.pcap"), packets)
    config = tmp_path / "config" / "wireshark"
    ike_file, esp_file = write_wireshark_keys(a.endpoint, config)
    assert ike_file.name == IKE_TABLE_NAME and esp_file.name == ESP_TABLE_NAME
    assert oct(ike_file.stat().st_mode & 0o777) == "0o600"
    ike_lines = ike_file.read_text().splitlines()
    esp_lines = esp_file.read_text().splitlines()
    assert len(ike_lines) == 1 and len(esp_lines) == 2
    assert '"AES-GCM-128 with 16 octet ICV [RFC5282]"' in ike_lines[0]

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path))
    result = subprocess.run(
        ["tshark", "-r", str(tmp_path / "capture.pcap"), "-o", "esp.enable_encryption_decode:TRUE", "-V"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # the IDi inside the encrypted IKE_AUTH request, and the inner packet inside ESP
    assert "alice@example.org" in result.stdout
    decrypted = [line for line in result.stdout.splitlines() if "ESP Decrypted Data:" in line]
    assert decrypted and inner[:24].hex() in decrypted[0]
