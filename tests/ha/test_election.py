"""Leader election against real etcd: one leader, takeover by the standby, fencing of the deposed
leader, and a three-member cluster losing one member."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from ikev2lib.ha.election import Election
from ikev2lib.ha.store import EtcdStore, Fence, NotLeader, ReplicationQueue

from .etcd import EtcdCluster

T = TypeVar("T")
TEST_TIMEOUT = 30.0  # seconds: the bound of each test's asyncio body
TTL = 2  # seconds: short leases, so takeovers take little test time


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, TEST_TIMEOUT))


class Gateway:
    """What one gateway holds: its own connection to etcd and its election, with the callbacks noted."""

    def __init__(self, endpoints: list[str], name: str, prefix: str) -> None:
        self.store = EtcdStore(endpoints, timeout=1.0)
        self.elected: list[Fence] = []
        self.deposed: list[tuple[float, str]] = []
        self.election = Election(self.store, name, TTL, prefix=prefix, poll_interval=0.1,
                                 on_elected=self.elected.append,
                                 on_deposed=lambda reason: self.deposed.append((time.monotonic(), reason)))

    async def __aenter__(self) -> Gateway:
        await self.store.connect()
        self.election.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.election.stop()
        await self.store.close()


async def first_leader(*gateways: Gateway, timeout: float = 10.0) -> tuple[Gateway, list[Gateway]]:
    waits = {asyncio.ensure_future(g.election.wait_elected(timeout)): g for g in gateways}
    done, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, "nobody was elected"
    leader = waits[next(iter(done))]
    return leader, [g for g in gateways if g is not leader]


def test_one_leader_among_contenders(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with Gateway(shared_etcd.endpoints, "a", key_prefix) as a, \
                Gateway(shared_etcd.endpoints, "b", key_prefix) as b, \
                Gateway(shared_etcd.endpoints, "c", key_prefix) as c:
            leader, standbys = await first_leader(a, b, c)
            await asyncio.sleep(1.5 * TTL)  # several keepalives and standby polls later
            assert [g.election.is_leader for g in (leader, *standbys)] == [True, False, False]
            assert await a.election.leader() == leader.election.name
            fence = leader.election.fence
            assert fence is not None and leader.election.leader_revision == fence.revision
            assert leader.elected == [fence] and not leader.deposed
            assert all(not g.elected and g.election.fence is None for g in standbys)
    run(body())


def test_standby_takes_over_when_the_leader_resigns(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with Gateway(shared_etcd.endpoints, "a", key_prefix) as a, \
                Gateway(shared_etcd.endpoints, "b", key_prefix) as b:
            leader, (standby,) = await first_leader(a, b)
            old = leader.election.fence
            assert old is not None
            start = time.monotonic()
            await leader.election.resign()  # revokes the lease
            new = await standby.election.wait_elected(5.0)
            took = time.monotonic() - start
            print(f"\nleader resigned: standby elected after {took:.2f} s")
            assert new.revision > old.revision
            assert leader.deposed and leader.deposed[0][1] == "resigned"
            assert not leader.election.is_leader and len(leader.elected) == 1  # it stood aside
            with pytest.raises(NotLeader):
                await leader.store.put_batch({f"{key_prefix}state": b"old"}, fence=old)
            await standby.store.put_batch({f"{key_prefix}state": b"new"}, fence=new)
    run(body())


def test_standby_takes_over_when_the_leader_stops_keeping_its_lease(shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with Gateway(shared_etcd.endpoints, "a", key_prefix) as a, \
                Gateway(shared_etcd.endpoints, "b", key_prefix) as b:
            leader, (standby,) = await first_leader(a, b)
            old = leader.election.fence
            assert old is not None
            await leader.store.put_batch({f"{key_prefix}state": b"1"}, fence=old)
            start = time.monotonic()
            await leader.election.stop(resign=False)  # a hung or crashed gateway: no keepalive, no revoke
            new = await standby.election.wait_elected(3 * TTL)
            took = time.monotonic() - start
            print(f"\nleader stopped renewing (TTL {TTL} s): standby elected after {took:.2f} s")
            # the old leader comes back and writes with its stale fence: etcd refuses
            with pytest.raises(NotLeader):
                await leader.store.put_batch({f"{key_prefix}state": b"stale"}, fence=old)
            assert (await standby.store.get_prefix(f"{key_prefix}state")).items == {f"{key_prefix}state": b"1"}
    run(body())


def test_a_leader_whose_lease_was_revoked_learns_it_and_its_queue_writes_nothing(
        shared_etcd: EtcdCluster, key_prefix: str) -> None:
    async def body() -> None:
        async with Gateway(shared_etcd.endpoints, "a", key_prefix) as a, \
                Gateway(shared_etcd.endpoints, "b", key_prefix) as b:
            leader, (standby,) = await first_leader(a, b)
            queue = ReplicationQueue(leader.store, fence=lambda: leader.election.fence)
            queue.start()
            queue.record(f"{key_prefix}state", b"1")
            assert await queue.drain(5.0)
            stale = leader.election.fence
            assert stale is not None and leader.election.lease_id is not None
            # someone else (an operator, a split brain) revokes the leader's lease
            start = time.monotonic()
            await standby.store.revoke(leader.election.lease_id)
            for _ in range(int(3 * TTL / 0.02)):
                if leader.deposed:
                    break
                await asyncio.sleep(0.02)
            assert leader.deposed, "the leader did not notice"
            print(f"\nlease revoked behind the leader's back: it knew after {leader.deposed[0][0] - start:.2f} s "
                  f"({leader.deposed[0][1]})")
            # the deposed leader's queue holds its changes instead of writing them ...
            queue.record(f"{key_prefix}state", b"2")
            await asyncio.sleep(0.3)
            assert not await queue.drain(0.1)
            await standby.election.wait_elected(3 * TTL)
            # ... and even with the stale fence, etcd refuses
            with pytest.raises(NotLeader):
                await leader.store.put_batch({f"{key_prefix}state": b"2"}, fence=stale)
            assert (await standby.store.get_prefix(f"{key_prefix}state")).items == {f"{key_prefix}state": b"1"}
            await queue.stop(timeout=0.2)
    run(body())


def test_a_leader_cut_off_from_etcd_deposes_itself_within_the_ttl(etcd_single: EtcdCluster) -> None:
    async def body() -> None:
        async with Gateway(etcd_single.endpoints, "a", "ha") as a:
            await a.election.wait_elected(5.0)
            await asyncio.sleep(0.5)
            etcd_single.stop_member(0)
            stopped = time.monotonic()
            for _ in range(int(3 * TTL / 0.02)):
                if a.deposed:
                    break
                await asyncio.sleep(0.02)
            assert a.deposed, "the leader did not depose itself"
            took = a.deposed[0][0] - stopped
            print(f"\netcd gone: the leader deposed itself after {took:.2f} s (TTL {TTL} s): {a.deposed[0][1]}")
            assert took <= TTL + 0.5
            await asyncio.to_thread(etcd_single.restart_member, 0)
            fence = await a.election.wait_elected(4 * TTL)  # it campaigns again once etcd is back
            assert len(a.elected) == 2 and fence.revision > a.elected[0].revision
    run(body())


def test_three_member_cluster_keeps_working_without_one_member(etcd_cluster3: EtcdCluster) -> None:
    async def body() -> None:
        endpoints = etcd_cluster3.endpoints
        async with Gateway(endpoints, "a", "ha") as a, Gateway(endpoints, "b", "ha") as b:
            leader, (standby,) = await first_leader(a, b)
            queue = ReplicationQueue(leader.store, fence=lambda: leader.election.fence)
            queue.start()
            for i in range(200):
                queue.record(f"sa/{i:03d}", b"before")
            assert await queue.drain(5.0)
            victim = etcd_cluster3.raft_leader()  # the worst member to lose
            etcd_cluster3.kill_member(victim)
            killed = time.monotonic()
            for round_ in range(int(3 * TTL / 0.1)):  # keep replicating for three TTLs
                for i in range(200):
                    queue.record(f"sa/{i:03d}", b"after %d" % round_)
                await asyncio.sleep(0.1)
            assert await queue.drain(10.0)
            print(f"\nraft leader m{victim} killed: still the same HA leader {3 * TTL} s later; queue "
                  f"retries {queue.stats.retries} ({queue.stats.last_error}); drained "
                  f"{time.monotonic() - killed:.1f} s after the kill")
            assert leader.election.is_leader and not leader.deposed
            assert not standby.election.is_leader
            items = (await standby.store.get_prefix("sa/")).items
            assert items == {f"sa/{i:03d}": b"after %d" % round_ for i in range(200)}
            # a standby still takes over on the two remaining members
            await leader.election.resign()
            await standby.election.wait_elected(5.0)
            await queue.stop(timeout=0.5)
    run(body())
