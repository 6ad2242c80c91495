"""Access to the captured strongSwan corpus in tests/wire/corpus/strongswan/ (see MANIFEST.txt)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tshark import IkeDecryptionRow

CORPUS_DIR = Path(__file__).resolve().parents[1] / "wire" / "corpus" / "strongswan"


@dataclass(frozen=True)
class ManifestEntry:
    file: str
    description: str  # "<exchange> <req|resp> msgid=N from <initiator|responder>"
    udp: str
    size: int
    version: str
    proposals: str


def manifest(corpus: Path = CORPUS_DIR) -> list[ManifestEntry]:
    entries = []
    for line in (corpus / "MANIFEST.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        file, desc, udp, size, version, proposals = (f.strip() for f in line.split("|"))
        entries.append(ManifestEntry(file, desc, udp, int(size.split()[0]), version, proposals))
    return entries


def load_keys(name: str, corpus: Path = CORPUS_DIR) -> dict[str, Any]:
    """keys_<name>.json as a dict (hex strings as written)."""
    doc: dict[str, Any] = json.loads((corpus / f"keys_{name}.json").read_text())
    return doc


def decryption_rows(keys: dict[str, Any]) -> list[IkeDecryptionRow]:
    """tshark rows for every IKE SA of a keys_<name>.json document."""
    rows = []
    for sa in keys["ike_sas"]:
        rows.append(IkeDecryptionRow(
            spi_i=bytes.fromhex(sa["spi_i"]), spi_r=bytes.fromhex(sa["spi_r"]),
            sk_ei=bytes.fromhex(sa["sk_ei"]), sk_er=bytes.fromhex(sa["sk_er"]),
            encr=sa["encr"], encr_key_bits=sa["encr_keysize"],
            sk_ai=bytes.fromhex(sa.get("sk_ai", "")), sk_ar=bytes.fromhex(sa.get("sk_ar", "")),
            integ=sa["integ"]))
    return rows
