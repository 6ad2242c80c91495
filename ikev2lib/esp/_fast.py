"""The C back end: `EspSA` and `SATable` over the Cython module `ikev2lib._esp_fast`."""

from __future__ import annotations

from collections.abc import Iterable

from ikev2lib import _esp_fast
from ikev2lib._esp_fast import ReplayWindow, recv_batch, send_batch, udp_classify
from ikev2lib.esp._base import SAInfo
from ikev2lib.esp.errors import EspUsageError, Status
from ikev2lib.esp.params import Direction, Mode, SAConfig

__all__ = ["EspSA", "SATable", "ReplayWindow", "udp_classify", "send_batch", "recv_batch", "BACKEND"]

BACKEND = "c"


class EspSA(SAInfo, _esp_fast.CoreSA):
    """One unidirectional ESP SA (see `ikev2lib.esp` for the full description)."""

    def _setup(self, cfg: SAConfig) -> None:
        udp = cfg.udp_encap
        sport, dport = udp or (0, 0)
        lt = cfg.lifetime
        # Raises if this object was already configured: re-initializing would restart the sequence
        # numbers (and so the IVs) under the same key.
        self._configure(
            cfg.spi, cfg.alg, cfg.key, cfg.salt, cfg.icv_len, cfg.direction is Direction.OUTBOUND,
            cfg.mode is Mode.TUNNEL, cfg.esn, cfg.replay_window, udp is not None, sport, dport,
            lt.soft_packets, lt.hard_packets, lt.soft_bytes, lt.hard_bytes, cfg.integ_key or None,
        )  # fmt: skip
        self._config = cfg


class SATable(_esp_fast.CoreSATable):
    """Inbound SAs keyed by SPI for `decap_batch` (packets with another SPI get Status.UNKNOWN_SPI)."""

    def __init__(self, sas: Iterable[EspSA]) -> None:
        sas = list(sas)
        for sa in sas:
            if not isinstance(sa, EspSA):
                raise EspUsageError("SATable takes EspSA objects of the same back end")
        udp = {sa.udp_encap is not None for sa in sas}
        if len(udp) > 1:
            raise EspUsageError("all SAs of a table must agree on UDP encapsulation")
        self.sas = tuple(sas)
        self.udp_encap = udp == {True}
        self._configure(list[_esp_fast.CoreSA](sas), [sa.spi for sa in sas], self.udp_encap)

    @property
    def drops(self) -> dict[str, int]:
        """Packets refused before an SA was found (unknown SPI, not ESP, too short), by reason."""
        return {Status(i).name.lower(): n for i, n in enumerate(self._drops()) if i and n}
