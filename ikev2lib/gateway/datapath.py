"""The gateway's data path: a TUN device, per-worker UDP/4500 sockets, and the C forwarder between them.

    kernel routes (remote TS) -> TUN queue i -> worker i (C, no GIL): policy, ESP, sendmmsg -> peer
    peer -> UDP/4500 (SO_REUSEPORT, steered by SPI) or raw ESP -> worker: decap, inbound policy -> TUN

`DataPath.start()` opens a multi-queue TUN device (one queue per worker), puts the operator's inner
addresses on it, opens one UDP socket per worker on the IKE driver's NAT-T address and port (the
driver's socket is index 0 of the SO_REUSEPORT group: a classic BPF program sends IKE and keepalives
there and every ESP SPI to one worker, so an SA's replay window is only ever touched by one thread)
and one raw ESP socket per worker (every raw socket is offered every ESP packet; a socket filter keeps
the SPIs of its worker, the same SPI modulo workers as for UDP). Each worker is a thread that runs
`CoreForwarder.run` with the GIL released.

One Child SA's inbound traffic is decrypted on one worker, and its outbound SA serialises the workers
that send on it. RFC 9611 per-resource Child SAs (`per_cpu_sas`, negotiated by the engine) lift both
limits for one tunnel: the member of resource k is sent on by worker k only (the C table binds its
outbound entry to that worker; it ranks before the group's fallback SA, which the other workers use),
and its inbound SPI is k modulo the worker count, so the peer's traffic on it is decrypted by worker
k. With peers that do not support them, a tunnel keeps one SA: each SA's packets stay in order on one
worker, sequence numbers are never shared without the SA's lock, and many tunnels spread over the
workers by SPI.

The engine's Child SA events reach `on_event` synchronously from the IKE driver, before the IKE
message that completes the exchange is sent, so the peer's first ESP packet finds its SA:
- ChildSaCreated: the SAs, selectors and peer address go into the forwarder's table; the routes of
  the remote selectors are added to the TUN device (reference-counted).
- ChildSaRekeyed: make-before-break. The new inbound SA is in the table before our answer or delete
  leaves; the old inbound SA stays until the ChildSaDeleted of the old Child SA, so packets the peer
  sent on it still arrive. Outbound moves to the new SA at once if we initiated the rekey (the peer
  installed the new SA before answering); as the responder we keep sending on the old SA until the
  peer deletes it (RFC 7296 2.8), because until our answer reaches it the peer lacks the new one.
  When the old Child SA is deleted, its inbound SA still takes packets for DELETE_REKEYED_DELAY
  seconds: those the peer encrypted before the switch may still be in its queues or on the wire
  (strongSwan's charon.delete_rekeyed_delay does the same).
- ChildSaDeleted: nothing is sent on the Child SA any more; its inbound SA stays DELETE_REKEYED_DELAY
  seconds for packets already on their way (after a rekey, and for the redundant SA of a rekey
  collision, RFC 7296 2.8.1, which the peer may have used), then the SAs leave the table and routes
  go with the last Child SA that needed them.

Outbound policy: one forwarder entry per remote selector, most specific first (smallest remote
range, then smallest local range, then protocol and port restrictions, newest Child SA first): a
packet goes to the first entry whose selectors hold it, and a packet that none holds is dropped and
counted (`no_policy`), never sent in clear.

NAT (RFC 7296 2.23): when the peer is behind a NAT and its mapping changes, the engine follows it
after an authenticated IKE message; authentic ESP from a new source, which the C workers report
(`CoreForwarder.take_mappings`, an eventfd on the event loop), is handed to the engine through
`on_peer_moved` (the gateway calls `IkeEndpoint.peer_address_seen`). Either way PeerAddressChanged
moves every Child SA of that IKE SA to the new address in the next table.

MOBIKE (RFC 4555): IkeSaAddressesUpdated moves every Child SA of the IKE SA to the peer's new
address with the encapsulation the NAT re-check chose (UDP or raw ESP; the MTU follows). Our own
address cannot change here: the worker sockets are bound to the listen address, so a move of ours
(the gateway as original initiator on another local address) is logged as a warning and ESP keeps
leaving from the listen address.

Counters belong to the connection (one forwarder slot per connection name), so they stay monotonic
across rekeys. Outer IPv4 or IPv6 (the listen address's family), inner IPv4 and IPv6.

AF_XDP (`DataPathConfig.xdp`): ikev2lib's XDP program on the outer interface redirects the ESP of our
inbound SPIs (kept in its map as the table changes) to one XSK per device queue, and the worker of
that queue parses and decrypts the frames in the UMEM. That worker also sends ESP as frames from
its UMEM to every peer whose next hop on the device is resolved (`nexthop.py`: the route and the
neighbour table, refreshed every NEXT_HOP_REFRESH seconds by a thread of its own); a new peer, one
behind another device, or an unresolved next hop is sent to on the sockets until a refresh finds it.
Everything else (IKE, keepalives, unknown SPIs) still arrives on the sockets. Where AF_XDP cannot be
had (not built, no XDP on the device, no permission), a warning says why and the sockets do it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import _esp_fast, xdp
from ..esp import BACKEND as ESP_BACKEND
from ..events import (
    Address, ChildSaCreated, ChildSaDeleted, ChildSaRekeyed, Event, IkeSaAddressesUpdated, PeerAddressChanged,
)  # fmt: skip
from ..exceptions import LocalProtocolError
from ..wire.enums import TSType
from ..wire.ts import TrafficSelector
from .counters import DROP_REASONS, TunnelCounters
from .model import DataPathConfig
from .mtu import mss_for, tunnel_mtu
from .nexthop import NextHop, resolve_next_hops
from .tun import TunDevice

__all__ = ["DataPath", "DataPathUnavailable", "SOCKET_BUFFER", "WORST_CASE_ALGORITHM"]

log = logging.getLogger("ikev2lib.gateway.datapath")

TUN_QUEUE_LENGTH = 5000  # packets the kernel holds per queue while its worker is busy with a batch
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # <asm/socket.h>: beyond net.core.*mem_max (root); else capped
SOCKET_BUFFER = 4 << 20  # bytes of kernel buffer per worker socket: bursts of a fast TCP flow fit
WORST_CASE_ALGORITHM = "aes256-sha512"  # largest ESP overhead: the TUN MTU fits every suite
IPPROTO_ESP = 50
DELETE_REKEYED_DELAY = 5.0  # seconds a rekeyed Child SA's inbound SA outlives its delete (strongSwan's default)
NEXT_HOP_REFRESH = 1.0  # seconds between refreshes of the peers' next hops (AF_XDP sending)
FULL_PORTS = (0, 65535)
_LIMITS = _esp_fast._forwarder_limits()
MAX_INNER_MTU = int(_LIMITS["max_inner"])
MAX_SLOTS = int(_LIMITS["max_slots"])

Selector = tuple[int, int, int, int, bytes, bytes]  # family, protocol, port range, address range
Tunnel = tuple[Any, ...]  # one forwarder entry (see CoreForwarder.set_tunnels)


class DataPathUnavailable(LocalProtocolError):
    """The data path cannot start here (no TUN, no C back end, ...): the message says why."""


def _selector(ts: TrafficSelector) -> Selector:
    family = 4 if ts.ts_type == TSType.TS_IPV4_ADDR_RANGE else 6
    return (family, ts.ip_protocol, ts.start_port, ts.end_port, bytes(ts.start_address), bytes(ts.end_address))


def _range_size(selectors: Iterable[Selector]) -> int:
    return sum(int.from_bytes(s[5], "big") - int.from_bytes(s[4], "big") + 1 for s in selectors)


def _specificity(local: tuple[Selector, ...], remote: Selector) -> tuple[int, int, int, int]:
    """Sort key, most specific first: smaller remote range, smaller local range, a protocol, fewer ports."""
    return (_range_size([remote]), _range_size(local), 0 if remote[1] else 1, remote[3] - remote[2])


def _routes(selector: Selector) -> list[str]:
    """The prefixes covering a selector's address range (a range need not be one CIDR)."""
    low = ipaddress.ip_address(selector[4])
    high = ipaddress.ip_address(selector[5])
    return [str(net) for net in ipaddress.summarize_address_range(low, high)]


def _rx_queues(ifname: str) -> int:
    """Receive queues of a device (one XSK each); 1 when sysfs does not say."""
    try:
        return max(1, len([q for q in os.listdir(f"/sys/class/net/{ifname}/queues") if q.startswith("rx-")]))
    except OSError:
        return 1


def _icmp_sources(addresses: tuple[str, ...]) -> tuple[bytes | None, bytes | None]:
    """The first IPv4 and IPv6 inner address of the gateway: where its ICMP "too big" answers come from."""
    found: dict[int, bytes] = {}
    for address in addresses:
        ip = ipaddress.ip_interface(address).ip
        found.setdefault(ip.version, ip.packed)
    return found.get(4), found.get(6)


def _algorithm(sa: Any) -> str:
    algorithm = getattr(sa, "algorithm", None)
    if not isinstance(algorithm, str):
        raise DataPathUnavailable("the data path carries ikev2lib.esp.EspSA objects only (no custom esp factory)")
    return algorithm


@dataclass
class _Tunnel:
    """One Child SA in the forwarder."""

    key: tuple[int, int]  # (ike_sa_id, child_id)
    connection: str
    slot: int
    inbound: Any  # CoreSA (EspSA of the C back end)
    outbound: Any | None  # None once a rekey replaced it (inbound drains until the delete), or not yet active
    pending_outbound: Any | None  # rekey responder: the new outbound SA, active once the old SA is deleted
    replaces: tuple[int, int] | None  # the Child SA this one rekeyed
    spi_in: int
    udp_encap: bool
    peer: tuple[str, int]
    mtu: int
    local: tuple[Selector, ...]
    remote: tuple[Selector, ...]
    routes: tuple[str, ...]
    order: int  # creation order: newer Child SAs win ties
    worker: int = -1  # RFC 9611 member: the only worker that sends on `outbound`; -1: any worker
    draining: bool = False  # deleted: inbound only, until DELETE_REKEYED_DELAY has passed
    next_hop: NextHop | None = None  # AF_XDP: sent as frames from the worker's XSK; None: on the sockets
    _entries: list[tuple[tuple[int, ...], Tunnel]] | None = None  # cache of entries(); reset by the setters

    def set_outbound(self, outbound: Any | None, pending: Any | None = None) -> None:
        self.outbound, self.pending_outbound, self._entries = outbound, pending, None

    def set_next_hop(self, next_hop: NextHop | None) -> None:
        self.next_hop, self._entries = next_hop, None

    def set_peer(self, peer: tuple[str, int]) -> None:
        self.peer, self.next_hop, self._entries = peer, None, None  # the next hop is looked up again

    def entries(self, mss_clamp: bool) -> list[tuple[tuple[int, ...], Tunnel]]:
        """(sort key, forwarder entry): the inbound SA with every selector (for the RFC 4301 5.2 check)
        first, then one outbound entry per remote selector, ranked by specificity, newest first."""
        if self._entries is None:
            peer = ipaddress.ip_address(self.peer[0]).packed
            mss = mss_for(self.mtu, ipv6=False) if mss_clamp else 0  # the C side takes 20 more off for IPv6
            local, remote = list(self.local), list(self.remote)
            entries: list[tuple[tuple[int, ...], Tunnel]] = [
                ((0,), (self.slot, self.inbound, None, self.spi_in, self.udp_encap, peer, self.peer[1], self.mtu,
                        mss, local, remote, -1))]
            if self.outbound is not None:
                bound = 0 if self.worker >= 0 else 1  # a worker's own member before the group's fallback
                l2 = self.next_hop.forwarder_l2() if self.next_hop is not None else None
                for selector in self.remote:
                    entries.append(((1, *_specificity(self.local, selector), bound, -self.order),
                                    (self.slot, None, self.outbound, 0, self.udp_encap, peer, self.peer[1],
                                     self.mtu, mss, local, [selector], self.worker, l2)))
            self._entries = entries
        return self._entries


class DataPath:
    """The data path of one listen address (`host`, NAT-T port `natt_port`)."""

    def __init__(self, config: DataPathConfig, host: str, natt_port: int, loop: asyncio.AbstractEventLoop) -> None:
        """`loop`: the IKE driver's event loop, where the data path schedules its work."""
        self.config = config
        self._loop = loop
        # (IKE SA id, address): authentic ESP of that IKE SA came from a new address (a NAT's new
        # mapping); the gateway hands it to the engine, which decides (IkeEndpoint.peer_address_seen)
        self.on_peer_moved: Callable[[int, Address], None] | None = None
        self._mapping_fd = -1
        self.host = host
        self.natt_port = natt_port
        self.workers = config.workers or os.cpu_count() or 1
        self.tun: TunDevice | None = None
        self._forwarder = _esp_fast.CoreForwarder(MAX_SLOTS)
        self._sockets: list[socket.socket] = []
        self._raw: list[socket.socket] = []  # one per worker (or none: raw ESP unavailable)
        self._stop_fd = -1
        self._xdp: xdp.XdpProgram | None = None
        self._xsks: list[xdp.XskSocket] = []  # one per device queue, for workers 0..len-1
        self._xdp_spis: set[int] = set()  # inbound SPIs in the program's map
        self._next_hops: dict[str, NextHop | None] = {}  # peer address -> how frames reach it (AF_XDP)
        self._next_hop_wake = threading.Event()  # a new peer, or stop: refresh now
        self._next_hop_thread: threading.Thread | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._tunnels: dict[tuple[int, int], _Tunnel] = {}
        self._slots: dict[str, int] = {}
        self._order = 0
        self._lock = threading.Lock()  # event hooks and status readers may come from different threads
        self._batching = 0  # inside batch(): tables are published once, at its end
        self._unpublished = False
        self.path_mtu = config.path_mtu
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.outer_ipv6 = self.family == socket.AF_INET6
        self._icmp_src4, self._icmp_src6 = _icmp_sources(config.addresses)
        self.tun_mtu = min(tunnel_mtu(config.path_mtu, WORST_CASE_ALGORITHM, udp_encap=True,
                                      outer_ipv6=self.outer_ipv6), MAX_INNER_MTU)

    # ---- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if ESP_BACKEND != "c":
            raise DataPathUnavailable("the data path needs the C ESP back end (IKEV2LIB_ESP_PURE is set?)")
        try:
            self.tun = TunDevice.open(self.config.tun, self.workers, self.tun_mtu, offload=self.config.offload)
            self.tun.set_queue_length(TUN_QUEUE_LENGTH)
            for address in self.config.addresses:
                self.tun.add_address(address)
            self._open_sockets()
        except (OSError, LocalProtocolError, ValueError) as exc:
            self.stop()
            raise DataPathUnavailable(f"data path on {self.config.tun}: {exc}") from exc
        if self.config.xdp:
            self._open_xdp(self.config.xdp)
        self._stop_fd = os.eventfd(0, os.EFD_CLOEXEC)
        for i in range(self.workers):
            raw_fd = self._raw[i].fileno() if self._raw else -1
            handle = self._xsks[i].forwarder_handle(self.natt_port) if i < len(self._xsks) else None
            args = (self.tun.fds[i], self._sockets[i].fileno(), raw_fd, self._stop_fd, self.tun.offload, i, handle)
            thread = threading.Thread(target=self._worker, args=args, name=f"esp-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._mapping_fd = self._forwarder.mapping_fd()
        self._loop.add_reader(self._mapping_fd, self._on_mappings)
        if self._xsks:
            self._next_hop_thread = threading.Thread(target=self._refresh_next_hops, args=(self.config.xdp,),
                                                     name="esp-next-hops", daemon=True)
            self._next_hop_thread.start()
        log.info("data path on %s (MTU %d%s): %d workers, UDP %s:%d%s", self.tun.name, self.tun_mtu,
                 ", TSO/GRO offload" if self.tun.offload else "", self.workers, self.host, self.natt_port,
                 ", raw ESP" if self._raw else "")

    def _open_xdp(self, ifname: str) -> None:
        """The XDP program and one XSK per queue of `ifname` (at most one per worker); on failure, a
        warning and the sockets alone."""
        queues = min(self.workers, _rx_queues(ifname))
        try:
            self._xdp = xdp.XdpProgram.attach(ifname, mode=self.config.xdp_mode, natt_port=self.natt_port)
            for queue in range(queues):  # zero-copy where the driver has it (the kernel chooses)
                self._xsks.append(xdp.XskSocket.open(self._xdp, ifname, queue, zerocopy=None))
        except (xdp.XdpUnavailable, ValueError) as exc:
            self._close_xdp()
            log.warning("AF_XDP on %s unavailable, ESP stays on the sockets: %s", ifname, exc)
            return
        zerocopy = sum(x.zerocopy for x in self._xsks)
        log.info("AF_XDP on %s (%s mode): %d XSK%s, %s", ifname, self.config.xdp_mode, len(self._xsks),
                 "" if len(self._xsks) == 1 else "s",
                 "zero-copy" if zerocopy == len(self._xsks) else f"{zerocopy} zero-copy, the rest copy mode"
                 if zerocopy else "copy mode (the driver has no zero-copy)")

    def _refresh_next_hops(self, ifname: str) -> None:
        """The peers' next hops on the XDP device, every NEXT_HOP_REFRESH seconds or when a new peer
        comes; a tunnel whose next hop changed gets it in a new table."""
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as exc:  # the device went away after the XSKs were bound
            log.warning("next hops on %s: %s; ESP is sent on the sockets", ifname, exc)
            return
        unspecified = ipaddress.ip_address(self.host).is_unspecified
        while not self._stopping:
            self._next_hop_wake.wait(NEXT_HOP_REFRESH)
            self._next_hop_wake.clear()
            if self._stopping:
                return
            with self._lock:
                peers = [t.peer[0] for t in self._tunnels.values()]
            try:
                found = resolve_next_hops(ifindex, peers, None if unspecified else self.host)
            except OSError as exc:  # netlink itself failed: keep what we had, try again later
                log.warning("next hops on %s not refreshed: %s", ifname, exc)
                continue
            with self._lock:
                for peer, next_hop in found.items():
                    if self._next_hops.get(peer) != next_hop:
                        log.info("peer %s: %s", peer, f"ESP frames from the XSK via {next_hop.dst_mac.hex(':')}"
                                 if next_hop else "ESP on the sockets (next hop not resolved on the device)")
                self._next_hops = found
                changed = False
                for tunnel in self._tunnels.values():
                    next_hop = found.get(tunnel.peer[0])
                    if tunnel.next_hop != next_hop:
                        tunnel.set_next_hop(next_hop)
                        changed = True
                if changed:
                    self._publish()

    def _close_xdp(self) -> None:
        for xsk in self._xsks:
            xsk.close()
        self._xsks = []
        if self._xdp is not None:
            self._xdp.close()
            self._xdp = None
        self._xdp_spis = set()

    def xdp_stats(self) -> dict[str, int] | None:
        """The XSKs' counters summed, and how many Child SAs send frames from them (their next hop is
        resolved); None without AF_XDP."""
        if not self._xsks:
            return None
        total: dict[str, int] = {}
        for xsk in self._xsks:
            for name, value in xsk.stats().items():
                total[name] = total.get(name, 0) + value
        total["zerocopy_xsks"] = sum(x.zerocopy for x in self._xsks)
        with self._lock:
            total["tunnels_sending_frames"] = sum(t.next_hop is not None for t in self._tunnels.values())
        return total

    def _open_sockets(self) -> None:
        for _ in range(self.workers):
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            self._sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            for option, forced in ((socket.SO_RCVBUF, SO_RCVBUFFORCE), (socket.SO_SNDBUF, SO_SNDBUFFORCE)):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, forced, SOCKET_BUFFER)
                except OSError:
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            sock.bind((self.host, self.natt_port))
        # the driver's IKE socket bound first: it is socket 0 of the group, the workers 1..N
        _esp_fast.attach_steering(self._sockets[0].fileno(), self.workers)
        try:
            for index in range(self.workers):
                raw = socket.socket(self.family, socket.SOCK_RAW, IPPROTO_ESP)
                self._raw.append(raw)
                if self.workers > 1:  # the filter first: no packet of another worker's SPI gets queued here
                    _esp_fast.attach_raw_steering(raw.fileno(), 6 if self.outer_ipv6 else 4, self.workers, index)
                raw.bind((self.host, 0))
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        except OSError as exc:  # Child SAs without UDP encapsulation will be counted as errors
            for raw in self._raw:
                raw.close()
            self._raw = []
            log.warning("raw ESP socket unavailable (%s): only UDP-encapsulated Child SAs can carry traffic", exc)

    def _worker(self, tun_fd: int, udp_fd: int, raw_fd: int, stop_fd: int, vnet_hdr: bool, index: int,
                xsk: tuple[int, ...] | None) -> None:
        try:
            self._forwarder.run(tun_fd, udp_fd, raw_fd, stop_fd, raw_rx=True, vnet_hdr=vnet_hdr, worker=index,
                                xsk=xsk)
        except OSError as exc:
            log.error("data path worker stopped: %s", exc)

    def stop(self) -> None:
        """Stop the workers (they finish their batch), then close the sockets and the TUN device."""
        self._stopping = True
        if self._mapping_fd >= 0:
            self._loop.remove_reader(self._mapping_fd)
            self._mapping_fd = -1
        self._next_hop_wake.set()
        if self._next_hop_thread is not None:
            self._next_hop_thread.join()
            self._next_hop_thread = None
        if self._stop_fd >= 0:
            os.eventfd_write(self._stop_fd, 1)
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self._stop_fd >= 0:
            os.close(self._stop_fd)
            self._stop_fd = -1
        self._close_xdp()  # after the workers: they read the XSKs' rings
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        for raw in self._raw:
            raw.close()
        self._raw = []
        if self.tun is not None:
            self.tun.close()
            self.tun = None

    # ---- Child SAs ---------------------------------------------------------------------------------

    def on_event(self, endpoint: Any, event: Event) -> None:
        """The IKE driver's synchronous event hook."""
        if isinstance(event, ChildSaCreated):
            self._add(endpoint, event, event.child_id)
        elif isinstance(event, ChildSaRekeyed):
            old = self._tunnels.get((event.ike_sa_id or 0, event.old_child_id))
            if old is not None and event.initiator:
                old.set_outbound(None)  # its inbound SA drains until the delete
            self._add(endpoint, event, event.child_id)
        elif isinstance(event, ChildSaDeleted):
            self._remove((event.ike_sa_id or 0, event.child_id))
        elif isinstance(event, PeerAddressChanged):
            self._move_peer(event.ike_sa_id or 0, event.remote_addr)
        elif isinstance(event, IkeSaAddressesUpdated):
            self._move_path(event)

    def _move_path(self, event: IkeSaAddressesUpdated) -> None:
        """MOBIKE moved the IKE SA: the peer's new address and the (maybe new) encapsulation."""
        ike_sa_id = event.ike_sa_id or 0
        if event.local_addr[0] != event.old_local_addr[0] and event.local_addr[0] != self.host:
            log.warning("IKE SA %d moved to local address %s, but the data path sends from %s", ike_sa_id,
                        event.local_addr[0], self.host)
        if not event.udp_encap and not self._raw:
            log.warning("IKE SA %d: raw ESP after a MOBIKE move, but no raw ESP socket is open", ike_sa_id)
        with self._lock:
            changed = [t for t in self._tunnels.values() if t.key[0] == ike_sa_id and t.udp_encap != event.udp_encap]
            for tunnel in changed:
                sa = tunnel.outbound or tunnel.pending_outbound or tunnel.inbound
                tunnel.udp_encap = event.udp_encap
                tunnel.mtu = min(self.tun_mtu, tunnel_mtu(self.path_mtu, _algorithm(sa), udp_encap=event.udp_encap,
                                                          outer_ipv6=self.outer_ipv6))
                tunnel.set_peer(tunnel.peer)  # drops the cached entries
            if changed:
                self._publish()
        self._move_peer(ike_sa_id, event.remote_addr)

    def _move_peer(self, ike_sa_id: int, addr: Address) -> None:
        """Every Child SA of the IKE SA sends to `addr` from the next table on."""
        with self._lock:
            moved = [t for t in self._tunnels.values() if t.key[0] == ike_sa_id and t.peer != addr]
            for tunnel in moved:
                tunnel.set_peer(addr)
            if moved:
                self._publish()
                self._next_hop_wake.set()
        if moved:
            log.info("%s: peer moved to %s:%d, %d Child SA%s follow", moved[0].connection, addr[0], addr[1],
                     len(moved), "" if len(moved) == 1 else "s")

    def _on_mappings(self) -> None:
        """The workers saw authentic ESP from a new source: ask the engine, once per IKE SA and source."""
        with self._lock:
            by_spi = {t.spi_in: t for t in self._tunnels.values()}
        asked: set[tuple[int, Address]] = set()
        for spi, address, port in self._forwarder.take_mappings():
            tunnel = by_spi.get(spi)
            if tunnel is None or self.on_peer_moved is None or (tunnel.key[0], (address, port)) in asked:
                continue
            asked.add((tunnel.key[0], (address, port)))
            self.on_peer_moved(tunnel.key[0], (address, port))

    def _slot(self, connection: str) -> int:
        slot = self._slots.get(connection)
        if slot is None:
            if len(self._slots) >= MAX_SLOTS:
                raise LocalProtocolError(f"more than {MAX_SLOTS} connections on one data path")
            slot = self._slots[connection] = len(self._slots)
        return slot

    def _add(self, endpoint: Any, event: ChildSaCreated | ChildSaRekeyed, child_id: int) -> None:
        ike_sa_id = event.ike_sa_id or 0
        sa = endpoint.connection(ike_sa_id)
        child = sa.children[child_id]
        connection = sa.config.name
        local = tuple(_selector(ts) for ts in child.local_ts_wire)
        remote = tuple(_selector(ts) for ts in child.remote_ts_wire)
        mtu = min(self.tun_mtu, tunnel_mtu(self.path_mtu, _algorithm(event.outbound), udp_encap=event.udp_encap,
                                           outer_ipv6=self.outer_ipv6))
        routes = tuple(dict.fromkeys(route for selector in remote for route in _routes(selector)))
        self._order += 1
        replaces = (ike_sa_id, event.old_child_id) if isinstance(event, ChildSaRekeyed) else None
        # the rekey responder keeps sending on the old SA until the peer deletes it
        waits = isinstance(event, ChildSaRekeyed) and not event.initiator and replaces in self._tunnels
        worker = -1 if event.resource is None else event.resource % self.workers
        tunnel = _Tunnel((ike_sa_id, child_id), connection, self._slot(connection), event.inbound,
                         None if waits else event.outbound, event.outbound if waits else None, replaces,
                         int.from_bytes(event.spi_in, "big"), event.udp_encap, sa.remote_addr, mtu, local, remote,
                         routes, self._order, worker)
        with self._lock:
            if self._next_hop_thread is not None:
                if tunnel.peer[0] in self._next_hops:
                    tunnel.next_hop = self._next_hops[tunnel.peer[0]]
                else:
                    self._next_hop_wake.set()  # a new peer: its frames wait for this refresh
            self._tunnels[tunnel.key] = tunnel
            self._publish()
        if self.tun is not None:
            for route in routes:
                self.tun.add_route(route)
        log.info("%s: Child SA %s (%d) on the data path, MTU %d, %s%s", connection, child.config_name,
                 child_id, mtu, "UDP-encapsulated" if event.udp_encap else "raw ESP",
                 f", worker {worker}'s per-resource SA" if worker >= 0 else "")

    def _remove(self, key: tuple[int, int]) -> None:
        with self._lock:
            tunnel = self._tunnels.get(key)
            if tunnel is None or tunnel.draining:
                return
            for successor in self._tunnels.values():  # the peer deleted the SA we rekeyed: it has the new one
                if successor.replaces == key and successor.pending_outbound is not None:
                    successor.set_outbound(successor.pending_outbound)
            # Its inbound SA takes the stragglers a little longer: after a rekey, and also when a rekey
            # collision (RFC 7296 2.8.1) deletes the redundant new SA, on which the peer may already
            # have sent. Nothing is sent on it any more.
            tunnel.set_outbound(None)
            tunnel.draining = True
            self._publish()
        self._loop.call_later(DELETE_REKEYED_DELAY, lambda: self._drop_tunnel(key))

    def _drop_tunnel(self, key: tuple[int, int]) -> None:
        with self._lock:
            tunnel = self._tunnels.pop(key, None)
            if tunnel is None:
                return
            self._publish()
        if self.tun is not None:
            for route in tunnel.routes:
                self.tun.remove_route(route)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Install many Child SAs at once (an HA takeover restores thousands): the forwarder gets one
        table at the end instead of one per Child SA, which made a large takeover quadratic. Nothing
        may be sent on them before the block ends."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching and self._unpublished:
                with self._lock:
                    self._publish()

    def _publish(self) -> None:
        """Hand the forwarder a new table (called with the lock held): each Child SA's entries are built
        once (`_Tunnel.entries`), so a table of thousands costs a sort and the copy into C."""
        if self._batching:
            self._unpublished = True
            return
        self._unpublished = False
        keyed = [entry for t in self._tunnels.values() for entry in t.entries(self.config.mss_clamp)]
        keyed.sort(key=lambda e: e[0])
        self._forwarder.set_tunnels([e[1] for e in keyed], self._icmp_src4, self._icmp_src6)
        if self._xdp is not None:  # the new SPIs are redirected once the table holds their SAs
            self._sync_xdp_spis(self._xdp, {t.spi_in for t in self._tunnels.values()})

    def _sync_xdp_spis(self, program: xdp.XdpProgram, wanted: set[int]) -> None:
        """An SPI the map refuses (full, say) is left to the sockets, which still carry it."""
        for spi in wanted - self._xdp_spis:
            try:
                program.add_spi(spi)
            except xdp.XdpUnavailable as exc:
                log.warning("SPI %08x stays on the sockets: %s", spi, exc)
                continue
            self._xdp_spis.add(spi)
        for spi in self._xdp_spis - wanted:
            try:
                program.remove_spi(spi)
            except xdp.XdpUnavailable as exc:  # it stays redirected and finds no SA: counted as no_sa
                log.warning("SPI %08x not removed from the XDP map: %s", spi, exc)
            self._xdp_spis.discard(spi)

    # ---- counters ----------------------------------------------------------------------------------

    def tunnel_counters(self) -> dict[str, TunnelCounters]:
        found = {}
        for connection, slot in list(self._slots.items()):
            packets_in, bytes_in, packets_out, bytes_out, drops = self._forwarder.slot_counters(slot)
            found[connection] = TunnelCounters(packets_in, bytes_in, packets_out, bytes_out,
                                               {r: n for r, n in zip(DROP_REASONS, drops) if n})
        return found

    def drops(self) -> dict[str, int]:
        """Packets no tunnel owns (no SA, no policy, malformed, not ESP), by reason."""
        return {r: n for r, n in zip(DROP_REASONS, self._forwarder.global_drops()) if n}

    def tunnels(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"connection": t.connection, "ike_sa_id": t.key[0], "child_id": t.key[1], "mtu": t.mtu,
                     "outbound": t.outbound is not None, "routes": list(t.routes),
                     "worker": None if t.worker < 0 else t.worker, "xsk_send": t.next_hop is not None}
                    for t in self._tunnels.values()]
