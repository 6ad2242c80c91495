"""Work an established IKE SA starts on its own when a deadline passes: IKE and Child SA rekeys on
time, Child SA lifetimes (soft: rekey; hard: delete; see `ikev2lib.lifetimes`), DPD (RFC 7296 2.4), and
the deletion of a redirected client that stayed (`IkeSa.delete_at`, RFC 5685).

Runs only while the request window is free; at most one request is started per call.
"""

from __future__ import annotations

from ..child_sa import ChildSa
from ..events import ChildSaExpired
from ..ike_sa import IkeSa
from .. import lifetimes
from ..lifetimes import MAX_SOFT_REKEYS, Action, assess, inbound_rose
from ..state import ChildState
from . import child_create, ike_rekey, informational

__all__ = ["next_deadline", "start_due_work"]

# Child states in which lifetimes act: an installed child, or one replaced by the peer's rekey that
# still waits for its Delete (in-flight rekeys and deletes finish first).
_LIFETIME_STATES = (ChildState.INSTALLED, ChildState.REKEYED)


def next_deadline(sa: IkeSa) -> float | None:
    times: list[float] = []
    if sa.delete_at is not None:
        times.append(sa.delete_at)
    if sa.rekey_at is not None:
        times.append(sa.rekey_at)
    for child in sa.children.values():
        if child.rekey_at is not None and child.state == ChildState.INSTALLED:
            times.append(child.rekey_at)
        if child.state in _LIFETIME_STATES:
            if child.expire_at is not None:
                times.append(child.expire_at)
            if child.lifetime_check_at is not None:
                times.append(child.lifetime_check_at)
    if sa.config.dpd_delay is not None:
        times.append(sa.last_heard + sa.config.dpd_delay)
    return min(times) if times else None


def start_due_work(sa: IkeSa, now: float) -> None:
    if sa.delete_at is not None and now >= sa.delete_at:
        sa.delete_at = None
        informational.start_ike_delete(sa, now)
        return
    if sa.rekey_at is not None and now >= sa.rekey_at:
        sa.rekey_at = None
        ike_rekey.start(sa, now)
        return
    if _check_lifetimes(sa, now):
        return
    for child in list(sa.children.values()):
        if child.rekey_at is not None and child.state == ChildState.INSTALLED and now >= child.rekey_at:
            child.rekey_at = None
            _emit_expired(sa, child, "time", hard=False)
            _rekey(sa, child, now)
            return
    if sa.config.dpd_delay is not None and now >= sa.last_heard + sa.config.dpd_delay:
        if _esp_alive(sa):
            sa.last_heard = now  # inbound ESP since the last look: alive, no probe (as strongSwan)
            return
        informational.start_dpd(sa, now)


def _rekey(sa: IkeSa, child: ChildSa, now: float) -> None:
    cfg = sa.find_child_config(child.config_name)
    if cfg is not None:  # a configuration reload may have removed it: the child then runs to its hard limit
        child_create.start(sa, cfg, child, now)


def _esp_alive(sa: IkeSa) -> bool:
    alive = False
    for child in sa.children.values():
        alive = inbound_rose(child) or alive  # look at every child: each remembers its count
    return alive


def _check_lifetimes(sa: IkeSa, now: float) -> bool:
    """Act on children whose hard deadline or counter poll is due: delete on a hard limit, rekey on
    a soft one (not while a rekey runs). True if that started a request."""
    for child in list(sa.children.values()):
        if child.state not in _LIFETIME_STATES:
            continue
        expire_due = child.expire_at is not None and now >= child.expire_at
        poll_due = child.lifetime_check_at is not None and now >= child.lifetime_check_at
        if not (expire_due or poll_due):
            continue
        if child.lifetime_check_at is not None:
            child.lifetime_check_at = now + lifetimes.LIFETIME_CHECK_INTERVAL
        verdict = assess(child, now)
        if verdict.action is Action.EXPIRE:
            child.expire_at = child.lifetime_check_at = None  # acted on: never again for this child
            _emit_expired(sa, child, verdict.limit, hard=True)
            informational.start_child_delete(sa, child.child_id, now)
            return True
        if verdict.action is Action.REKEY and child.state == ChildState.INSTALLED and child.soft_rekeys < MAX_SOFT_REKEYS:
            child.soft_rekeys += 1
            child.rekey_at = None  # this rekey also stands for a pending rekey on time
            _emit_expired(sa, child, verdict.limit, hard=False)
            _rekey(sa, child, now)
            return True
    return False


def _emit_expired(sa: IkeSa, child: ChildSa, limit: str, *, hard: bool) -> None:
    sa.ctx.emit(
        ChildSaExpired(
            ike_sa_id=sa.ike_sa_id, child_id=child.child_id, spi_in=child.spi_in, spi_out=child.spi_out,
            limit=limit, hard=hard,
        )
    )  # fmt: skip
