"""The keys of live SAs as plain records: what the explicit key-export feature (keyexport.py) writes.

Only `IkeEndpoint.key_records` builds them, and only for an endpoint made with allow_key_export=True.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .ike_sa import IkeSa

__all__ = ["IkeKeyRecord", "EspKeyRecord", "key_records"]


@dataclass(frozen=True, kw_only=True)
class IkeKeyRecord:
    """Keys of one live IKE SA, for Wireshark's ikev2_decryption_table (see keyexport.py)."""

    spi_i: bytes
    spi_r: bytes
    encr_id: int
    encr_key_bits: int | None
    integ_id: int | None
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class EspKeyRecord:
    """Keys of one direction of a live Child SA, for Wireshark's esp_sa table."""

    src: str
    dst: str
    spi: bytes
    encr_id: int
    encr_key_bits: int | None
    key: bytes = field(repr=False)  # encryption key || salt
    integ_key: bytes = field(repr=False)


def key_records(sas: Iterable[IkeSa]) -> tuple[list[IkeKeyRecord], list[EspKeyRecord]]:
    """Records for every live IKE SA in `sas` and both directions of each of its Child SAs."""
    ike: list[IkeKeyRecord] = []
    esp: list[EspKeyRecord] = []
    for sa in sas:
        if sa.keys is None or sa.selected is None or sa.finished:
            continue
        sel = sa.selected
        ike.append(
            IkeKeyRecord(
                spi_i=sa.spi_i, spi_r=sa.spi_r, encr_id=sel.encr_id, encr_key_bits=sel.encr_key_bits,
                integ_id=sel.integ_id, sk_ei=sa.keys.sk_ei, sk_er=sa.keys.sk_er, sk_ai=sa.keys.sk_ai,
                sk_ar=sa.keys.sk_ar,
            )
        )  # fmt: skip
        remote_ip, local_ip = sa.remote_addr[0], sa.local_addr[0]
        for child in sa.children.values():
            encr_id, bits = child.selected.encr_id, child.selected.encr_key_bits
            esp.append(
                EspKeyRecord(
                    src=remote_ip, dst=local_ip, spi=child.spi_in, encr_id=encr_id, encr_key_bits=bits,
                    key=child.keys_in[0], integ_key=child.keys_in[1],
                )
            )  # fmt: skip
            esp.append(
                EspKeyRecord(
                    src=local_ip, dst=remote_ip, spi=child.spi_out, encr_id=encr_id, encr_key_bits=bits,
                    key=child.keys_out[0], integ_key=child.keys_out[1],
                )
            )  # fmt: skip
    return ike, esp
