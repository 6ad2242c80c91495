"""DataPath.batch: an HA takeover installs thousands of Child SAs with one forwarder table, not one
table per Child SA (which made a large takeover quadratic). No TUN device needed: the table only."""

from __future__ import annotations

import asyncio
import os
import types

import pytest

from ikev2lib.esp import BACKEND, EspSA
from ikev2lib.events import ChildSaCreated
from ikev2lib.gateway.datapath import DataPath
from ikev2lib.gateway.model import DataPathConfig
from ikev2lib.wire import TrafficSelector

pytestmark = pytest.mark.skipif(BACKEND != "c", reason="the forwarder table holds C ESP SAs")

TUNNELS = 300


def _events(n: int) -> tuple[object, list[ChildSaCreated]]:
    key = os.urandom(20)
    sas, events = {}, []
    for i in range(n):
        child = types.SimpleNamespace(local_ts_wire=[TrafficSelector.from_network("10.0.0.0/16")],
                                      remote_ts_wire=[TrafficSelector.from_network(f"10.100.{i // 256}.{i % 256}/32")],
                                      config_name="net")
        sas[i + 1] = types.SimpleNamespace(children={1: child}, config=types.SimpleNamespace(name="hub"),
                                           remote_addr=(f"198.18.{i // 256}.{i % 256}", 4500))
        events.append(ChildSaCreated(
            ike_sa_id=i + 1, child_id=1, spi_in=(0x10000 + i).to_bytes(4, "big"),
            spi_out=(0x90000 + i).to_bytes(4, "big"), proposal="aes128gcm16", mode="tunnel", udp_encap=True,
            local_ts=("10.0.0.0/16",), remote_ts=(f"10.100.{i // 256}.{i % 256}/32",), name="net",
            inbound=EspSA(0x10000 + i, "aes128gcm16", key, "inbound"),
            outbound=EspSA(0x90000 + i, "aes128gcm16", key, "outbound"),
        ))  # fmt: skip
    return types.SimpleNamespace(connection=lambda i: sas[i]), events


def _counting(loop: asyncio.AbstractEventLoop) -> tuple[DataPath, list[int]]:
    dp = DataPath(DataPathConfig(workers=1), "192.0.2.2", 4500, loop)
    published: list[int] = []  # the size of each table handed to the forwarder
    real = dp._forwarder.set_tunnels
    dp._forwarder = types.SimpleNamespace(set_tunnels=lambda t, *a: (published.append(len(t)), real(t, *a))[1])
    return dp, published


@pytest.mark.parametrize("batched", [True, False])
def test_a_batch_publishes_one_table_at_its_end(batched: bool) -> None:
    loop = asyncio.new_event_loop()
    try:
        dp, published = _counting(loop)
        endpoint, events = _events(TUNNELS)
        if batched:
            with dp.batch():
                for event in events:
                    dp.on_event(endpoint, event)
                assert published == []  # nothing half-built reaches the workers
            assert len(published) == 1
        else:
            for event in events:
                dp.on_event(endpoint, event)
            assert len(published) == TUNNELS  # one table per Child SA: before its answer leaves
        assert len(dp.tunnels()) == TUNNELS
        assert published[-1] == max(published) > 0
    finally:
        loop.close()
