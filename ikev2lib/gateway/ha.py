"""Active-passive high availability of `ikev2lib run` on etcd (TOML `[ha]`).

Two or more gateways of one cluster run the same configuration. The one elected leader
(`ikev2lib.ha.election`: a lease-bound key in etcd) holds the service address and serves; the others
stand by with their sockets bound to that address (ip_nonlocal_bind) and the replicated records
decrypted in memory. Keys, under /ikev2lib/<cluster>/: `leader`, `heartbeat`, `sa/<ike_sa_id>`.

Leader:
- Every IKE SA that received, sent or changed anything is captured (`ikev2lib.ha.snapshot`), sealed
  under the cluster key and queued for etcd (`ReplicationQueue`: coalesced per SA, batched, fenced
  with the leader key's revision). Its IKE datagrams wait until the queue has flushed (at most
  GATE_TIMEOUT): a standby never lacks a message ID, a cached response or a request the peer saw.
  When etcd is away the gate opens after GATE_TIMEOUT and the gateway serves on (the election does
  not depose a leader that merely cannot reach etcd), the queue keeps the newest record per SA and
  catches up when etcd is back.
- Every outbound ESP SA has a sequence limit: below where a standby restoring its newest record in
  etcd would start. The limit rises when a newer record is confirmed; an SA that used up its margin
  while etcd is away stops sending. So even a leader cut off from etcd while a standby took over
  never uses a sequence number (a nonce) the new leader uses.
- ESP sequence numbers move without IKE: an SA whose outbound counters advanced REFRESH_PACKETS since
  its last record is recorded again (looked at every SEQ_REFRESH seconds).
- A heartbeat key, written every `heartbeat` seconds, lets the standby notice a dead leader long
  before its lease lapses.

Standby:
- Watches the heartbeat; when it is `dead_after` old, revokes the leader's lease (the leader key goes
  with it), so the election picks a new leader at once instead of after the lease TTL. A leader that
  is in fact alive (paused, partitioned from etcd) learns at its next keepalive that it was deposed.
- On election: reads every record in one consistent view, restores them into its endpoint (counters
  jump ahead: nothing the old leader sent is ever repeated), installs the Child SAs in its data path,
  adds the service address and announces it (gratuitous ARP), then leads.

A deposed leader stops its data path, gives up the address and exits at once (EXIT_DEPOSED), without
deleting any SA: the peers' SAs are the new leader's now. A leader that is stopped (SIGTERM) hands
over: it flushes its records and resigns, and the standby takes over within its poll interval.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import LocalProtocolError
from ..ha.election import Election
from ..ha.snapshot import HandOver, SnapshotError, capture, restore, seal, unseal
from ..ha.store import EtcdStore, NotLeader, ReplicationQueue, StoreError
from ..ike_sa import IkeSa
from ..state import IkeState
from . import service_address
from .model import HaConfig

if TYPE_CHECKING:
    from ..endpoint import IkeEndpoint
    from .run import Gateway, _Listener

__all__ = ["HighAvailability", "EXIT_DEPOSED", "GATE_TIMEOUT", "HAND_OVER"]

log = logging.getLogger("ikev2lib.gateway.ha")

EXIT_DEPOSED = 3  # the process's exit status when it lost the leadership
GATE_TIMEOUT = 0.5  # seconds an IKE message waits for its SA's record to reach etcd before it goes anyway
FLUSH_INTERVAL = 0.002  # seconds the replication queue gathers changes: IKE messages wait for it
SEQ_REFRESH = 0.5  # seconds between looks at the ESP counters
# counters jump this far on takeover; records are refreshed after a quarter of it, so a leader would
# have to send three quarters of a margin between two looks to come near the standby's numbers
HAND_OVER = HandOver(esp_seq_margin=1 << 24, iv_margin=1 << 32)
REFRESH_PACKETS = HAND_OVER.esp_seq_margin // 4
WATCH_INTERVAL = 0.05  # seconds between the standby's looks at the heartbeat
WARM_REFRESH = 1.0  # seconds between the standby's reads of the records
ETCD_RECOVERY_GRACE = 3.0  # seconds after etcd was unreachable before the leader's silence counts
ELECTION_POLL = 0.05  # seconds between a standby's looks at the leader key


class HighAvailability:
    def __init__(self, gateway: Gateway, config: HaConfig) -> None:
        self.gateway = gateway
        self.config = config
        self.prefix = f"ikev2lib/{config.cluster}"
        self.role = "starting"
        self.store = EtcdStore(config.etcd)
        self.election = Election(self.store, config.node, config.lease, prefix=self.prefix,
                                 poll_interval=ELECTION_POLL, on_elected=self._elected, on_deposed=self._deposed,
                                 keep_while_unreachable=True)
        self.queue = ReplicationQueue(self.store, fence=lambda: self.election.fence, flush_interval=FLUSH_INTERVAL,
                                      on_overflow=self._overflowed)
        self.leader: str | None = None
        self.restored = 0
        self.takeover_ms: float | None = None
        self.gate_timeouts = 0
        self._warm: dict[str, dict[str, Any]] = {}  # the standby's decrypted records, by key
        self._recorded_out: dict[int, int] = {}  # ike_sa_id -> outbound packets when last recorded
        # ike_sa_id -> the sequence limits its last record allows, once etcd has it (see _confirm)
        self._unconfirmed: dict[int, list[tuple[Any, int]]] = {}
        self._limits: dict[int, int] = {}  # id(outbound ESP SA) -> the limit set on it
        self._tasks: list[asyncio.Task[None]] = []
        self._resync = False

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def _listener(self) -> _Listener:
        if not self.gateway.listeners:
            raise LocalProtocolError("ha: the gateway has no listener")
        return self.gateway.listeners[0]

    @property
    def _endpoint(self) -> IkeEndpoint:
        return self._listener.driver.endpoint

    async def start(self) -> None:
        await self.store.connect()
        self.role = "standby"
        self.queue.start()
        self.election.start()
        self._spawn(self._watch_leader(), "ha-watch")
        log.info("ha: %s in cluster %s, etcd %s", self.config.node, self.config.cluster, ", ".join(self.config.etcd))

    async def stop(self) -> None:
        """Hand over: the last records reach etcd, the lease is revoked (the standby takes over at
        once), the address goes. No SA is deleted."""
        leading = self.role == "leader"
        self.role = "stopped"
        for task in self._tasks:
            task.cancel()
        if leading:
            self._record(set(self._endpoint.ike_sa_ids()))
            await self.queue.drain(GATE_TIMEOUT * 4)
        await self.election.stop(resign=True)
        await self.queue.stop()
        if leading:
            self._release_address()
        await self.store.close()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        task.add_done_callback(_log_failure)
        self._tasks.append(task)

    def status(self) -> dict[str, Any]:
        stats = self.queue.stats
        return {"role": self.role, "node": self.config.node, "leader": self.leader, "replicated": stats.flushed,
                "pending": stats.pending, "replication_errors": stats.retries, "last_error": stats.last_error,
                "restored": self.restored, "takeover_ms": self.takeover_ms, "gate_timeouts": self.gate_timeouts}

    # ---- standby -----------------------------------------------------------------------------------

    async def _watch_leader(self) -> None:
        """The heartbeat: a leader silent for dead_after is deposed (its lease revoked). Also keeps
        the records warm."""
        heartbeat_key = f"{self.prefix}/heartbeat"
        last_value: bytes | None = None
        last_change = time.monotonic()
        warm_at = 0.0
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.role != "standby":
                continue
            now = time.monotonic()
            try:
                if now >= warm_at:
                    warm_at = now + WARM_REFRESH
                    await self._warm_up()
                beat = await self.store.get(heartbeat_key)
                leader = await self.store.get(self.election.key)
            except StoreError as exc:
                log.debug("ha: etcd: %s", exc)
                # silence we could not watch is no evidence: once etcd is back, the leader gets
                # ETCD_RECOVERY_GRACE to reconnect before its silence counts
                last_value, last_change = None, time.monotonic() + ETCD_RECOVERY_GRACE
                continue
            name = None if leader is None else leader.value.decode("utf-8", "replace")
            if name != self.leader and name is not None:
                log.info("ha: standby of %s", name)
            self.leader = name
            value = None if beat is None else beat.value
            if leader is None or value != last_value:
                # a new beat: alive (after an etcd outage the clock stays at the end of the grace)
                last_value, last_change = value, max(now, last_change)
                continue
            if now - last_change >= self.config.dead_after and leader.lease:
                log.warning("ha: leader %s silent for %.2f s: revoking its lease", self.leader, now - last_change)
                last_change = now
                try:
                    await self.store.revoke(leader.lease)
                except StoreError as exc:
                    log.error("ha: cannot depose %s: %s", self.leader, exc)

    async def _warm_up(self) -> None:
        """Decrypt and parse the records now, so that a takeover only rebuilds objects."""
        read = await self.store.get_prefix(f"{self.prefix}/sa/")
        warm: dict[str, dict[str, Any]] = {}
        for key, blob in read.items.items():
            cached = self._warm.get(key)
            if cached is not None and cached["_blob"] == blob:
                warm[key] = cached
                continue
            try:
                record = unseal(blob, self.config.key, key.encode())
            except SnapshotError as exc:
                log.error("ha: %s: %s", key, exc)
                continue
            record["_blob"] = blob
            warm[key] = record
        self._warm = warm

    # ---- takeover ----------------------------------------------------------------------------------

    def _elected(self, fence: object) -> None:
        self.leader = self.config.node
        self._spawn(self._take_over(), "ha-takeover")

    async def _take_over(self) -> None:
        started = time.monotonic()
        self.role = "taking over"
        try:
            await self._warm_up()  # one consistent read of every record, decrypting only the new ones
        except StoreError as exc:
            log.error("ha: reading the records failed (%s): taking over what was read before", exc)
        listener = self._listener
        endpoint = listener.driver.endpoint
        now, wall = listener.driver.loop.time(), time.time()
        restored = 0
        for key, record in sorted(self._warm.items()):
            try:
                restore(endpoint, record, now, wall, HAND_OVER)
                restored += 1
            except SnapshotError as exc:
                log.error("ha: %s not restored: %s", key, exc)
        self._warm = {}
        # Nothing is sent on a restored Child SA before etcd has its new counters: another takeover
        # from the old record would start at the very numbers we start at.
        for sa in endpoint.connections():
            for child in sa.children.values():
                outbound = child.outbound
                if outbound is not None and hasattr(outbound, "limit_sequence"):
                    outbound.limit_sequence(max(1, int(getattr(outbound, "next_sequence")) - 1))
        self._record(set(endpoint.ike_sa_ids()))  # the new counters; _confirm lifts the limits
        endpoint.track_changes = True
        listener.driver.send_gate = self._gate
        with listener.datapath.batch() if listener.datapath is not None else contextlib.nullcontext():
            listener.driver.transmit()  # the events install the Child SAs; requests in flight wait for etcd
        self._spawn(self._confirm(GATE_TIMEOUT * 4), "ha-confirm")
        try:
            service_address.add_address(self.config.service_interface, self.config.service_address)
            service_address.announce(self.config.service_interface, self.config.service_address)
        except OSError as exc:
            log.error("ha: service address: %s", exc)
        self.restored = restored
        self.takeover_ms = round((time.monotonic() - started) * 1000, 1)
        self.role = "leader"
        log.info("ha: leading; took over %d IKE SAs in %.1f ms", restored, self.takeover_ms)
        self._spawn(self._heartbeat(), "ha-heartbeat")
        self._spawn(self._refresh_counters(), "ha-counters")
        self.gateway.start_connections()

    def _deposed(self, reason: str) -> None:
        if self.role in ("stopped", "standby", "starting"):
            return
        log.critical("ha: deposed (%s): stopping the data path and exiting without deleting any SA", reason)
        self.role = "deposed"
        listener = self.gateway.listeners[0] if self.gateway.listeners else None
        if listener is not None and listener.datapath is not None:
            listener.datapath.stop()  # before anything else: the workers must not send another packet
        self._release_address()
        logging.shutdown()
        os._exit(EXIT_DEPOSED)

    def _release_address(self) -> None:
        try:
            service_address.remove_address(self.config.service_interface, self.config.service_address)
        except OSError as exc:
            log.error("ha: service address: %s", exc)

    # ---- replication (leader) ------------------------------------------------------------------------

    def _key(self, ike_sa_id: int) -> str:
        return f"{self.prefix}/sa/{ike_sa_id}"

    def _record(self, ike_sa_ids: set[int]) -> int:
        endpoint = self._endpoint
        now, wall = self._listener.driver.loop.time(), time.time()
        recorded = 0
        for ike_sa_id in ike_sa_ids:
            key = self._key(ike_sa_id)
            try:
                sa: IkeSa | None = endpoint.connection(ike_sa_id)
            except LocalProtocolError:
                sa = None
            if sa is None or sa.finished:
                self.queue.record(key, None)
                self._recorded_out.pop(ike_sa_id, None)
            elif sa.state == IkeState.ESTABLISHED and not sa.hidden:
                record = capture(sa, now, wall)
                self.queue.record(key, seal(record, self.config.key, key.encode()))
                self._recorded_out[ike_sa_id] = _sent(sa)
                # a standby restoring this record starts each Child SA at next + margin: until a newer
                # record is in etcd, we must stay below that
                by_spi = {c.spi_out: c.outbound for c in sa.children.values()}
                self._unconfirmed[ike_sa_id] = [
                    (by_spi[spi], child["next_seq_out"] + HAND_OVER.esp_seq_margin - 1)
                    for child in record["children"] if (spi := base64.b64decode(child["spi_out"])) in by_spi
                ]
            else:
                continue  # being deleted or replaced: its next state is recorded when it settles
            recorded += 1
        return recorded

    def _gate(self) -> asyncio.Future[Any] | None:
        """The driver's send gate: record what changed; the datagrams wait for the flush."""
        changed = self._endpoint.take_changed()
        if self._resync and not self.queue.stats.pending:
            self._resync = False
            self.queue.clear_overflow()
            changed |= set(self._endpoint.ike_sa_ids())
        if not changed or not self._record(changed):
            return None
        return asyncio.get_running_loop().create_task(self._flushed())

    async def _flushed(self) -> None:
        if not await self._confirm(GATE_TIMEOUT):
            self.gate_timeouts += 1

    async def _confirm(self, timeout: float) -> bool:
        """Once etcd has every record made so far, raise each Child SA's sequence limit to what its
        newest record allows. While etcd is away the limits stay: an SA that used up its margin stops
        sending rather than risk a number a standby could start at."""
        limits, self._unconfirmed = self._unconfirmed, {}
        if not await self.queue.drain(timeout):
            for ike_sa_id, found in limits.items():
                self._unconfirmed.setdefault(ike_sa_id, found)  # a newer record's limits win
            return False
        for found in limits.values():
            for outbound, last_allowed in found:
                # confirmations may finish out of order: a limit only ever goes up here
                if last_allowed > self._limits.get(id(outbound), 0) and hasattr(outbound, "limit_sequence"):
                    self._limits[id(outbound)] = last_allowed
                    outbound.limit_sequence(last_allowed)
        return True

    def _overflowed(self) -> None:
        self._resync = True  # the queue dropped records: everything is recorded again once it drained

    async def _heartbeat(self) -> None:
        key, beat = f"{self.prefix}/heartbeat", 0
        while self.role == "leader":
            beat += 1
            fence = self.election.fence
            if fence is not None:
                try:
                    await self.store.put_batch({key: str(beat).encode()}, fence=fence)
                except NotLeader:
                    self._deposed("etcd refused the heartbeat: another node leads")
                    return
                except StoreError as exc:
                    log.debug("ha: heartbeat: %s", exc)
            await asyncio.sleep(self.config.heartbeat)

    async def _refresh_counters(self) -> None:
        while self.role == "leader":
            live = {id(c.outbound) for sa in self._endpoint.connections() for c in sa.children.values()}
            self._limits = {k: v for k, v in self._limits.items() if k in live}
            busy = {sa.ike_sa_id for sa in self._endpoint.connections()
                    if not sa.hidden and sa.state == IkeState.ESTABLISHED
                    and _sent(sa) - self._recorded_out.get(sa.ike_sa_id, 0) >= REFRESH_PACKETS}
            if busy:
                self._record(busy)
            if self._unconfirmed:
                await self._confirm(SEQ_REFRESH)
            else:
                await asyncio.sleep(SEQ_REFRESH)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ha: %s failed", task.get_name(), exc_info=task.exception())


def _sent(sa: IkeSa) -> int:
    """The outbound ESP sequence numbers the SA's Child SAs have used, together."""
    total = 0
    for child in sa.children.values():
        outbound = child.outbound
        total += int(getattr(outbound, "next_sequence", 0))
    return total
