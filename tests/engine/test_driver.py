"""The asyncio UDP driver on loopback (real sockets, free ports), and the demo end to end."""

from __future__ import annotations

import asyncio
import io

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.demo import run_demo
from ikev2lib.drivers.asyncio_udp import AsyncioIkeDriver
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import ChildSaCreated, Event, IkeSaDeleted, IkeSaEstablished

PSK = b"driver test key"


async def _until(driver: AsyncioIkeDriver, kind: type, limit: float = 5.0) -> Event:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        event = await driver.next_event(timeout=max(0.01, deadline - loop.time()))
        if isinstance(event, kind):
            return event


async def _scenario(encap: bool) -> tuple[int, int, bool]:
    responder_cfg = IkeConfig(
        local_id="gw.example.org",
        psk=PSK,
        children=(ChildConfig(local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)),),
    )
    gw = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(responder_cfg, local_addr=addr), ike_port=0, natt_port=0)
    alice = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(local_addr=addr), ike_port=0, natt_port=0)
    try:
        cfg = IkeConfig(
            local_id="alice@example.org",
            psk=PSK,
            children=(ChildConfig(local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",)),),
            encap=encap,
            remote_natt_port=gw.natt_port,
        )
        # garbage first: keepalive, unknown-SPI ESP and junk IKE on both ports must not disturb anything
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as junk:
            for data in (b"\xff", b"\x12\x34\x56\x78" + bytes(40), bytes(4) + b"not ike", b"\x01" * 60):
                junk.sendto(data, ("127.0.0.1", gw.natt_port))
                junk.sendto(data, ("127.0.0.1", gw.ike_port))
        await asyncio.sleep(0.05)
        sa_id = alice.initiate(cfg, ("127.0.0.1", gw.ike_port))
        established = await _until(alice, IkeSaEstablished)
        child = await _until(alice, ChildSaCreated)
        await _until(gw, ChildSaCreated)
        received: list[bytes] = []
        gw.esp_handler = lambda child_id, nh, inner: received.append(inner)
        inner = bytes.fromhex("450000200001000040110000") + bytes([10, 1, 0, 1, 10, 2, 0, 1]) + bytes(12)
        if encap:
            for _ in range(10):
                alice.send_esp(child.child_id, inner)
            for _ in range(200):
                if len(received) == 10:
                    break
                await asyncio.sleep(0.005)
        alice.request(alice.endpoint.delete_ike_sa, sa_id)
        await _until(alice, IkeSaDeleted)
        await _until(gw, IkeSaDeleted)
        assert isinstance(established, IkeSaEstablished)
        assert gw.esp_dropped == 2  # the unknown-SPI ESP packet and the 60-byte junk on the NAT-T port
        return len(received), len(alice.endpoint) + len(gw.endpoint), established.udp_encap
    finally:
        alice.close()
        gw.close()


def test_driver_handshake_esp_and_delete_over_natt() -> None:
    received, left, encap = asyncio.run(_scenario(True))
    assert (received, left, encap) == (10, 0, True)


def test_driver_handshake_without_nat_stays_on_the_ike_port() -> None:
    received, left, encap = asyncio.run(_scenario(False))
    assert (left, encap) == (0, False)


def test_demo_runs_and_reports() -> None:
    out = io.StringIO()
    assert run_demo(out) == 0
    text = out.getvalue()
    for expected in (
        "IKE SA established",
        "aes128gcm16-prfsha256-x25519",
        "Child SA rekeyed",
        "IKE SA rekeyed",
        "IKE SA deleted",
        "packets/s",
        "demo OK",
    ):
        assert expected in text
