"""Independent check of IKE traffic with tshark: decrypt SK payloads given the IKE SA keys.

Keys go to tshark as rows of Wireshark's `ikev2_decryption_table` UAT (one `-o uat:...` per row):
    spi_i,spi_r,sk_ei,sk_er,"<encryption algorithm>",sk_ai,sk_ar,"<integrity algorithm>"
Hex fields are unquoted; the algorithm fields are quoted Wireshark names such as
"AES-GCM-128 with 16 octet ICV [RFC5282]" or "HMAC_SHA2_256_128 [RFC4868]" (checked against
Wireshark 4.0.17). For AEAD ciphers SK_e is key||salt, as strongSwan logs it. Wireshark 4.0 cannot
decrypt ChaCha20-Poly1305 IKE SAs.

`decode_ike(pcap, rows)` returns, per IKE message, the exchange type, message ID, the list of
top-level payload types including those tshark found inside a decrypted SK payload, and whether
the ICV verified (tshark "decrypts" with a wrong key too, so check `authenticated`).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TSHARK = shutil.which("tshark") or "/usr/bin/tshark"
TSHARK_TIMEOUT = 60.0  # seconds for one tshark run over a small capture

# strongSwan's `swanctl --list-sas` algorithm names -> Wireshark's UAT names.
_ENCR = {
    ("AES_CBC", 128): "AES-CBC-128 [RFC3602]",
    ("AES_CBC", 192): "AES-CBC-192 [RFC3602]",
    ("AES_CBC", 256): "AES-CBC-256 [RFC3602]",
    ("AES_CTR", 128): "AES-CTR-128 [RFC5930]",
    ("AES_CTR", 192): "AES-CTR-192 [RFC5930]",
    ("AES_CTR", 256): "AES-CTR-256 [RFC5930]",
    **{(f"AES_GCM_{icv}", bits): f"AES-GCM-{bits} with {icv} octet ICV [RFC5282]"
       for icv in (8, 12, 16) for bits in (128, 192, 256)},
    **{(f"AES_CCM_{icv}", bits): f"AES-CCM-{bits} with {icv} octet ICV [RFC5282]"
       for icv in (8, 12, 16) for bits in (128, 192, 256)},
    ("3DES_CBC", 0): "3DES [RFC2451]",
    ("NULL", 0): "NULL [RFC2410]",
}
_INTEG = {
    None: "NONE [RFC4306]",
    "HMAC_MD5_96": "HMAC_MD5_96 [RFC2403]",
    "HMAC_SHA1_96": "HMAC_SHA1_96 [RFC2404]",
    "HMAC_SHA2_256_128": "HMAC_SHA2_256_128 [RFC4868]",
    "HMAC_SHA2_384_192": "HMAC_SHA2_384_192 [RFC4868]",
    "HMAC_SHA2_512_256": "HMAC_SHA2_512_256 [RFC4868]",
}
PAYLOAD_SK = 46
FIRST_IKEV2_PAYLOAD = 33  # tshark's payload list also holds SA substructures (2 = proposal, 3 = transform)


class TsharkError(RuntimeError):
    """tshark is missing, failed, or an algorithm has no Wireshark UAT name."""


def wireshark_encr(strongswan_name: str, key_bits: int) -> str:
    name = _ENCR.get((strongswan_name, key_bits)) or _ENCR.get((strongswan_name, 0))
    if name is None:
        raise TsharkError(f"no Wireshark IKEv2 decryption support for {strongswan_name}/{key_bits}")
    return name


def wireshark_integ(strongswan_name: str | None) -> str:
    name = _INTEG.get(strongswan_name)
    if name is None:
        raise TsharkError(f"no Wireshark IKEv2 integrity algorithm for {strongswan_name}")
    return name


@dataclass(frozen=True)
class IkeDecryptionRow:
    """One row of `ikev2_decryption_table`. Keys as bytes; algorithms as strongSwan names."""

    spi_i: bytes
    spi_r: bytes
    sk_ei: bytes
    sk_er: bytes
    encr: str  # e.g. "AES_GCM_16", "AES_CBC"
    encr_key_bits: int
    sk_ai: bytes = b""
    sk_ar: bytes = b""
    integ: str | None = None  # e.g. "HMAC_SHA2_256_128"; None for AEAD

    def uat(self) -> str:
        return (f"{self.spi_i.hex()},{self.spi_r.hex()},{self.sk_ei.hex()},{self.sk_er.hex()},"
                f"\"{wireshark_encr(self.encr, self.encr_key_bits)}\","
                f"{self.sk_ai.hex()},{self.sk_ar.hex()},\"{wireshark_integ(self.integ)}\"")


@dataclass(frozen=True)
class DecodedIkeMessage:
    frame: int
    spi_i: str
    exchange_type: int
    message_id: int
    payloads: list[int]  # top-level payload types; those decrypted from SK follow the 46
    decrypted: bool  # tshark had a key for this SA and ran the decryption
    authenticated: bool  # ... and the ICV / GCM tag checked out (False: wrong key or corrupt)


def decode_ike(pcap: Path, rows: Sequence[IkeDecryptionRow] = ()) -> list[DecodedIkeMessage]:
    """Run tshark over `pcap` with the given keys and return every IKE message it dissected."""
    if not Path(TSHARK).exists():
        raise TsharkError(f"{TSHARK} not found: install the Debian package tshark")
    args = [TSHARK, "-n", "-r", str(pcap)]
    for row in rows:
        args += ["-o", f"uat:ikev2_decryption_table:{row.uat()}"]
    args += ["-Y", "isakmp", "-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,",
             "-e", "frame.number", "-e", "isakmp.ispi", "-e", "isakmp.exchangetype",
             "-e", "isakmp.messageid", "-e", "isakmp.typepayload", "-e", "isakmp.enc.decrypted",
             "-e", "isakmp.ikev2.integrity_checksum"]  # present only when the ICV is wrong
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
        frame, spi, exch, msgid, types, decrypted, bad_icv = fields
        payloads = [int(t) for t in types.split(",") if t and int(t) >= FIRST_IKEV2_PAYLOAD]
        out.append(DecodedIkeMessage(int(frame), spi, int(exch.split(",")[0]), int(msgid.split(",")[0], 16),
                                     payloads, bool(decrypted), bool(decrypted) and not bad_icv))
    return out
