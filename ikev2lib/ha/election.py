"""Leader election on etcd: the one gateway that may write the replicated state.

Campaigning is one transaction: create `<prefix>/leader` (value: our name) with our lease, only if
it does not exist (create_revision == 0). The winner keeps its lease alive every TTL/3; the key's
create revision is the fence (`Fence`) every replicated write compares, so once the lease lapses
and etcd deletes the key, or the next leader re-creates it at a higher revision, the old leader's
writes fail in etcd itself, whatever its clock says. The standby polls the key every
`poll_interval` and campaigns when it is gone.

A leader learns that it was deposed when etcd answers a keepalive with "lease expired", or, when
etcd does not answer at all, when its lease has lapsed by its own clock (measured from the sending
of the last keepalive etcd answered, so never later than etcd's own expiry): within about the TTL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .store import EtcdStore, Fence, Lease, LeaseExpired, StoreError

__all__ = ["DEFAULT_TTL", "POLL_INTERVAL", "KEY_PREFIX", "Election"]

log = logging.getLogger(__name__)

DEFAULT_TTL = 5  # seconds: the leader's lease; a standby takes over within about this after a failure
POLL_INTERVAL = 0.25  # seconds between a standby's looks at the leader key
KEY_PREFIX = "ikev2lib/ha"
MIN_KEEPALIVE_WAIT = 0.05  # seconds: the shortest deadline given to a keepalive
KEEPALIVE_RETRY = 0.05  # seconds between a failed keepalive and the next attempt


class Election:
    """`Election(store, name, ttl)`: `start()` campaigns in the background, `stop()` ends it (and,
    by default, resigns: revoking the lease hands over at once). `on_elected(fence)` and
    `on_deposed(reason)` are called from the event loop when leadership is won and lost."""

    def __init__(self, store: EtcdStore, name: str, ttl: int = DEFAULT_TTL, *, prefix: str = KEY_PREFIX,
                 poll_interval: float = POLL_INTERVAL,
                 on_elected: Callable[[Fence], None] | None = None,
                 on_deposed: Callable[[str], None] | None = None,
                 keep_while_unreachable: bool = False) -> None:
        if ttl < 1:
            raise ValueError("the lease TTL must be at least 1 second")
        self.store = store
        self.name = name
        self.ttl = ttl
        self.key = f"{prefix}/leader"
        self.poll_interval = poll_interval
        self._on_elected = on_elected
        self._on_deposed = on_deposed
        # True: a leader that cannot reach etcd at all stays leader until etcd says otherwise (an
        # expired lease, a refused fenced write). Only for users that bound what a leader cut off from
        # etcd can do wrong (the HA gateway: sequence limits); the default deposes by our own clock.
        self.keep_while_unreachable = keep_while_unreachable
        self._fence: Fence | None = None
        self._lease: Lease | None = None
        self._valid_until = 0.0  # monotonic time our lease lapses at the latest, by our clock
        self._renew_failed = False
        self._campaign_after = 0.0  # monotonic time before which we do not campaign (after resigning)
        self._elected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    @property
    def is_leader(self) -> bool:
        return self._fence is not None

    @property
    def fence(self) -> Fence | None:
        """The fence of our leadership (None: not the leader); pass it to fenced writes."""
        return self._fence

    @property
    def leader_revision(self) -> int | None:
        """The create revision of our leader key: the fence value (None: not the leader)."""
        return self._fence.revision if self._fence is not None else None

    @property
    def lease_id(self) -> int | None:
        return self._lease.id if self._lease is not None else None

    async def leader(self) -> str | None:
        """The name of the current leader (as etcd has it), None when there is none."""
        info = await self.store.get(self.key)
        return info.value.decode("utf-8", "replace") if info is not None else None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ha-election-{self.name}")

    async def stop(self, *, resign: bool = True) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if resign:
            await self.resign()

    async def resign(self) -> None:
        """Give leadership up: revoke the lease (etcd deletes the leader key with it), and stay out of
        the campaign for one TTL, so that a standby takes over rather than we again."""
        lease = self._lease
        if lease is None:
            return
        self._campaign_after = time.monotonic() + self.ttl
        self._lose("resigned")
        try:
            await self.store.revoke(lease.id)
        except StoreError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"  # the lease lapses by itself within the TTL

    async def wait_elected(self, timeout: float) -> Fence:
        """Wait until we are the leader; TimeoutError after `timeout` seconds."""
        await asyncio.wait_for(self._elected.wait(), timeout)
        fence = self._fence
        if fence is None:
            raise TimeoutError("deposed again before wait_elected returned")
        return fence

    def _lose(self, reason: str) -> None:
        if self._fence is None:
            return
        log.warning("%s: no longer the leader of %s: %s", self.name, self.key, reason)
        self._fence = None
        self._lease = None
        self._elected.clear()
        if self._on_deposed is not None:
            try:
                self._on_deposed(reason)
            except Exception:  # the election goes on whatever the callback does
                log.exception("%s: on_deposed callback failed", self.name)

    async def _run(self) -> None:
        while True:
            if self._fence is None:
                await self._campaign()
            else:
                await self._keep()

    async def _campaign(self) -> None:
        hold = self._campaign_after - time.monotonic()
        if hold > 0:
            await asyncio.sleep(hold)
        try:
            if await self.store.get(self.key) is None:
                sent = time.monotonic()
                lease = await self.store.grant(self.ttl)
                revision = await self.store.create(self.key, self.name.encode(), lease=lease.id)
                if revision is None:
                    await self.store.revoke(lease.id)  # someone else was faster
                else:
                    self._lease = lease
                    self._valid_until = sent + lease.ttl
                    self._renew_failed = False
                    self._fence = Fence(key=self.key, revision=revision)
                    self._elected.set()
                    log.info("%s: leader of %s (revision %d)", self.name, self.key, revision)
                    if self._on_elected is not None:
                        try:
                            self._on_elected(self._fence)
                        except Exception:  # the election goes on whatever the callback does
                            log.exception("%s: on_elected callback failed", self.name)
                    return
        except StoreError as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(self.poll_interval)

    async def _keep(self) -> None:
        lease = self._lease
        if lease is None:  # only ever None together with the fence
            self._lose("no lease")
            return
        # every TTL/3 while renewals succeed, at once after a failed one; each attempt gets at most
        # TTL/3, so a call hanging on a dead member or a raft election leaves time for more attempts
        interval = lease.ttl / 3
        wait = KEEPALIVE_RETRY if self._renew_failed else interval
        keep = self.keep_while_unreachable
        await asyncio.sleep(wait if keep else min(wait, max(0.0, self._valid_until - time.monotonic())))
        sent = time.monotonic()
        left = self._valid_until - sent
        if left <= 0 and not keep:
            self._lose(f"the lease lapsed before etcd renewed it ({self.last_error})")
            return
        try:
            timeout = interval if keep else max(min(left, interval), MIN_KEEPALIVE_WAIT)
            ttl = await asyncio.wait_for(self.store.keepalive(lease.id), timeout)
        except LeaseExpired:
            self._lose("etcd says the lease expired")
            return
        except (StoreError, asyncio.TimeoutError, TimeoutError) as exc:
            self._renew_failed = True
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.debug("%s: keepalive failed, %.2f s of lease left: %s", self.name,
                      self._valid_until - time.monotonic(), self.last_error)
            if time.monotonic() >= self._valid_until and not keep:
                self._lose(f"the lease lapsed while etcd was unreachable ({self.last_error})")
            return
        self._renew_failed = False
        if self._lease is lease:
            self._valid_until = sent + ttl
