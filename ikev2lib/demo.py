"""The demo: two IKEv2 endpoints in one process on loopback, talking over real UDP sockets.

They negotiate an IKE SA and a Child SA (PSK, X25519, AES-GCM), push real IPv4/UDP packets through
the ESP SAs of the C data plane (UDP-encapsulated: the initiator sets `encap=True`, so no raw ESP
socket and no privilege is needed), rekey the Child SA
and the IKE SA, send traffic again, delete everything, and print a readable summary.
Every wait is bounded in time and every traffic loop in packets and time.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from collections.abc import Callable
from typing import TextIO, TypeVar

from .config import ChildConfig, IkeConfig
from .drivers.asyncio_udp import AsyncioIkeDriver
from .endpoint import IkeEndpoint
from .events import (
    ChildSaCreated,
    ChildSaDeleted,
    ChildSaRekeyed,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
)

__all__ = ["run_demo"]

STEP_TIMEOUT = 10.0  # seconds any single protocol step may take before the demo fails
TRAFFIC_PACKETS = 20_000  # packets per traffic burst (upper bound)
TRAFFIC_SECONDS = 2.0  # and its time bound
INNER_SIZE = 1000  # bytes of each inner IPv4 packet
BATCH = 16  # packets sent back to back
WINDOW = 48  # packets in flight at most (the receiver shares this event loop and the socket buffer)
DATAPLANE_PACKETS = 200_000  # in-process encap+decap measurement: packet bound
DATAPLANE_SECONDS = 1.0  # and time bound
PSK = b"ikev2lib demo pre-shared key"

_E = TypeVar("_E", bound=Event)


def _inner_packet(seq: int) -> bytes:
    """An IPv4/UDP packet 10.1.0.1:4000 -> 10.2.0.1:5000 of INNER_SIZE bytes (checksum 0 = none)."""
    payload = struct.pack(">Q", seq) + bytes(INNER_SIZE - 28 - 8)
    udp = struct.pack(">HHHH", 4000, 5000, 8 + len(payload), 0)
    total = 20 + len(udp) + len(payload)
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, seq & 0xFFFF, 0, 64, 17, 0, bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1]))
    checksum = _ip_checksum(header)
    header = header[:10] + struct.pack(">H", checksum) + header[12:]
    return header + udp + payload


def _ip_checksum(header: bytes) -> int:
    total = int(sum(struct.unpack(f">{len(header) // 2}H", header)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class _Peer:
    def __init__(self, name: str, driver: AsyncioIkeDriver) -> None:
        self.name = name
        self.driver = driver
        self.seen: list[Event] = []
        self.received = 0
        driver.esp_handler = self._on_esp

    def _on_esp(self, child_id: int, next_header: int, inner: bytes) -> None:
        if next_header == 4 and len(inner) == INNER_SIZE:
            self.received += 1

    async def wait_for(self, kind: type[_E], predicate: Callable[[_E], bool] = lambda e: True) -> _E:
        for event in self.seen:
            if isinstance(event, kind) and predicate(event):
                self.seen.remove(event)
                return event
        deadline = time.monotonic() + STEP_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {kind.__name__} within {STEP_TIMEOUT} s")
            event = await self.driver.next_event(timeout=remaining)
            if isinstance(event, kind) and predicate(event):
                return event
            self.seen.append(event)


async def _traffic(sender: _Peer, receiver: _Peer, child_id: int) -> tuple[int, int, float]:
    """Send a bounded burst through `child_id`; returns (sent, received, seconds)."""
    before = receiver.received
    start = time.perf_counter()
    sent = 0
    while sent < TRAFFIC_PACKETS and time.perf_counter() - start < TRAFFIC_SECONDS:
        if sent - (receiver.received - before) >= WINDOW:
            await asyncio.sleep(0)  # one event-loop turn lets the receiving socket read
            continue
        for _ in range(BATCH):
            sender.driver.send_esp(child_id, _inner_packet(sent))
            sent += 1
    settle_until = time.perf_counter() + 1.0
    while receiver.received - before < sent and time.perf_counter() < settle_until:
        await asyncio.sleep(0)
    return sent, receiver.received - before, time.perf_counter() - start


def _spi(value: bytes) -> str:
    return "0x" + value.hex()


async def _demo(out: TextIO) -> int:
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    responder_cfg = IkeConfig(
        ike_proposals="aes128gcm16-prfsha256-x25519,aes256gcm16-prfsha384-ecp384",
        local_id="gw.example.org",
        remote_id="alice@example.org",
        psk=PSK,
        children=(ChildConfig(esp_proposals="aes128gcm16,aes256gcm16", local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)),),
    )
    gw = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(responder_cfg, local_addr=addr), ike_port=0, natt_port=0)
    initiator_cfg = IkeConfig(
        ike_proposals="aes128gcm16-prfsha256-x25519",
        local_id="alice@example.org",
        remote_id="gw.example.org",
        psk=PSK,
        children=(ChildConfig(esp_proposals="aes128gcm16", local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",)),),
        encap=True,
        remote_natt_port=gw.natt_port,
    )
    alice_driver = await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(local_addr=addr), ike_port=0, natt_port=0)
    alice, gateway = _Peer("alice", alice_driver), _Peer("gw", gw)
    try:
        say("ikev2lib demo: two IKEv2 endpoints on 127.0.0.1 over UDP (IKE + NAT-T ports), ESP in the C data plane")
        say(f"  alice  IKE port {alice_driver.ike_port}, NAT-T port {alice_driver.natt_port}")
        say(f"  gw     IKE port {gw.ike_port}, NAT-T port {gw.natt_port}")
        t0 = time.perf_counter()
        sa_id = alice_driver.initiate(initiator_cfg, ("127.0.0.1", gw.ike_port))
        established = await alice.wait_for(IkeSaEstablished)
        child = await alice.wait_for(ChildSaCreated)
        gw_child = await gateway.wait_for(ChildSaCreated)
        handshake_ms = (time.perf_counter() - t0) * 1000
        say()
        say(f"IKE SA established in {handshake_ms:.1f} ms (IKE_SA_INIT + IKE_AUTH over UDP)")
        say(f"  proposal   {established.proposal}")
        say(f"  SPIs       i={_spi(established.spi_i)} r={_spi(established.spi_r)}")
        say(f"  identities {established.local_id} <-> {established.remote_id} (PSK)")
        say(f"  NAT-T      {'yes, UDP encapsulation on the NAT-T port' if established.udp_encap else 'no'}")
        say(f"Child SA #{child.child_id}: {child.proposal}, {child.mode} mode")
        say(f"  SPIs       in={_spi(child.spi_in)} out={_spi(child.spi_out)}")
        say(f"  traffic    {', '.join(child.local_ts)} === {', '.join(child.remote_ts)}")

        sent, got, secs = await _traffic(alice, gateway, child.child_id)
        say(f"  ESP alice -> gw: {sent} packets of {INNER_SIZE} bytes sent, {got} decrypted, "
            f"{got / secs:,.0f} packets/s through loopback UDP")
        sent_b, got_b, secs_b = await _traffic(gateway, alice, gw_child.child_id)
        say(f"  ESP gw -> alice: {sent_b} sent, {got_b} decrypted, {got_b / secs_b:,.0f} packets/s")

        alice_driver.request(alice_driver.endpoint.rekey_child_sa, sa_id, child.child_id)
        rekeyed = await alice.wait_for(ChildSaRekeyed)
        await alice.wait_for(ChildSaDeleted, lambda e: e.child_id == child.child_id)
        say()
        say(f"Child SA rekeyed: #{child.child_id} -> #{rekeyed.child_id}, SPIs in={_spi(rekeyed.spi_in)} "
            f"out={_spi(rekeyed.spi_out)}; old SA deleted")
        sent2, got2, secs2 = await _traffic(alice, gateway, rekeyed.child_id)
        say(f"  ESP through the new SA: {sent2} sent, {got2} decrypted, {got2 / secs2:,.0f} packets/s")

        alice_driver.request(alice_driver.endpoint.rekey_ike_sa, sa_id)
        ike_rekeyed = await alice.wait_for(IkeSaRekeyed)
        say(f"IKE SA rekeyed: SPIs i={_spi(ike_rekeyed.spi_i)} r={_spi(ike_rekeyed.spi_r)} ({ike_rekeyed.proposal})")
        alice_driver.request(alice_driver.endpoint.send_dpd, sa_id)
        alice_driver.request(alice_driver.endpoint.delete_ike_sa, sa_id)
        deleted = await alice.wait_for(IkeSaDeleted)
        await gateway.wait_for(IkeSaDeleted)
        say(f"IKE SA deleted ({deleted.reason}); both endpoints now hold "
            f"{len(alice_driver.endpoint)} + {len(gw.endpoint)} IKE SAs")

        inbound = rekeyed.inbound
        sa_out, sa_in = rekeyed.outbound, (await gateway.wait_for(ChildSaRekeyed)).inbound
        packet = _inner_packet(0)
        done = 0
        start = time.perf_counter()
        while done < DATAPLANE_PACKETS and time.perf_counter() - start < DATAPLANE_SECONDS:
            for _ in range(1000):
                sa_in.decap(sa_out.encap(packet))
            done += 1000
        plane_rate = done / (time.perf_counter() - start)
        say()
        say("Summary")
        say(f"  ESP packets decrypted by gw: {gateway.received}, by alice: {alice.received}; "
            f"dropped: {gw.esp_dropped + alice_driver.esp_dropped}")
        say(f"  data plane: {type(inbound).__module__}.{type(inbound).__name__}; in-process encap+decap of "
            f"{INNER_SIZE}-byte packets on one core: {plane_rate:,.0f} packets/s (single-packet API)")
        counters = {"alice": alice_driver.endpoint.stats, "gw": gw.endpoint.stats}
        say("  IKE counters (drops, retransmissions, ...): "
            + ", ".join(f"{name} {value or 'none'}" for name, value in counters.items()))
        ok = got > 0 and got_b > 0 and got2 > 0 and len(alice_driver.endpoint) == 0 and len(gw.endpoint) == 0
        say("demo " + ("OK" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        alice_driver.close()
        gw.close()


def run_demo(out: TextIO | None = None) -> int:
    """Run the demo, print the summary; 0 on success, 1 on failure."""
    stream = out if out is not None else sys.stdout
    try:
        result: int = asyncio.run(_demo(stream))
        return result
    except (TimeoutError, OSError) as exc:
        print(f"demo FAILED: {exc}", file=stream)
        return 1
