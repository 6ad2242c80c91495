"""An ikev2lib endpoint inside a network namespace, for the strongSwan interop tests.

`IkeLibPeer(ns, address, responder_config)` runs ikev2lib's own asyncio driver
(`ikev2lib.drivers.asyncio_udp.AsyncioIkeDriver`: real UDP sockets on ports 500 and 4500, non-ESP
marker demultiplexing, ESP decapsulation by SPI) on an event loop in a background thread. That thread
joins the namespace with setns(2) before it creates the loop and the sockets (setns changes only the
calling thread), so the test thread stays in the root namespace and can drive charon with blocking
swanctl calls while the engine keeps answering. Everything the test does with the engine goes
through `call()`, which runs on the loop thread: the engine is never touched from two threads.

Events are collected for `wait_for()`, decapsulated ESP for `wait_for_esp()`; `send_esp()` sends through
a Child SA's outbound SA. `drop()` loses chosen IKE messages (in or out) so that tests can exercise
retransmission on both sides without a lossy link (this kernel has no netem). Also here: IPv4/UDP
packet building/reading and a UDP receiver that signals when it is bound.

For MOBIKE (RFC 4555) tests, `bind_host="0.0.0.0"` binds the driver's sockets to the wildcard
address (the engine then picks each IKE datagram's source, sent with IP_PKTINFO) while `address`
stays the address the engine starts from, and `local_addresses_changed()` hands the engine the
namespace's new list of usable addresses. Each decapsulated ESP packet carries its arrival time
(`ReceivedEsp.at`, time.time()), to measure how long traffic stopped.

Every wait is bounded (`STEP_TIMEOUT`); `close()` stops the loop and closes the sockets.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ikev2lib.child_sa import EspFactory, default_esp_factory
from ikev2lib.config import IkeConfig
from ikev2lib.drivers.asyncio_udp import AsyncioIkeDriver
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import Address, Event

from .netns import CLONE_NEWNET, Namespace, _setns

__all__ = ["IkeLibPeer", "ReceivedEsp", "STEP_TIMEOUT", "udp_ipv4_packet", "udp_payload_of"]

STEP_TIMEOUT = 20.0  # seconds one protocol step may take (charon retransmits after 2 s)
START_TIMEOUT = 10.0  # seconds for the loop thread to bind its sockets
MAX_EVENTS = 10_000  # events kept for wait_for(); a test never produces nearly as many
MAX_RECEIVED_ESP = 10_000  # decapsulated ESP packets kept for the test
IKE_PORT = 500
NATT_PORT = 4500

_E = TypeVar("_E", bound=Event)
_T = TypeVar("_T")


@dataclass(frozen=True)
class ReceivedEsp:
    child_id: int
    next_header: int
    inner: bytes
    at: float = 0.0  # time.time() when the driver handed it over


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_ipv4_packet(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    """A valid IPv4/UDP packet (both checksums computed) carrying `payload`."""
    s, d = bytes(map(int, src.split("."))), bytes(map(int, dst.split(".")))
    length = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, length)
    udp_csum = _checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, length, udp_csum) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, 64, 17, 0, s, d)
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + udp


def udp_payload_of(packet: bytes) -> tuple[str, str, int, int, bytes] | None:
    """(src, dst, sport, dport, payload) of an IPv4/UDP packet, None for anything else."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != 17:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = int.from_bytes(packet[2:4], "big")
    if total > len(packet) or ihl < 20 or total < ihl + 8:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", packet, ihl)
    if ihl + ulen > total:
        return None
    src = ".".join(map(str, packet[12:16]))
    dst = ".".join(map(str, packet[16:20]))
    return src, dst, sport, dport, bytes(packet[ihl + 8:ihl + ulen])


class IkeLibPeer:
    """ikev2lib's asyncio driver on `address`:500/4500 inside `ns` (see the module docstring);
    `bind_host` (e.g. "0.0.0.0") binds the sockets there instead, the engine starting from `address`."""

    def __init__(self, ns: Namespace, address: str, config: IkeConfig | None = None,
                 *, allow_key_export: bool = True, cookie_threshold: int = 1_000,
                 esp_factory: EspFactory = default_esp_factory, bind_host: str | None = None) -> None:
        self.ns = ns
        self.bind_host = bind_host
        self.esp_factory = esp_factory
        self.cookie_threshold = cookie_threshold
        self.address = address
        self.config = config
        self.allow_key_export = allow_key_export
        self.loop: asyncio.AbstractEventLoop | None = None
        self.driver: AsyncioIkeDriver | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self.events: list[Event] = []  # every event, in order (guarded by _cond)
        self._consumed: set[int] = set()  # indexes in `events` already returned by wait_for
        self.esp: list[ReceivedEsp] = []  # decapsulated ESP, in order (guarded by _cond)
        # loss injection (used on the loop thread only): [direction, exchange type, is response, count]
        self._drops: list[list[Any]] = []
        # latency injection for outgoing IKE messages: (seconds, until loop time)
        self._latency: tuple[float, float] | None = None
        self.dropped: list[tuple[str, int, bool, int]] = []  # (direction, exchange, response, message ID)

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> IkeLibPeer:
        self._thread = threading.Thread(target=self._run, name=f"ikev2lib-{self.ns.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise TimeoutError("ikev2lib peer did not start")
        if self._error is not None:
            raise RuntimeError("ikev2lib peer failed to start") from self._error
        return self

    def _run(self) -> None:
        try:
            fd = os.open(f"/run/netns/{self.ns.name}", os.O_RDONLY)
            try:
                _setns(fd, CLONE_NEWNET)  # this thread only
            finally:
                os.close(fd)
            loop = asyncio.new_event_loop()
            self.loop = loop
            asyncio.set_event_loop(loop)

            def factory(addr: Address) -> IkeEndpoint:
                if self.bind_host is not None:  # wildcard sockets: the engine starts from `address`
                    addr = (self.address, addr[1])
                return IkeEndpoint(self.config, local_addr=addr, allow_key_export=self.allow_key_export,
                                   cookie_threshold=self.cookie_threshold, esp_factory=self.esp_factory)

            self.driver = loop.run_until_complete(AsyncioIkeDriver.create(
                factory, host=self.bind_host or self.address, ike_port=IKE_PORT, natt_port=NATT_PORT))
            self.driver.esp_handler = self._on_esp
            self._install_loss_hooks(self.driver)
            pump = loop.create_task(self._pump_events())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pump.cancel()
            loop.run_until_complete(asyncio.gather(pump, return_exceptions=True))
            self.driver.close()
            loop.close()

    async def _pump_events(self) -> None:
        driver = self.driver
        if driver is None:
            return
        while True:
            event = await driver.next_event()
            with self._cond:
                if len(self.events) < MAX_EVENTS:
                    self.events.append(event)
                self._cond.notify_all()

    # ---- loss injection: drop chosen IKE messages, to exercise retransmission on both sides --------

    def drop(self, direction: str, exchange_type: int, is_response: bool, count: int = 1) -> None:
        """Drop the next `count` IKE messages of this kind going `direction` ("in" or "out")."""
        if direction not in ("in", "out"):
            raise ValueError("direction must be 'in' or 'out'")
        self.call(lambda: self._drops.append([direction, exchange_type, is_response, count]))

    def _should_drop(self, direction: str, data: bytes) -> bool:
        ike = data[4:] if data[:4] == bytes(4) else data
        if len(ike) < 28 or not self._drops:
            return False
        exchange, response = ike[18], bool(ike[19] & 0x20)
        for rule in self._drops:
            if rule[0] == direction and rule[1] == exchange and rule[2] == response and rule[3] > 0:
                rule[3] -= 1
                self.dropped.append((direction, exchange, response, int.from_bytes(ike[20:24], "big")))
                return True
        return False

    def add_latency(self, seconds: float, duration: float) -> None:
        """For the next `duration` seconds, send every outgoing IKE message `seconds` late, in order
        (a long path: lets the requests of both ends cross). Late datagrams leave with a plain sendto:
        on wildcard sockets (`bind_host`) the kernel picks their source, not the engine."""
        def arm() -> None:
            if self.loop is not None:
                self._latency = (seconds, self.loop.time() + duration)
        self.call(arm)

    def _latency_for(self) -> float | None:
        if self._latency is None or self.loop is None or self.loop.time() > self._latency[1]:
            return None
        return self._latency[0]

    def _install_loss_hooks(self, driver: AsyncioIkeDriver) -> None:
        # the engine's outbox: `datagrams_with_source` (MOBIKE: each datagram's source IP) when it has
        # one, which `datagrams_to_send` goes through; wrapping only it sees every datagram once
        outbox = "datagrams_with_source" if hasattr(driver.endpoint, "datagrams_with_source") else "datagrams_to_send"
        receive, send = driver._datagram, getattr(driver.endpoint, outbox)

        # (extra arguments and tuple fields, e.g. the local address of a wildcard socket, pass through)
        def datagram(data: bytes, addr: Address, natt: bool, *rest: Any, **named: Any) -> None:
            if natt and data[:4] != bytes(4):
                receive(data, addr, natt, *rest, **named)  # ESP: never dropped
            elif not self._should_drop("in", data):
                receive(data, addr, natt, *rest, **named)

        def send_late(data: bytes, addr: Address) -> None:
            transport = driver._natt if data[:4] == bytes(4) else driver._ike
            if transport is not None:
                transport.sendto(data, addr)

        def to_send(now: float) -> list[Any]:
            out = []
            for item in send(now):
                data, addr = item[0], item[1]
                if self._should_drop("out", data):
                    continue
                held = self._latency_for()
                if held is None:
                    out.append(item)
                else:
                    driver.loop.call_later(held, send_late, data, addr)
            return out

        driver._datagram = datagram  # type: ignore[method-assign]
        setattr(driver.endpoint, outbox, to_send)

    def _on_esp(self, child_id: int, next_header: int, inner: bytes) -> None:
        with self._cond:
            if len(self.esp) < MAX_RECEIVED_ESP:
                self.esp.append(ReceivedEsp(child_id, next_header, bytes(inner), time.time()))
            self._cond.notify_all()

    def close(self) -> None:
        if self.loop is not None and self._thread is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(START_TIMEOUT)

    def __enter__(self) -> IkeLibPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- running things on the loop thread ---------------------------------------------------------

    def call(self, fn: Callable[..., _T], *args: Any, timeout: float = STEP_TIMEOUT) -> _T:
        """Run fn(*args) on the loop thread and return its result."""
        if self.loop is None:
            raise RuntimeError("peer not started")

        async def run() -> _T:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    @property
    def endpoint(self) -> IkeEndpoint:
        if self.driver is None:
            raise RuntimeError("peer not started")
        return self.driver.endpoint

    def initiate(self, config: IkeConfig, remote: str) -> int:
        def go() -> int:
            if self.driver is None:
                raise RuntimeError("peer not started")
            return self.driver.initiate(config, (remote, IKE_PORT))
        return self.call(go)

    def request(self, name: str, *args: Any) -> None:
        """Call the endpoint request method `name` (rekey_child_sa, delete_ike_sa, send_dpd...)."""
        def go() -> None:
            if self.driver is None:
                raise RuntimeError("peer not started")
            self.driver.request(getattr(self.driver.endpoint, name), *args)
        self.call(go)

    def local_addresses_changed(self, addresses: list[str]) -> float:
        """Tell the engine the full list of usable local addresses now (MOBIKE, RFC 4555); returns
        time.time() when the call returned on the loop thread (its datagrams already sent)."""
        def go() -> float:
            if self.driver is None:
                raise RuntimeError("peer not started")
            driver = self.driver
            driver.request(driver.endpoint.local_addresses_changed, list(addresses), driver.loop.time())
            return time.time()
        return self.call(go)

    def send_esp(self, child_id: int, inner: bytes) -> None:
        def go() -> None:
            if self.driver is None:
                raise RuntimeError("peer not started")
            self.driver.send_esp(child_id, inner)
        self.call(go)

    # ---- waiting for events ------------------------------------------------------------------------

    def wait_for(self, kind: type[_E], predicate: Callable[[_E], bool] = lambda e: True,
                 timeout: float = STEP_TIMEOUT) -> _E:
        """The first not yet returned event of type `kind` matching `predicate` (bounded wait)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, event in enumerate(self.events):
                    if i not in self._consumed and isinstance(event, kind) and predicate(event):
                        self._consumed.add(i)
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind.__name__} within {timeout} s; events so far: "
                                       f"{[type(e).__name__ for e in self.events]}")
                self._cond.wait(left)

    def all_events(self) -> list[Event]:
        with self._cond:
            return list(self.events)

    def wait_for_esp(self, count: int, timeout: float = STEP_TIMEOUT) -> list[ReceivedEsp]:
        """Wait until `count` ESP packets were decapsulated (bounded); returns all so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.esp) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.esp)


def udp_receive_ready(bind_addr: str, port: int, count: int, timeout: float,
                      ready_path: str) -> list[tuple[bytes, str]]:
    """Like traffic.udp_receive, but creates `ready_path` once the socket is bound (so the sender
    never races the bind); returns [(payload, source address)] (up to `count`, within `timeout` s)."""
    import socket

    received: list[tuple[bytes, str]] = []
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind_addr, port))
        with open(ready_path, "w"):
            pass
        while len(received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, (src, _) = sock.recvfrom(65535)
            except TimeoutError:
                break
            received.append((data, src))
    return received


def start_receiver(ns: Namespace, bind_addr: str, port: int, count: int, timeout: float, workdir: str) -> Any:
    """Start `udp_receive_ready` in `ns` and return its task once the socket is bound (bounded wait)."""
    ready = os.path.join(workdir, f"ready-{bind_addr}-{port}-{time.monotonic_ns()}")
    task = ns.start(udp_receive_ready, bind_addr, port, count, timeout, ready)
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(ready):
        if time.monotonic() > deadline:
            task.kill()
            raise TimeoutError(f"UDP receiver on {bind_addr}:{port} did not start")
        time.sleep(0.01)
    os.unlink(ready)
    return task
