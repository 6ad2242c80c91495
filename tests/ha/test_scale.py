"""10,000 IKE SAs replicated to a real etcd and taken over by another endpoint.

One real IKE SA (with its Child SA) is established in the simulated network; its record is cloned
into SA_COUNT records with distinct SPIs and handles, the way a hub's SAs differ. They go through the
ReplicationQueue into etcd (the write rate is measured), then a standby reads them in one view,
unseals and restores every one into a fresh endpoint (the takeover time is measured). Steady rekeys
are one record rewrite per rekey: the rate below is what etcd sustains for them. The numbers are
printed for the note; nothing here asserts on time.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import time

from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.ha.snapshot import HandOver, capture, restore, seal, unseal
from ikev2lib.ha.store import EtcdStore, ReplicationQueue
from ikev2lib.state import IkeState
from tests.engine.network import RESPONDER_IP, pair

from .etcd import EtcdCluster

SA_COUNT = 10_000
KEY = bytes(range(32))
WALL = 1_800_000_000.0


def _records() -> tuple[list[dict], object]:  # type: ignore[type-arg]
    net, a, b, icfg = pair()
    a.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    base = capture(b.endpoint.connection(b.endpoint.ike_sa_ids()[0]), net.now, WALL)
    records = []
    for i in range(SA_COUNT):
        record = copy.deepcopy(base)
        record["ike_sa_id"] = i + 1
        record["spi_r"] = _b64((0x1000_0000 + i).to_bytes(8, "big"))
        record["spi_i"] = _b64((0x2000_0000 + i).to_bytes(8, "big"))
        record["remote"] = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 4500]
        for child in record["children"]:
            child["child_id"] = i + 1
            child["spi_in"] = _b64((0x4000_0000 + i).to_bytes(4, "big"))
            child["spi_out"] = _b64((0x5000_0000 + i).to_bytes(4, "big"))
        records.append(record)
    return records, b.endpoint.config


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_ten_thousand_sas_replicate_and_are_taken_over(etcd_single: EtcdCluster) -> None:
    records, config = _records()
    prefix = "scale/sa/"

    async def run() -> tuple[float, float, float, int]:
        async with EtcdStore(etcd_single.endpoints) as store:
            queue = ReplicationQueue(store)
            queue.start()
            started = time.monotonic()
            for record in records:
                key = f"{prefix}{record['ike_sa_id']}"
                queue.record(key, seal(record, KEY, key.encode()))
            sealed = time.monotonic() - started
            assert await queue.drain(120.0)
            written = time.monotonic() - started
            await queue.stop()
            read_started = time.monotonic()
            read = await store.get_prefix(prefix)
            read_time = time.monotonic() - read_started
        endpoint = IkeEndpoint(config, local_addr=(RESPONDER_IP, 500))
        restore_started = time.monotonic()
        for key, blob in read.items.items():
            restore(endpoint, unseal(blob, KEY, key.encode()), 0.0, WALL + 1.0, HandOver())
        restore_time = time.monotonic() - restore_started
        print(f"\n{SA_COUNT} SAs: sealed in {sealed:.2f} s, written to etcd in {written:.2f} s "
              f"({SA_COUNT / written:,.0f} records/s, {queue.stats.batches} batches); read in {read_time:.2f} s; "
              f"unsealed and restored in {restore_time:.2f} s ({restore_time / SA_COUNT * 1e6:.0f} us each)")
        assert len(endpoint.ike_sa_ids()) == SA_COUNT
        assert all(endpoint.state_of(i) == IkeState.ESTABLISHED for i in endpoint.ike_sa_ids())
        return written, read_time, restore_time, len(read.items)

    _, _, _, count = asyncio.run(run())
    assert count == SA_COUNT
