"""asyncio driver: runs an `IkeEndpoint` on two UDP sockets (IKE port and NAT-T port) and, for ESP
without UDP encapsulation, a raw IP protocol-50 socket.

It only moves bytes and runs timers (aioquic's `QuicConnectionProtocol` shape): datagrams in ->
`endpoint.receive_datagram`, then `transmit()` sends `datagrams_to_send` and re-arms the one timer.
On the NAT-T socket it demultiplexes by the RFC 3948 rules: non-ESP marker -> IKE (handed to the
engine marker and all), a single 0xFF -> NAT keepalive (ignored), anything else -> ESP, decapsulated
with the inbound ESP SA of that SPI (learned from the engine's Child SA events).

ESP of a Child SA goes where its event's `udp_encap` says (RFC 3948: a NAT was detected, or
`IkeConfig.encap` forced it): UDP-encapsulated on the NAT-T socket, otherwise raw ESP (IP protocol 50)
on a raw socket (`raw_esp.RawEspSocket`), opened when the first Child SA without encapsulation appears.
That socket needs CAP_NET_RAW; if it cannot be opened, `send_esp` and `next_event` raise
`RawEspUnavailable` naming the cause (ESP is never silently encapsulated instead). An inbound packet is
accepted only on the path of its SA (raw or UDP) and, when raw, only from the peer's address; every
refused packet is counted in `esp_drops` by reason. On loopback with both peers on one address each
raw socket also sees the other's ESP (counted as `unknown_spi`). Authentic UDP-encapsulated ESP from
another address than the IKE SA's is reported to the engine (`peer_address_seen`), which follows a
peer behind a NAT to its new mapping (RFC 7296 2.23). NAT keepalives go out from the NAT-T socket.

MOBIKE (RFC 4555): bound to a wildcard `host` ("0.0.0.0" or "::"), the driver sends each datagram
from the source address the engine chose (`IkeEndpoint.datagrams_with_source`: the IKE SA's
`local_addr`) with `sendmsg` and IP_PKTINFO / IPV6_PKTINFO, and UDP-encapsulated ESP from its IKE
SA's address the same way; bound to one address it sends from that one (the source is ignored). ESP
goes to the IKE SA's current peer address (read at every packet) with the encapsulation of the last
IkeSaAddressesUpdated. The endpoint's factory gets the bound (wildcard) address: give the endpoint the
real address of the host (it is hashed into NAT detection). Raw ESP leaves from whatever the kernel
picks, and received datagrams reach the engine without their destination address (no IP_PKTINFO on
receive yet).

Sockets are IPv4 or IPv6 as `host` is. With `esp_elsewhere=True` (the gateway's data path, which has
sockets of its own in the NAT-T port's SO_REUSEPORT group) the driver moves IKE only: `event_hook`
sees each event before the datagrams of the same call leave, so a Child SA is installed in the data
path before the peer can use it, and ESP that still reaches this socket is counted, not decapsulated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from ..config import IkeConfig
from ..endpoint import IkeEndpoint
from ..esp import EspError
from ..events import Address, ChildSaCreated, ChildSaDeleted, ChildSaRekeyed, Event, IkeSaAddressesUpdated
from ..exceptions import LocalProtocolError
from ..natt import NATT_KEEPALIVE, NON_ESP_MARKER, UdpKind, classify_udp4500
from .raw_esp import RawEspSocket, RawEspUnavailable

__all__ = ["AsyncioIkeDriver", "MAX_QUEUED_EVENTS", "RawEspUnavailable"]

MAX_QUEUED_EVENTS = 10_000  # events kept for `next_event` callers; beyond that the oldest are dropped
IP_PKTINFO = int(getattr(socket, "IP_PKTINFO", 8))  # <linux/in.h>; typeshed lacks it

EspHandler = Callable[[int, int, bytes], None]  # (child_id, next_header, inner packet)
EventHook = Callable[[IkeEndpoint, Event], None]  # called for every event before the datagrams go out
# called once per transmit, before the datagrams leave: a future to wait for before they are sent
# (HA: the replica has the state that produced them), or None when there is nothing new to wait for.
# A future, not a coroutine: one that a later call supersedes is dropped unawaited.
SendGate = Callable[[], "asyncio.Future[Any] | None"]


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, driver: AsyncioIkeDriver, natt: bool) -> None:
        self.driver = driver
        self.natt = natt

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.driver._datagram(data, (str(addr[0]), int(addr[1])), self.natt)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: the engine retransmits
        self.driver.socket_errors += 1


class AsyncioIkeDriver:
    """Build with `await AsyncioIkeDriver.create(...)`; use `initiate`, `request`, `next_event`,
    `send_esp`; `close()` at the end."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.endpoint: IkeEndpoint
        self._ike: asyncio.DatagramTransport | None = None
        self._natt: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._host = "127.0.0.1"
        self._wildcard = False  # bound to 0.0.0.0 / ::: each datagram leaves from the source the engine chose
        self._senders: dict[int, socket.socket] = {}  # id(transport) -> a dup of its socket, for sendmsg
        self._raw: RawEspSocket | None = None  # raw ESP, opened for the first Child SA without UDP encap
        self._events: asyncio.Queue[Event | RawEspUnavailable] = asyncio.Queue()
        # SPI -> (ike_sa_id, child_id, EspSA, udp_encap); child_id -> (ike_sa_id, EspSA, udp_encap)
        self._inbound: dict[bytes, tuple[int, int, Any, bool]] = {}
        self._outbound: dict[int, tuple[int, Any, bool]] = {}
        self.esp_handler: EspHandler | None = None
        # a data path of its own (the gateway's): this driver then moves IKE only, and the hook sees
        # every event before the message that completes a Child SA leaves
        self.esp_elsewhere = False
        self.event_hook: EventHook | None = None
        self.socket_errors = 0
        self.send_gate: SendGate | None = None
        self._gated: list[tuple[bytes, Address, str | None]] = []  # waiting for the gate, in order
        self._gate_wait: asyncio.Future[Any] | None = None  # the newest future the gate gave
        self._gate_task: asyncio.Task[None] | None = None
        self.esp_drops: dict[str, int] = {}  # refused inbound ESP by reason
        self.esp_received = 0
        self.esp_sent = 0

    @classmethod
    async def create(
        cls,
        endpoint_factory: Callable[[Address], IkeEndpoint],
        *,
        host: str = "127.0.0.1",
        ike_port: int = 500,
        natt_port: int = 4500,
        esp_elsewhere: bool = False,
    ) -> AsyncioIkeDriver:
        """Bind both sockets (port 0 = any free port), then build the endpoint for the bound address.
        esp_elsewhere: ESP is a data path's (`ikev2lib.gateway.datapath`): the NAT-T socket is opened
        with SO_REUSEPORT as the first of its group, so the data path's sockets can join it."""
        loop = asyncio.get_running_loop()
        driver = cls(loop)
        driver._host = host
        driver.esp_elsewhere = esp_elsewhere
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        ike, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(driver, False), local_addr=(host, ike_port), family=family
        )
        natt, _ = await loop.create_datagram_endpoint(
            lambda: _Socket(driver, True), local_addr=(host, natt_port), family=family, reuse_port=esp_elsewhere,
        )
        driver._ike, driver._natt = ike, natt
        driver._wildcard = ipaddress.ip_address(host).is_unspecified
        bound = ike.get_extra_info("sockname")
        driver.endpoint = endpoint_factory((str(bound[0]), int(bound[1])))
        driver.endpoint.ctx.natt_port = driver.natt_port  # what MOBIKE's NAT detection hashes as ours
        return driver

    @property
    def natt_port(self) -> int:
        if self._natt is None:
            raise RuntimeError("driver is closed")
        return int(self._natt.get_extra_info("sockname")[1])

    @property
    def ike_port(self) -> int:
        if self._ike is None:
            raise RuntimeError("driver is closed")
        return int(self._ike.get_extra_info("sockname")[1])

    # ---- the engine's user API, with transmit() after each call ------------------------------------

    def initiate(self, config: IkeConfig, remote_addr: Address) -> int:
        ike_sa_id = self.endpoint.initiate(config, remote_addr, self.loop.time())
        self.transmit()
        return ike_sa_id

    def request(self, method: Callable[..., object], *args: Any) -> None:
        """Call an endpoint request method (e.g. `driver.request(endpoint.rekey_ike_sa, sa_id)`)."""
        method(*args)
        self.transmit()

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next engine event; raises RawEspUnavailable (after the Child SA's event) if a Child SA
        needs raw ESP and the raw socket cannot be opened."""
        item = await asyncio.wait_for(self._events.get(), timeout)
        if isinstance(item, RawEspUnavailable):
            raise item
        return item

    # ---- ESP -------------------------------------------------------------------------------------

    @property
    def esp_dropped(self) -> int:
        return sum(self.esp_drops.values())

    def send_esp(self, child_id: int, inner: bytes) -> None:
        """Encrypt `inner` (an IP packet) with the Child SA's outbound SA and send it, UDP-encapsulated
        or as raw ESP as the Child SA says. KeyError: no such Child SA; RawEspUnavailable: no raw socket."""
        entry = self._outbound.get(child_id)
        if entry is None or self._natt is None:
            raise KeyError(f"no outbound ESP SA for child {child_id}")
        ike_sa_id, sa, udp_encap = entry
        ike_sa = self.endpoint.connection(ike_sa_id)
        peer = ike_sa.remote_addr  # live: MOBIKE and NAT mapping changes move it
        if udp_encap:
            self._send(self._natt, sa.encap(inner), peer, ike_sa.source_ip)
        elif not self._raw_socket().sendto(sa.encap(inner), peer[0]):
            self.socket_errors += 1
            return
        self.esp_sent += 1

    def _raw_socket(self) -> RawEspSocket:
        if self._raw is None:
            self._raw = RawEspSocket(self.loop, self._host, self._esp, self._drop)
        return self._raw

    def _drop(self, reason: str) -> None:
        self.esp_drops[reason] = self.esp_drops.get(reason, 0) + 1

    def _esp(self, data: bytes | memoryview, raw_source: str | None = None, udp_source: Address | None = None) -> None:
        """One inbound ESP packet; `raw_source` is the IPv4 source if it came on the raw socket,
        `udp_source` the address and port if it came UDP-encapsulated."""
        entry = self._inbound.get(bytes(data[:4]))
        if entry is None:
            self._drop("unknown_spi")
            return
        ike_sa_id, child_id, sa, udp_encap = entry
        if udp_encap != (raw_source is None):
            self._drop("wrong_encapsulation")  # raw ESP for a UDP-encapsulated SA, or the reverse
            return
        if raw_source is not None and raw_source != self._peer_ip(ike_sa_id):
            self._drop("wrong_source")
            return
        try:
            next_header, inner = sa.decap(data)
        except EspError:  # authentication/replay/malformed...: the data plane counts the reason
            self._drop("decap")
            return
        self.esp_received += 1
        peer = self._peer_addr(ike_sa_id) if udp_source is not None else None
        if udp_source is not None and peer is not None and udp_source != peer:
            # authentic, from elsewhere: the peer's NAT may have a new mapping (RFC 7296 2.23)
            self.endpoint.peer_address_seen(ike_sa_id, udp_source, self.loop.time())
            self.transmit()
        if self.esp_handler is not None:
            self.esp_handler(child_id, next_header, inner)

    def _peer_ip(self, ike_sa_id: int) -> str | None:
        peer = self._peer_addr(ike_sa_id)
        return None if peer is None else peer[0]

    def _peer_addr(self, ike_sa_id: int) -> Address | None:
        try:
            return self.endpoint.connection(ike_sa_id).remote_addr
        except LocalProtocolError:  # the IKE SA is gone
            return None

    # ---- plumbing ----------------------------------------------------------------------------------

    def _datagram(self, data: bytes, addr: Address, natt: bool) -> None:
        if natt:
            kind = classify_udp4500(data)
            if kind is UdpKind.ESP:
                if self.esp_elsewhere:  # the data path's steering sends ESP past this socket
                    self._drop("esp_on_ike_socket")
                else:
                    self._esp(data, udp_source=addr)
                return
            if kind is not UdpKind.IKE:
                return  # a NAT-keepalive, or too short to be anything
        self.endpoint.receive_datagram(data, addr, self.loop.time())
        self.transmit()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.endpoint.handle_timer(self.loop.time())
        self.transmit()

    def _track(self, event: Event) -> None:
        if isinstance(event, (ChildSaCreated, ChildSaRekeyed)) and event.ike_sa_id is not None:
            self._inbound[event.spi_in] = (event.ike_sa_id, event.child_id, event.inbound, event.udp_encap)
            self._outbound[event.child_id] = (event.ike_sa_id, event.outbound, event.udp_encap)
            if not event.udp_encap:
                try:
                    self._raw_socket()
                except RawEspUnavailable as exc:
                    self._events.put_nowait(exc)  # next_event raises it, right after this event
        elif isinstance(event, ChildSaDeleted):
            self._inbound.pop(event.spi_in, None)
            self._outbound.pop(event.child_id, None)
        elif isinstance(event, IkeSaAddressesUpdated):  # MOBIKE: the Child SAs' encapsulation may change
            encap = event.udp_encap
            for spi, (ike_sa_id, child_id, esp_sa, _) in list(self._inbound.items()):
                if ike_sa_id == event.ike_sa_id:
                    self._inbound[spi] = (ike_sa_id, child_id, esp_sa, encap)
            for child_id, (ike_sa_id, esp_sa, _) in list(self._outbound.items()):
                if ike_sa_id == event.ike_sa_id:
                    self._outbound[child_id] = (ike_sa_id, esp_sa, encap)
            if not encap and self._outbound:
                try:
                    self._raw_socket()
                except RawEspUnavailable as exc:
                    self._events.put_nowait(exc)

    def transmit(self) -> None:
        now = self.loop.time()
        # events first: a new Child SA's SPIs (and the raw socket) are ready before the message that
        # completes it leaves, so the peer's first ESP packet finds them
        while (event := self.endpoint.next_event()) is not None:
            if self._events.qsize() >= MAX_QUEUED_EVENTS:
                self._events.get_nowait()
            self._events.put_nowait(event)
            if self.event_hook is not None:
                self.event_hook(self.endpoint, event)
            if not self.esp_elsewhere:
                self._track(event)
        datagrams = self.endpoint.datagrams_with_source(now)
        wait = self.send_gate() if self.send_gate is not None else None
        if wait is not None:
            self._gate_wait = wait
        if self._gate_wait is not None or self._gate_task is not None:
            self._gated += datagrams  # behind whatever waits already: one SA's messages keep their order
            if self._gate_task is None:
                self._gate_task = self.loop.create_task(self._release())
        else:
            self._send_all(datagrams)
        deadline = self.endpoint.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                self._timer = self.loop.call_at(deadline, self._on_timer)

    def _send(self, transport: asyncio.DatagramTransport, data: bytes, addr: Address, source: str | None) -> None:
        """sendto, or on a wildcard socket sendmsg from `source` (IP_PKTINFO / IPV6_PKTINFO)."""
        if not self._wildcard or source is None:
            transport.sendto(data, addr)
            return
        sender = self._senders.get(id(transport))
        if sender is None:
            raw = transport.get_extra_info("socket")
            sender = socket.socket(raw.family, raw.type, raw.proto, fileno=os.dup(raw.fileno()))
            self._senders[id(transport)] = sender
        try:
            packed = ipaddress.ip_address(source).packed
            if len(packed) == 4:
                ancillary = (socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=I4s4s", 0, packed, bytes(4)))
            else:
                ancillary = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, struct.pack("=16sI", packed, 0))
            sender.sendmsg([data], [ancillary], 0, addr)
        except (OSError, ValueError):  # a full buffer, an address the host no longer has: IKE retransmits
            self.socket_errors += 1

    def _send_all(self, datagrams: list[tuple[bytes, Address, str | None]]) -> None:
        for data, addr, source in datagrams:
            # IKE behind the non-ESP marker and NAT keepalives go from the NAT-T port (RFC 3948)
            transport = self._natt if data[:4] == NON_ESP_MARKER or data == NATT_KEEPALIVE else self._ike
            if transport is not None:
                self._send(transport, data, addr, source)

    async def _release(self) -> None:
        """Send the gated datagrams once the newest gate future is done; transmits meanwhile queue
        behind them (the newest future covers what they recorded)."""
        try:
            while True:
                wait, self._gate_wait = self._gate_wait, None
                if wait is not None:
                    await asyncio.shield(wait)
                batch, self._gated = self._gated, []
                self._send_all(batch)
                if self._gate_wait is None and not self._gated:
                    return
        finally:
            self._gate_task = None

    def close(self) -> None:
        if self._gate_task is not None:
            self._gate_task.cancel()
        for sender in self._senders.values():
            sender.close()
        self._senders.clear()
        if self._timer is not None:
            self._timer.cancel()
        for transport in (self._ike, self._natt):
            if transport is not None:
                transport.close()
        self._ike = self._natt = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
