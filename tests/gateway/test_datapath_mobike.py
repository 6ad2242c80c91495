"""The data path follows MOBIKE's IkeSaAddressesUpdated (no TUN device needed: the table only)."""

from __future__ import annotations

import asyncio
import os

import pytest

from ikev2lib.esp import BACKEND, EspSA
from ikev2lib.events import IkeSaAddressesUpdated
from ikev2lib.gateway.datapath import DataPath, _Tunnel
from ikev2lib.gateway.model import DataPathConfig

pytestmark = pytest.mark.skipif(BACKEND != "c", reason="the forwarder table holds C ESP SAs")

SELECTOR = (4, 0, 0, 65535, bytes([10, 1, 0, 0]), bytes([10, 1, 255, 255]))


def test_a_mobike_move_moves_the_child_sas_and_their_encapsulation() -> None:
    loop = asyncio.new_event_loop()
    try:
        dp = DataPath(DataPathConfig(workers=1), "192.0.2.2", 4500, loop)
        key = os.urandom(20)
        inbound, outbound = EspSA(0x1001, "aes128gcm16", key, "inbound"), EspSA(0x2002, "aes128gcm16", key, "outbound")
        tunnel = _Tunnel((7, 1), "c", dp._slot("c"), inbound, outbound, None, None, 0x1001, False, ("192.0.2.1", 4500),
                         1400, (SELECTOR,), (SELECTOR,), (), 1)
        other = _Tunnel((8, 1), "c", dp._slot("c"), inbound, outbound, None, None, 0x1002, False, ("192.0.2.9", 4500),
                        1400, (SELECTOR,), (SELECTOR,), (), 2)
        dp._tunnels = {tunnel.key: tunnel, other.key: other}
        dp._publish()
        dp.on_event(None, IkeSaAddressesUpdated(
            ike_sa_id=7, old_local_addr=("192.0.2.2", 500), local_addr=("192.0.2.2", 500),
            old_remote_addr=("192.0.2.1", 4500), remote_addr=("198.51.100.1", 40001), udp_encap=True))
        assert (tunnel.peer, tunnel.udp_encap) == (("198.51.100.1", 40001), True)
        assert (other.peer, other.udp_encap) == (("192.0.2.9", 4500), False)  # another IKE SA's: untouched
        dp.on_event(None, IkeSaAddressesUpdated(
            ike_sa_id=7, old_local_addr=("192.0.2.2", 500), local_addr=("192.0.2.2", 500),
            old_remote_addr=("198.51.100.1", 40001), remote_addr=("192.0.2.1", 4500), udp_encap=False))
        assert (tunnel.peer, tunnel.udp_encap) == (("192.0.2.1", 4500), False)
    finally:
        loop.close()
