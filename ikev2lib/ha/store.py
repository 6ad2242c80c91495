"""etcd as the HA state store: batched and fenced writes, paged prefix reads, leases, and the queue
the gateway records its state changes into.

The client is etcd's v3 gRPC API through the generated stubs of `aetcd` (asyncio, grpcio) over a
channel of our own: one channel to every member of the cluster (gRPC's round_robin balancer skips a
member that is down), a deadline on every call, paged Range requests. etcd 3.4 and 3.5 serve this API.

Only two failures matter to a caller, and each has its exception: `StoreUnavailable` (etcd could
not be reached, timed out or has no quorum: retry later) and `NotLeader` (a fenced write found the
leader key no longer ours: stop writing). `LeaseExpired` says a lease is gone; anything else etcd
refuses is a `StoreError`. No gRPC exception leaves this module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]

__all__ = [
    "CALL_TIMEOUT", "MAX_TXN_OPS", "MAX_TXN_BYTES", "MAX_ENTRY_BYTES", "PAGE_SIZE", "MAX_PREFIX_KEYS",
    "FLUSH_INTERVAL", "MAX_BATCH", "MAX_PENDING_KEYS", "RETRY_BACKOFF_MIN", "RETRY_BACKOFF_MAX",
    "StoreError", "StoreUnavailable", "NotLeader", "LeaseExpired",
    "Fence", "Lease", "KeyInfo", "PrefixRead", "EtcdStore", "QueueStats", "ReplicationQueue",
]  # fmt: skip

log = logging.getLogger(__name__)

# -- limits of the store ----------------------------------------------------------------------------
CALL_TIMEOUT = 2.0  # seconds: the gRPC deadline of every etcd call
MAX_TXN_OPS = 128  # operations per transaction: etcd's default --max-txn-ops
MAX_TXN_BYTES = 1024 * 1024  # keys + values per transaction, under etcd's default --max-request-bytes (1.5 MiB)
MAX_ENTRY_BYTES = 512 * 1024  # one key + value; larger ones are refused (ValueError) before any I/O
PAGE_SIZE = 1000  # keys per Range request of get_prefix
MAX_PREFIX_KEYS = 1_000_000  # get_prefix refuses to gather more keys than this
# gRPC's reconnect backoff grows to 120 s by default: far too slow to notice that etcd came back
RECONNECT_BACKOFF_MIN_MS = 100
RECONNECT_BACKOFF_MAX_MS = 1000
# A member that vanished without closing its connections is found by HTTP/2 pings: every 10 s while
# calls are open (etcd's --grpc-keepalive-min-time is 5 s: pings more often are refused), 3 s to answer
PING_INTERVAL_MS = 10_000
PING_TIMEOUT_MS = 3000
# gRPC refuses answers above 4 MiB by default; a page of PAGE_SIZE keys must fit in this
MAX_RECEIVE_BYTES = 64 * 1024 * 1024

# -- limits of the replication queue ----------------------------------------------------------------
FLUSH_INTERVAL = 0.05  # seconds a recorded change may wait before it is flushed
MAX_BATCH = 1024  # keys per flush (put_batch splits it into transactions of MAX_TXN_OPS)
MAX_PENDING_KEYS = 200_000  # distinct keys waiting to be flushed; see ReplicationQueue.record
RETRY_BACKOFF_MIN = 0.05  # seconds before retrying a failed flush, doubling up to RETRY_BACKOFF_MAX
RETRY_BACKOFF_MAX = 2.0


class StoreError(Exception):
    """etcd refused a request (or the store is used wrongly); the base of the store's exceptions."""


class StoreUnavailable(StoreError):
    """etcd could not be reached, did not answer within the deadline, or has no quorum."""


class NotLeader(StoreError):
    """A fenced write was refused: the leader key is gone or belongs to another leader now."""


class LeaseExpired(StoreError):
    """The lease does not exist any more (it expired or was revoked)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """What a fenced write compares: the leader key still has the create revision we created it at.
    A deposed leader's key was deleted with its lease (or re-created by the next leader, at a higher
    revision), so its writes fail."""

    key: str
    revision: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    id: int
    ttl: int  # seconds, as granted by etcd


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PrefixRead:
    items: dict[str, bytes]
    revision: int  # every page was read at this revision: one consistent view


def _decode(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def _encode(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def prefix_range_end(prefix: bytes) -> bytes:
    """The range_end that makes a Range cover every key starting with `prefix` (etcd's rule)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # empty prefix or all 0xff: to the end of the key space


def channel_target(endpoints: Sequence[str]) -> str:
    """One gRPC target for the cluster's members ("127.0.0.1:2379"). Several endpoints must be IP
    literals of one family ("ipv4:a:p,b:q", "ipv6:[x]:p,[y]:q"): gRPC balances over the list."""
    if not endpoints:
        raise ValueError("no etcd endpoint given")
    if len(endpoints) == 1:
        return endpoints[0]
    families = set()
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"etcd endpoint {endpoint!r} is not host:port")
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise ValueError(f"several etcd endpoints must be IP addresses, not {host!r}") from None
    if len(families) != 1:
        raise ValueError("several etcd endpoints must all be IPv4 or all be IPv6")
    return f"ipv{families.pop()}:" + ",".join(endpoints)


# what grpc.aio raises: call failures (AioRpcError is an RpcError), misuse of a closed channel and
# its other errors (grpc.aio.BaseError), and our own deadlines
_CLIENT_ERRORS = (grpc.RpcError, grpc.aio.BaseError, asyncio.TimeoutError)


def _converted(exc: Exception) -> StoreError:
    if isinstance(exc, grpc.aio.AioRpcError):
        code, details = exc.code(), exc.details() or ""
        message = f"etcd: {code.name}: {details}"
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
            return StoreUnavailable(message)
        if code == grpc.StatusCode.NOT_FOUND and "lease not found" in details:
            return LeaseExpired(message)
        return StoreError(message)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return StoreUnavailable("etcd: no answer within the deadline")
    if isinstance(exc, grpc.aio.UsageError):
        return StoreError(f"etcd channel: {exc}")
    return StoreError(f"etcd client: {type(exc).__name__}: {exc}")


class EtcdStore:
    """The etcd calls HA needs, each bounded by `timeout` seconds. Use as `async with EtcdStore([...])`
    (or `await connect()` / `await close()`); connecting does no I/O, so it works while etcd is down."""

    def __init__(self, endpoints: Sequence[str] = ("127.0.0.1:2379",), *, timeout: float = CALL_TIMEOUT,
                 max_txn_ops: int = MAX_TXN_OPS) -> None:
        if max_txn_ops < 1:
            raise ValueError("max_txn_ops must be at least 1")
        self.target = channel_target(endpoints)
        self.timeout = timeout
        self.max_txn_ops = max_txn_ops
        self._channel: Any = None
        self._kv: Any = None
        self._lease: Any = None

    async def connect(self) -> None:
        if self._channel is not None:
            return
        options = [
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MIN_MS),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MIN_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.keepalive_time_ms", PING_INTERVAL_MS),
            ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ]
        self._channel = grpc.aio.insecure_channel(self.target, options=options)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    async def __aenter__(self) -> EtcdStore:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _stub(self, stub: Any) -> Any:
        if self._channel is None:
            raise StoreError("the store is not connected")
        return stub

    async def _unary(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout)
        except _CLIENT_ERRORS as exc:
            raise _converted(exc) from exc

    # -- keys ---------------------------------------------------------------------------------------

    def _chunks(self, items: Mapping[str, bytes | None]) -> Iterator[list[tuple[bytes, bytes | None]]]:
        chunk: list[tuple[bytes, bytes | None]] = []
        size = 0
        for key, value in items.items():
            raw = _encode(key)
            entry = len(raw) + (len(value) if value is not None else 0)
            if entry > MAX_ENTRY_BYTES:
                raise ValueError(f"{key!r}: {entry} bytes exceed MAX_ENTRY_BYTES ({MAX_ENTRY_BYTES})")
            if chunk and (len(chunk) >= self.max_txn_ops or size + entry > MAX_TXN_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append((raw, value))
            size += entry
        if chunk:
            yield chunk

    async def put_batch(self, items: Mapping[str, bytes | None], *, fence: Fence | None = None,
                        lease: int = 0) -> int:
        """Write `items` (None deletes the key) in transactions of at most `max_txn_ops` operations and
        MAX_TXN_BYTES; each transaction is atomic, the batch as a whole is not. With `fence`, each
        transaction first compares the leader key's create revision and raises NotLeader (writing
        nothing more) when it differs. Returns the revision of the last transaction (0: no items)."""
        kv = self._stub(self._kv)
        compare = []
        if fence is not None:
            compare.append(rpc.Compare(key=_encode(fence.key), target=rpc.Compare.CREATE,
                                       result=rpc.Compare.EQUAL, create_revision=fence.revision))
        revision = 0
        for chunk in self._chunks(items):
            ops = [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key)) if value is None
                   else rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))
                   for key, value in chunk]
            reply = await self._unary(kv.Txn, rpc.TxnRequest(compare=compare, success=ops, failure=[]))
            if not reply.succeeded:
                raise NotLeader(f"{fence.key if fence else '?'} is no longer at create revision "
                                f"{fence.revision if fence else '?'}: not the leader")
            revision = int(reply.header.revision)
        return revision

    async def get(self, key: str) -> KeyInfo | None:
        reply = await self._unary(self._stub(self._kv).Range, rpc.RangeRequest(key=_encode(key)))
        if not reply.kvs:
            return None
        kv = reply.kvs[0]
        return KeyInfo(value=bytes(kv.value), create_revision=int(kv.create_revision),
                       mod_revision=int(kv.mod_revision), lease=int(kv.lease))

    async def get_prefix(self, prefix: str, *, page_size: int = PAGE_SIZE,
                         max_keys: int = MAX_PREFIX_KEYS) -> PrefixRead:
        """Every key under `prefix`, read in pages of `page_size` all at the revision of the first page
        (one consistent view). More than `max_keys` keys is a StoreError, not a partial answer."""
        kv = self._stub(self._kv)
        start = _encode(prefix)
        end = prefix_range_end(start)
        items: dict[str, bytes] = {}
        revision = 0
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=page_size, revision=revision)
            reply = await self._unary(kv.Range, request)
            if revision == 0:
                revision = int(reply.header.revision)
            for entry in reply.kvs:
                items[_decode(bytes(entry.key))] = bytes(entry.value)
            if len(items) > max_keys:
                raise StoreError(f"more than {max_keys} keys under {prefix!r}")
            if not reply.more or not reply.kvs:
                return PrefixRead(items=items, revision=revision)
            start = bytes(reply.kvs[-1].key) + b"\0"

    async def create(self, key: str, value: bytes, *, lease: int = 0) -> int | None:
        """Create `key` only if it does not exist (create_revision == 0): its create revision, or None
        when it already exists."""
        raw = _encode(key)
        request = rpc.TxnRequest(
            compare=[rpc.Compare(key=raw, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=raw, value=value, lease=lease))],
            failure=[])
        reply = await self._unary(self._stub(self._kv).Txn, request)
        return int(reply.header.revision) if reply.succeeded else None

    # -- leases -------------------------------------------------------------------------------------

    async def grant(self, ttl: int) -> Lease:
        reply = await self._unary(self._stub(self._lease).LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl, ID=0))
        if reply.error:
            raise StoreError(f"etcd refused a lease: {reply.error}")
        return Lease(id=int(reply.ID), ttl=int(reply.TTL))

    async def keepalive(self, lease_id: int) -> int:
        """Renew the lease once: the TTL (seconds) it has again. LeaseExpired when it is gone."""
        stub = self._stub(self._lease)
        try:
            call = stub.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=self.timeout)
            try:
                reply = await call.read()
            finally:
                call.cancel()
        except _CLIENT_ERRORS as exc:
            raise _converted(exc) from exc
        if reply is grpc.aio.EOF:
            raise StoreUnavailable("etcd closed the keepalive stream without an answer")
        ttl = int(reply.TTL)
        if ttl <= 0:
            raise LeaseExpired(f"lease {lease_id:x} has expired")
        return ttl

    async def revoke(self, lease_id: int) -> None:
        """Revoke the lease (deleting its keys); a lease already gone is not an error."""
        try:
            await self._unary(self._stub(self._lease).LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id))
        except LeaseExpired:
            pass


# -- the replication queue ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStats:
    flushed: int  # keys written to etcd
    batches: int  # successful flushes
    retries: int  # failed flushes (each retried after a backoff)
    pending: int  # distinct keys waiting (including those of a flush in progress)
    dropped: int  # records refused because MAX_PENDING_KEYS distinct keys were pending
    last_error: str | None  # the last failure, kept after later successes


class ReplicationQueue:
    """State changes on their way to etcd. `record()` is synchronous and cheap (call it from the event
    loop's thread); a background task coalesces by key, the newest value winning, and writes batches of
    at most `max_batch` keys once the oldest pending change is `flush_interval` old or `max_batch` keys
    are pending. A failed flush (etcd down, no quorum, NotLeader) goes back into the queue, under any
    newer values recorded meanwhile, and is retried with a backoff doubling from RETRY_BACKOFF_MIN to
    RETRY_BACKOFF_MAX; meanwhile recording goes on coalescing, so a key changing a thousand times
    while etcd is away costs one entry and one write when it returns.

    `fence()` (when given) is asked before each flush; None means "not the leader" and the flush
    waits like a failed one. Each transaction is fenced, so a deposed leader writes nothing."""

    def __init__(self, store: EtcdStore, *, fence: Callable[[], Fence | None] | None = None,
                 flush_interval: float = FLUSH_INTERVAL, max_batch: int = MAX_BATCH,
                 max_pending_keys: int = MAX_PENDING_KEYS,
                 on_overflow: Callable[[], None] | None = None) -> None:
        if max_batch < 1 or max_pending_keys < 1:
            raise ValueError("max_batch and max_pending_keys must be at least 1")
        self._store = store
        self._fence = fence
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_pending_keys = max_pending_keys
        self._on_overflow = on_overflow
        self._pending: dict[str, bytes | None] = {}
        self._inflight = 0
        self._first_pending_at: float | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.overflowed = False
        self._flushed = self._batches = self._retries = self._dropped = 0
        self._last_error: str | None = None

    @property
    def stats(self) -> QueueStats:
        return QueueStats(flushed=self._flushed, batches=self._batches, retries=self._retries,
                          pending=len(self._pending) + self._inflight, dropped=self._dropped,
                          last_error=self._last_error)

    def record(self, key: str, value: bytes | None) -> None:
        """Queue `key` = `value` (None: delete it). Memory is bounded by distinct keys: a key already
        pending only has its value replaced. When `max_pending_keys` distinct keys are pending (etcd
        has been away for long), a record of a new key is dropped and counted, `overflowed` turns true
        and `on_overflow` is called once: the replica then misses changes, and the gateway must record
        its whole state again (a resync) once the queue drains, then call `clear_overflow()`. A flush
        in progress holds at most `max_batch` more keys."""
        if value is not None and len(value) + len(_encode(key)) > MAX_ENTRY_BYTES:
            raise ValueError(f"{key!r}: the value exceeds MAX_ENTRY_BYTES ({MAX_ENTRY_BYTES})")
        pending = self._pending
        if key not in pending and len(pending) >= self.max_pending_keys:
            self._dropped += 1
            if not self.overflowed:
                self.overflowed = True
                log.warning("replication queue full (%d keys): dropping new keys until a resync", len(pending))
                if self._on_overflow is not None:
                    self._on_overflow()
            return
        if not pending:
            self._first_pending_at = time.monotonic()
            self._wakeup.set()
        pending[key] = value
        self._idle.clear()
        if len(pending) >= self.max_batch:
            self._wakeup.set()

    def clear_overflow(self) -> None:
        self.overflowed = False

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ha-replication-queue")

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is pending (True) or `timeout` seconds passed (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            return False
        return True

    async def stop(self, timeout: float = 5.0) -> bool:
        """Flush what is pending (for at most `timeout` seconds) and stop. True if all was written."""
        task, self._task = self._task, None
        if task is None:
            return not self._pending
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(task, timeout)
        except (asyncio.TimeoutError, TimeoutError):
            pass  # wait_for cancelled the task, which put its batch back
        return not self._pending

    async def _wait_for_batch(self) -> None:
        while not self._pending and not self._stopping:
            self._wakeup.clear()
            await self._wakeup.wait()
        while self._pending and not self._stopping and len(self._pending) < self.max_batch:
            if self._first_pending_at is None:  # set with the first pending key; never None here
                self._first_pending_at = time.monotonic()
            remaining = self._first_pending_at + self.flush_interval - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except (asyncio.TimeoutError, TimeoutError):
                return

    def _take(self) -> dict[str, bytes | None]:
        pending = self._pending
        if len(pending) <= self.max_batch:
            batch, self._pending = pending, {}
        else:
            batch = {}
            for key in list(pending)[: self.max_batch]:
                batch[key] = pending.pop(key)
        return batch

    def _put_back(self, batch: dict[str, bytes | None], first_at: float | None) -> None:
        # newer values recorded during the flush win over the batch being put back
        batch.update(self._pending)
        self._pending = batch
        self._inflight = 0
        self._first_pending_at = first_at

    async def _run(self) -> None:
        backoff = RETRY_BACKOFF_MIN
        while True:
            await self._wait_for_batch()
            if not self._pending:
                if self._stopping:
                    return
                continue
            first_at = self._first_pending_at
            batch = self._take()
            self._inflight = len(batch)
            try:
                fence = self._fence() if self._fence is not None else None
                if self._fence is not None and fence is None:
                    raise NotLeader("not the leader: holding the changes")
                await self._store.put_batch(batch, fence=fence)
            except asyncio.CancelledError:
                self._put_back(batch, first_at)  # stopped mid-flush: nothing is lost from the count
                raise
            except StoreError as exc:
                self._put_back(batch, first_at)
                self._retries += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.debug("replication flush failed (%s); retrying in %.2f s", self._last_error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX)
                continue
            self._inflight = 0
            backoff = RETRY_BACKOFF_MIN
            self._flushed += len(batch)
            self._batches += 1
            if self._pending:
                self._first_pending_at = first_at  # the rest has waited as long: flush it at once
            else:
                self._first_pending_at = None
                self._idle.set()
