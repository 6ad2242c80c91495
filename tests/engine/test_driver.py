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


GW, ALICE = "127.0.0.2", "127.0.0.1"  # two loopback addresses: each raw ESP socket sees only its own ESP


async def _exchange(sender: AsyncioIkeDriver, child_id: int, receiver: AsyncioIkeDriver, count: int) -> list[bytes]:
    received: list[bytes] = []
    receiver.esp_handler = lambda child_id, nh, inner: received.append(inner)
    inner = bytes.fromhex("450000200001000040110000") + bytes([10, 1, 0, 1, 10, 2, 0, 1]) + bytes(12)
    for _ in range(count):
        sender.send_esp(child_id, inner)
    for _ in range(200):  # bounded wait (at most 1 s) for loopback delivery
        if len(received) == count:
            break
        await asyncio.sleep(0.005)
    return received


async def _scenario(encap: bool) -> tuple[int, int, int, bool, bool]:
    responder_cfg = IkeConfig(
        local_id="gw.example.org",
        psk=PSK,
        children=(ChildConfig(local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)),),
    )
    gw = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(responder_cfg, local_addr=addr), host=GW,
                                       ike_port=0, natt_port=0)
    alice = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(local_addr=addr), host=ALICE, ike_port=0,
                                          natt_port=0)
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
                junk.sendto(data, (GW, gw.natt_port))
                junk.sendto(data, (GW, gw.ike_port))
        await asyncio.sleep(0.05)
        sa_id = alice.initiate(cfg, (GW, gw.ike_port))
        established = await _until(alice, IkeSaEstablished)
        child = await _until(alice, ChildSaCreated)
        gw_child = await _until(gw, ChildSaCreated)
        assert isinstance(child, ChildSaCreated) and isinstance(gw_child, ChildSaCreated)
        to_gw = await _exchange(alice, child.child_id, gw, 10)
        to_alice = await _exchange(gw, gw_child.child_id, alice, 10)
        alice.request(alice.endpoint.delete_ike_sa, sa_id)
        await _until(alice, IkeSaDeleted)
        await _until(gw, IkeSaDeleted)
        assert isinstance(established, IkeSaEstablished)
        assert gw.esp_drops == {"unknown_spi": 2}  # the unknown-SPI ESP packet and the 60-byte junk on the NAT-T port
        assert alice.esp_drops == {}
        assert child.udp_encap == gw_child.udp_encap
        return (len(to_gw), len(to_alice), len(alice.endpoint) + len(gw.endpoint), established.udp_encap,
                child.udp_encap)
    finally:
        alice.close()
        gw.close()


def test_driver_handshake_esp_and_delete_over_natt() -> None:
    assert asyncio.run(_scenario(True)) == (10, 10, 0, True, True)


def test_driver_without_nat_stays_on_the_ike_port_and_sends_raw_esp() -> None:
    # no NAT: ESP is IP protocol 50 on the raw socket (needs CAP_NET_RAW); IKE floats to the NAT-T port
    # all the same, as MOBIKE (on by default) has it (RFC 4555 3.3)
    assert asyncio.run(_scenario(False)) == (10, 10, 0, True, False)


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
