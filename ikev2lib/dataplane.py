"""The seam between the engine and the ESP data plane: what an ESP SA object must offer.

The engine builds ESP SAs through an `EspFactory` (child_sa.py) and hands them to the user in events;
`ikev2lib.esp.EspSA` (either back end) is the default. The engine itself only reads counters and
lifetimes (lifetimes.py, and it tolerates objects without them, since a factory may be user code);
drivers move packets with `encap`/`decap`. High availability (`ikev2lib.ha`) also needs the
sequence state of `HandOverSA`, which `ikev2lib.esp.EspSA` has.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["EspCounters", "EspLimits", "DataPlaneSA", "HandOverSA"]


class EspCounters(Protocol):
    @property
    def packets(self) -> int: ...

    @property
    def bytes(self) -> int: ...


class EspLimits(Protocol):
    @property
    def soft_packets(self) -> int: ...

    @property
    def hard_packets(self) -> int: ...

    @property
    def soft_bytes(self) -> int: ...

    @property
    def hard_bytes(self) -> int: ...


class DataPlaneSA(Protocol):
    """One direction of a Child SA in the data plane."""

    def encap(self, inner: bytes) -> bytes: ...

    def decap(self, packet: bytes) -> tuple[int, bytes]: ...

    @property
    def stats(self) -> EspCounters: ...

    @property
    def lifetime(self) -> EspLimits: ...

    @property
    def soft_expired(self) -> bool: ...


@runtime_checkable
class HandOverSA(DataPlaneSA, Protocol):
    """An ESP SA whose sequence state can move to another process (never backwards)."""

    @property
    def replay_window(self) -> int: ...

    @property
    def next_sequence(self) -> int: ...

    @property
    def highest_sequence(self) -> int: ...

    def advance_sequence(self, next_seq: int) -> None: ...

    def limit_sequence(self, last_allowed: int | None) -> None: ...
