"""Child SA lifetimes and ESP-aware liveness: what the data plane's counters mean to the engine.

A Child SA has soft limits (rekey it) and hard limits (delete it) on time, packets and inner bytes
(strongSwan's rekey_*/life_* settings, see `ChildConfig`). The ESP SAs count packets and bytes and
refuse traffic at their hard limit themselves; they have no way to call the engine back, and the
engine reads no clock, so the engine polls the counters of children with volume limits every
`LIFETIME_CHECK_INTERVAL` seconds from its own timer heap. Time limits are plain deadlines.

The same counters tell whether the peer is alive: strongSwan's DPD counts an inbound ESP packet as a
sign of life, and so do we (`inbound_rose`) before sending a DPD probe.

Everything here is a pure decision on one `ChildSa`; `exchanges.Exchanges` acts on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .child_sa import NO_LIMITS, ChildSa, VolumeLimits
from .config import ChildConfig
from .dataplane import DataPlaneSA

__all__ = [
    "LIFETIME_CHECK_INTERVAL",
    "MAX_SOFT_REKEYS",
    "Action",
    "Verdict",
    "volume_limits",
    "hard_deadline",
    "esp_counts",
    "assess",
    "inbound_rose",
]

# Seconds between polls of a child's ESP counters. Bounds how long traffic runs past a soft limit
# before the rekey starts; strongSwan's rekey_* defaults to "off", so most children are never polled.
LIFETIME_CHECK_INTERVAL = 10.0
# Rekeys one soft packet/byte limit starts (one per poll after a failure); then only the hard limit acts.
MAX_SOFT_REKEYS = 3


class Action(enum.Enum):
    NONE = "none"
    REKEY = "rekey"  # a soft limit is reached
    EXPIRE = "expire"  # a hard limit is reached: delete the child


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    limit: str = ""  # "packets", "bytes" or "time"


_NOTHING = Verdict(Action.NONE)


def volume_limits(cfg: ChildConfig) -> VolumeLimits:
    """The limits both ESP SAs of a child built from `cfg` carry."""
    limits = VolumeLimits(
        soft_packets=cfg.rekey_packets,
        hard_packets=cfg.hard_packets,
        soft_bytes=cfg.rekey_bytes,
        hard_bytes=cfg.hard_bytes,
    )
    return limits if limits.active else NO_LIMITS


def hard_deadline(cfg: ChildConfig, created_at: float) -> float | None:
    """When a child created at `created_at` is deleted on time (None: never)."""
    hard = cfg.hard_time
    return None if hard is None else created_at + hard


def esp_counts(sa: DataPlaneSA | None) -> tuple[int, int] | None:
    """(packets, inner bytes) an ESP SA processed; None if the factory's object has no usable counters."""
    if sa is None:
        return None
    try:
        stats = sa.stats
        return int(stats.packets), int(stats.bytes)
    except Exception:  # the ESP factory is user code: a missing/broken counter must not end the IKE SA
        return None


def _reached(value: int, limit: int) -> bool:
    return limit > 0 and value >= limit


def _quiet(sa: DataPlaneSA | None, limits: VolumeLimits) -> bool:
    """Cheap pre-check (a few times cheaper than reading `stats`): the SA enforces exactly `limits`
    and has not reached the soft one. False when unsure: then the counters decide."""
    if sa is None:
        return False
    try:
        lifetime = sa.lifetime
        return (
            lifetime.soft_packets == limits.soft_packets
            and lifetime.hard_packets == limits.hard_packets
            and lifetime.soft_bytes == limits.soft_bytes
            and lifetime.hard_bytes == limits.hard_bytes
            and sa.soft_expired is False
        )
    except Exception:  # a factory's object without these attributes
        return False


def assess(child: ChildSa, now: float) -> Verdict:
    """What a child's lifetimes ask for at `now`: hard limits first (on either ESP SA), then soft
    packet/byte limits. Soft time limits are `child.rekey_at`, handled by the engine's rekey timer."""
    if child.expire_at is not None and now >= child.expire_at:
        return Verdict(Action.EXPIRE, "time")
    limits = child.limits
    if not limits.active or (_quiet(child.inbound, limits) and _quiet(child.outbound, limits)):
        return _NOTHING
    counts = [c for c in (esp_counts(child.inbound), esp_counts(child.outbound)) if c is not None]
    for packets, nbytes in counts:
        if _reached(packets, limits.hard_packets):
            return Verdict(Action.EXPIRE, "packets")
        if _reached(nbytes, limits.hard_bytes):
            return Verdict(Action.EXPIRE, "bytes")
    for packets, nbytes in counts:
        if _reached(packets, limits.soft_packets):
            return Verdict(Action.REKEY, "packets")
        if _reached(nbytes, limits.soft_bytes):
            return Verdict(Action.REKEY, "bytes")
    return _NOTHING


def inbound_rose(child: ChildSa) -> bool:
    """True if the child's inbound ESP SA authenticated packets since the last call (the peer is
    alive); remembers the new count."""
    counts = esp_counts(child.inbound)
    if counts is None or counts[0] <= child.inbound_seen:
        return False
    child.inbound_seen = counts[0]
    return True
