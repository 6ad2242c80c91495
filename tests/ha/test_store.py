"""EtcdStore and ReplicationQueue against real etcd (tests/ha/etcd.py starts it; nothing is mocked)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ikev2lib.ha.store import (
    MAX_TXN_OPS,
    EtcdStore,
    Fence,
    LeaseExpired,
    NotLeader,
    ReplicationQueue,
    StoreError,
    StoreUnavailable,
    channel_target,
)

from .etcd import ETCD_PACKAGE, EtcdCluster, etcd_problem

T = TypeVar("T")
TEST_TIMEOUT = 30.0  # seconds: the bound of each test's asyncio body


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


async def wait_until(predicate: Any, timeout: float, step: float = 0.02) -> float:
    """Poll an async predicate until true; the seconds it took. TimeoutError after `timeout`."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - start


# -- no etcd needed ---------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoints, target", [
    (["127.0.0.1:2379"], "127.0.0.1:2379"),
    (["etcd.example:2379"], "etcd.example:2379"),
    (["127.0.0.1:1", "127.0.0.1:2"], "ipv4:127.0.0.1:1,127.0.0.1:2"),
    (["[::1]:1", "[::1]:2"], "ipv6:[::1]:1,[::1]:2"),
])  # fmt: skip
def test_channel_target(endpoints: list[str], target: str) -> None:
    assert channel_target(endpoints) == target


@pytest.mark.parametrize("endpoints", [[], ["a.example:1", "b.example:2"], ["127.0.0.1:1", "[::1]:2"], ["127.0.0.1", "127.0.0.2"]])
def test_channel_target_refuses(endpoints: list[str]) -> None:
    with pytest.raises(ValueError):
        channel_target(endpoints)


def test_a_missing_etcd_names_the_debian_package(tmp_path: Path) -> None:
    problem = etcd_problem(str(tmp_path / "etcd"))
    assert problem is not None and f"install the Debian package {ETCD_PACKAGE}" in problem
    assert ETCD_PACKAGE == "etcd-server"


# -- the store --------------------------------------------------------------------------------------

def test_batches_write_and_delete(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with EtcdStore(shared_etcd.endpoints) as store:
            first = await store.put_batch({f"{key_prefix}a": b"1", f"{key_prefix}b": b"2", f"{key_prefix}c": b"\x00\xff"})
            read = await store.get_prefix(key_prefix)
            assert read.items == {f"{key_prefix}a": b"1", f"{key_prefix}b": b"2", f"{key_prefix}c": b"\x00\xff"}
            assert read.revision >= first
            second = await store.put_batch({f"{key_prefix}a": None, f"{key_prefix}b": b"22", f"{key_prefix}d": b""})
            assert second == first + 1  # one transaction
            read = await store.get_prefix(key_prefix)
            assert read.items == {f"{key_prefix}b": b"22", f"{key_prefix}c": b"\x00\xff", f"{key_prefix}d": b""}
            assert await store.put_batch({}) == 0
            assert await store.get(f"{key_prefix}a") is None
            info = await store.get(f"{key_prefix}b")
            assert info is not None and info.value == b"22" and info.mod_revision == second
            with pytest.raises(ValueError):
                await store.put_batch({f"{key_prefix}huge": bytes(600 * 1024)})
    run(body())


def test_batches_above_the_txn_op_limit_are_split(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        items = {f"{key_prefix}{i:05d}": i.to_bytes(4, "big") for i in range(5 * MAX_TXN_OPS + 7)}
        async with EtcdStore(shared_etcd.endpoints) as store:
            before = await store.put_batch({f"{key_prefix}marker": b""})
            after = await store.put_batch(items)
            assert after - before == 6  # ceil(647 / 128) transactions
            read = await store.get_prefix(key_prefix)
            assert len(read.items) == len(items) + 1
            assert all(read.items[k] == v for k, v in items.items())
        # etcd itself enforces the limit: one more operation in one transaction is refused
        async with EtcdStore(shared_etcd.endpoints, max_txn_ops=MAX_TXN_OPS + 1) as unsplit:
            with pytest.raises(StoreError, match="too many operations") as caught:
                await unsplit.put_batch({f"{key_prefix}x{i}": b"" for i in range(MAX_TXN_OPS + 1)})
            assert not isinstance(caught.value, StoreUnavailable)
    run(body())


def test_prefix_reads_many_keys_in_pages_at_one_revision(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        prefix = f"{key_prefix}sa/"
        items = {f"{prefix}{i:06d}": b"v%d" % i for i in range(3000)}
        async with EtcdStore(shared_etcd.endpoints) as store:
            await store.put_batch(items)
            await store.put_batch({f"{key_prefix}sa0": b"sibling", f"{key_prefix}s": b"shorter"})  # not under sa/
            last = await store.put_batch({f"{prefix}{0:06d}": b"latest"})
            read = await store.get_prefix(prefix, page_size=256)
            assert read.items == {**items, f"{prefix}{0:06d}": b"latest"}
            assert read.revision == last
            with pytest.raises(StoreError, match="more than 1000 keys"):
                await store.get_prefix(prefix, page_size=256, max_keys=1000)
            assert (await store.get_prefix(f"{key_prefix}nothing/")).items == {}
    run(body())


async def _leader_key(store: EtcdStore, key: str, ttl: int) -> tuple[int, Fence]:
    lease = await store.grant(ttl)
    revision = await store.create(key, b"me", lease=lease.id)
    assert revision is not None
    assert await store.create(key, b"other", lease=lease.id) is None  # exists: not created twice
    return lease.id, Fence(key=key, revision=revision)


def test_fenced_put_fails_once_the_lease_is_revoked(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with EtcdStore(shared_etcd.endpoints) as store:
            lease_id, fence = await _leader_key(store, f"{key_prefix}leader", ttl=10)
            await store.put_batch({f"{key_prefix}state": b"1"}, fence=fence)
            assert await store.keepalive(lease_id) == 10
            await store.revoke(lease_id)
            with pytest.raises(NotLeader):
                await store.put_batch({f"{key_prefix}state": b"2"}, fence=fence)
            # the next leader's key has a new create revision: the old fence still fails
            _, new_fence = await _leader_key(store, f"{key_prefix}leader", ttl=10)
            assert new_fence.revision > fence.revision
            with pytest.raises(NotLeader):
                await store.put_batch({f"{key_prefix}state": b"3"}, fence=fence)
            await store.put_batch({f"{key_prefix}state": b"4"}, fence=new_fence)
            assert (await store.get_prefix(f"{key_prefix}state")).items == {f"{key_prefix}state": b"4"}
            with pytest.raises(LeaseExpired):
                await store.keepalive(lease_id)
            await store.revoke(lease_id)  # already gone: not an error
    run(body())


def test_fenced_put_fails_once_the_lease_expires(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with EtcdStore(shared_etcd.endpoints) as store:
            lease_id, fence = await _leader_key(store, f"{key_prefix}leader", ttl=1)
            await store.put_batch({f"{key_prefix}state": b"1"}, fence=fence)

            async def refused() -> bool:
                try:
                    await store.put_batch({f"{key_prefix}state": b"2"}, fence=fence)
                except NotLeader:
                    return True
                return False

            took = await wait_until(refused, timeout=5.0, step=0.05)
            print(f"\nlease of TTL 1 s not kept alive: fenced puts refused after {took:.2f} s")
            with pytest.raises(LeaseExpired):
                await store.keepalive(lease_id)
            with pytest.raises(NotLeader):
                await store.put_batch({f"{key_prefix}state": b"3"}, fence=fence)
            assert await store.get(f"{key_prefix}leader") is None  # deleted with its lease
            # the puts made while the lease held went in; none after
            assert (await store.get_prefix(f"{key_prefix}state")).items == {f"{key_prefix}state": b"2"}
    run(body())


def test_typed_errors_when_etcd_is_down_and_recovery(etcd_single: EtcdCluster) -> None:
    async def body() -> None:
        async with EtcdStore(etcd_single.endpoints, timeout=1.0) as store:
            lease = await store.grant(30)
            await store.put_batch({"k": b"1"})
            etcd_single.stop_member(0)
            calls = [store.put_batch({"k": b"2"}), store.get_prefix("k"), store.get("k"), store.grant(5),
                     store.keepalive(lease.id), store.revoke(lease.id), store.create("x", b"")]
            for call in calls:
                start = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    await call
                assert time.monotonic() - start < 3.0  # the deadline bounds every call
            await asyncio.to_thread(etcd_single.restart_member, 0)

            async def back() -> bool:
                try:
                    await store.put_batch({"k": b"3"})
                except StoreUnavailable:
                    return False
                return True

            took = await wait_until(back, timeout=10.0, step=0.1)
            print(f"\nthe same store wrote again {took:.2f} s after etcd was healthy again")
            assert (await store.get_prefix("k")).items == {"k": b"3"}
        with pytest.raises(StoreError, match="not connected"):
            await store.get("k")
    run(body())


# -- the replication queue --------------------------------------------------------------------------

def test_queue_coalesces_by_key(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with EtcdStore(shared_etcd.endpoints) as store:
            queue = ReplicationQueue(store)
            queue.start()
            for i in range(1000):  # no await: all of these coalesce before the first flush
                queue.record(f"{key_prefix}a", b"a%d" % i)
                queue.record(f"{key_prefix}b", b"b%d" % i)
            queue.record(f"{key_prefix}gone", b"x")
            queue.record(f"{key_prefix}gone", None)
            assert queue.stats.pending == 3
            assert await queue.drain(5.0)
            stats = queue.stats
            assert (stats.flushed, stats.batches, stats.pending, stats.retries) == (3, 1, 0, 0)
            assert (await store.get_prefix(key_prefix)).items == {f"{key_prefix}a": b"a999", f"{key_prefix}b": b"b999"}
            queue.record(f"{key_prefix}a", None)
            assert await queue.stop()
            assert (await store.get_prefix(key_prefix)).items == {f"{key_prefix}b": b"b999"}
            with pytest.raises(ValueError):
                queue.record(f"{key_prefix}huge", bytes(600 * 1024))
    run(body())


def test_queue_memory_is_bounded_while_etcd_is_down(etcd_single: EtcdCluster) -> None:
    async def body() -> None:
        overflows: list[int] = []
        async with EtcdStore(etcd_single.endpoints, timeout=0.5) as store:
            queue = ReplicationQueue(store, max_pending_keys=100, max_batch=40,
                                     on_overflow=lambda: overflows.append(1))
            queue.start()
            etcd_single.stop_member(0)
            for round_ in range(20):
                for i in range(150):
                    queue.record(f"sa/{i:03d}", b"%d" % round_)
                await asyncio.sleep(0.05)
                assert queue.stats.pending <= 100 + 40  # MAX_PENDING_KEYS + one flush in progress
            stats = queue.stats
            assert stats.retries > 0 and stats.last_error is not None and "StoreUnavailable" in stats.last_error
            assert queue.overflowed and overflows == [1]
            assert stats.dropped > 0 and stats.flushed == 0
            await asyncio.to_thread(etcd_single.restart_member, 0)
            assert await queue.drain(15.0)
            items = (await store.get_prefix("sa/")).items
            assert len(items) == 100 and set(items.values()) == {b"19"}  # the first 100 keys, latest values
            queue.clear_overflow()  # the gateway's resync: record everything again, within the bound
            for chunk in (range(0, 100), range(100, 150)):
                for i in chunk:
                    queue.record(f"sa/{i:03d}", b"resync")
                assert await queue.drain(5.0)
            assert not queue.overflowed
            assert await queue.stop()
            assert (await store.get_prefix("sa/")).items == {f"sa/{i:03d}": b"resync" for i in range(150)}
    run(body())


def test_queue_catches_up_after_etcd_comes_back(etcd_single: EtcdCluster) -> None:
    async def body() -> None:
        latest: dict[str, bytes | None] = {}
        async with EtcdStore(etcd_single.endpoints, timeout=0.5) as store:
            queue = ReplicationQueue(store)
            queue.start()
            stop_recording = asyncio.Event()

            async def gateway() -> int:  # state changes at about 1,000 a second, over 300 SAs
                n = 0
                while not stop_recording.is_set():
                    for _ in range(10):
                        key = f"sa/{n % 300:03d}"
                        value = None if n % 7 == 0 else b"%d" % n
                        queue.record(key, value)
                        latest[key] = value
                        n += 1
                    await asyncio.sleep(0.01)
                return n

            recorder = asyncio.create_task(gateway())
            await asyncio.sleep(0.5)
            etcd_single.stop_member(0)
            down_at = time.monotonic()
            await asyncio.sleep(3.0)
            assert queue.stats.pending <= 2 * 300  # 300 distinct keys, pending and in a flush
            await asyncio.to_thread(etcd_single.restart_member, 0)
            up_at = time.monotonic()
            await asyncio.sleep(0.5)
            stop_recording.set()
            changes = await recorder
            assert await queue.drain(10.0)
            caught_up = time.monotonic()
            stats = queue.stats
            print(f"\netcd down {up_at - down_at:.1f} s; {changes} changes recorded; caught up "
                  f"{caught_up - up_at:.2f} s after restart; flushed {stats.flushed} keys in {stats.batches} "
                  f"batches, {stats.retries} retries, last error {stats.last_error}")
            assert stats.retries > 0
            expected = {k: v for k, v in latest.items() if v is not None}
            assert (await store.get_prefix("sa/")).items == expected
            await queue.stop()
    run(body())


def test_queue_flushes_10000_keys(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with EtcdStore(shared_etcd.endpoints) as store:
            queue = ReplicationQueue(store)
            queue.start()
            value = bytes(200)  # about the size of an SA snapshot
            start = time.monotonic()
            for i in range(10_000):
                queue.record(f"{key_prefix}{i:05d}", value)
            assert await queue.drain(20.0)
            took = time.monotonic() - start
            stats = queue.stats
            print(f"\n10,000 keys of {len(value)} bytes flushed in {took:.2f} s ({10_000 / took:.0f} keys/s, "
                  f"{stats.batches} batches of up to {queue.max_batch}, transactions of {MAX_TXN_OPS})")
            assert stats.flushed == 10_000
            read = await store.get_prefix(key_prefix)
            assert len(read.items) == 10_000
            await queue.stop()
    run(body())


def test_write_throughput(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    """Measured, not asserted: single puts (one round trip each) against transactions of 128 puts."""
    async def body() -> None:
        async with EtcdStore(shared_etcd.endpoints) as store:
            value = bytes(200)
            start = time.monotonic()
            for i in range(300):
                await store.put_batch({f"{key_prefix}single/{i}": value})
            single = 300 / (time.monotonic() - start)
            items = {f"{key_prefix}txn/{i:05d}": value for i in range(40 * MAX_TXN_OPS)}
            start = time.monotonic()
            await store.put_batch(items)
            took = time.monotonic() - start
            print(f"\nsequential single puts: {single:.0f}/s; transactions of {MAX_TXN_OPS} puts: "
                  f"{len(items) / took:.0f} puts/s ({40 / took:.0f} transactions/s)")
    run(body())
