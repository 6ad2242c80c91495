"""Export the keys of live SAs for Wireshark/tshark: `ikev2_decryption_table` and `esp_sa` UAT files.

OFF unless asked for: the endpoint must be built with `allow_key_export=True`, and the user calls
`write_wireshark_keys(endpoint, directory)` (or formats the records with the two table functions).
The line formats are those of strongSwan's save-keys plugin (which Wireshark reads):

    ikev2_decryption_table: SPIi,SPIr,SK_ei,SK_er,"<encryption>",SK_ai,SK_ar,"<integrity>"
    esp_sa: "IPv4","<src>","<dst>","0x<SPI>","<encryption>","0x<key>","<authentication>","0x<key>"

Use with: tshark -o uat:ikev2_decryption_table:... or copy the files to ~/.config/wireshark/.
Algorithms Wireshark 4.0 cannot decrypt (e.g. ChaCha20-Poly1305) are left out.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .endpoint import IkeEndpoint
    from .keyrecords import EspKeyRecord, IkeKeyRecord

__all__ = ["ikev2_decryption_table", "esp_sa_table", "write_wireshark_keys", "IKE_TABLE_NAME", "ESP_TABLE_NAME"]

IKE_TABLE_NAME = "ikev2_decryption_table"
ESP_TABLE_NAME = "esp_sa"

_GCM_ICV = {18: 8, 19: 12, 20: 16}
_IKE_CBC = {128: "AES-CBC-128 [RFC3602]", 192: "AES-CBC-192 [RFC3602]", 256: "AES-CBC-256 [RFC3602]"}
_IKE_INTEG = {
    2: "HMAC_SHA1_96 [RFC2404]",
    12: "HMAC_SHA2_256_128 [RFC4868]",
    13: "HMAC_SHA2_384_192 [RFC4868]",
    14: "HMAC_SHA2_512_256 [RFC4868]",
}


def _ike_names(record: IkeKeyRecord) -> tuple[str, str] | None:
    bits = record.encr_key_bits
    if record.encr_id in _GCM_ICV and bits in (128, 192, 256):
        return f"AES-GCM-{bits} with {_GCM_ICV[record.encr_id]} octet ICV [RFC5282]", "NONE [RFC4306]"
    if record.encr_id == 12 and bits in _IKE_CBC and record.integ_id in _IKE_INTEG:
        return _IKE_CBC[bits], _IKE_INTEG[record.integ_id]
    return None


def ikev2_decryption_table(records: Iterable[IkeKeyRecord]) -> str:
    lines = []
    for record in records:
        names = _ike_names(record)
        if names is None:
            continue
        lines.append(
            f"{record.spi_i.hex()},{record.spi_r.hex()},{record.sk_ei.hex()},{record.sk_er.hex()},"
            f'"{names[0]}",{record.sk_ai.hex()},{record.sk_ar.hex()},"{names[1]}"'
        )
    return "".join(line + "\n" for line in lines)


def _esp_names(record: EspKeyRecord) -> tuple[str, str] | None:
    if record.encr_id in _GCM_ICV:
        # Wireshark 4 wants NULL authentication with AES-GCM (its ICV is part of the cipher); plain
        # "AES-GCM [RFC4106]" would leave the ICV in the ciphertext, so name the ICV length
        return f"AES-GCM with {_GCM_ICV[record.encr_id]} octet ICV [RFC4106]", "NULL"
    # not exported: ChaCha20-Poly1305 ESP (Wireshark 4.0 cannot decrypt it) and AES-CBC + HMAC ESP, whose
    # Wireshark names are not mapped yet; such SAs are left out of the table
    return None


def esp_sa_table(records: Iterable[EspKeyRecord]) -> str:
    lines = []
    for record in records:
        names = _esp_names(record)
        if names is None:
            continue
        family = "IPv4" if ipaddress.ip_address(record.src).version == 4 else "IPv6"
        integ_key = "0x" + record.integ_key.hex() if record.integ_key else ""
        lines.append(
            f'"{family}","{record.src}","{record.dst}","0x{record.spi.hex()}","{names[0]}",'
            f'"0x{record.key.hex()}","{names[1]}","{integ_key}"'
        )
    return "".join(line + "\n" for line in lines)


def write_wireshark_keys(endpoint: IkeEndpoint, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write both tables for every live SA of `endpoint` (files readable by the owner only)."""
    ike, esp = endpoint.key_records()
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    paths = (base / IKE_TABLE_NAME, base / ESP_TABLE_NAME)
    for path, text in zip(paths, (ikev2_decryption_table(ike), esp_sa_table(esp))):
        # no symlink following, and owner-only even when the file already existed with a wider mode
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    return paths
