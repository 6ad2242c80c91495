"""`ikev2lib run`: a gateway process running a `GatewayConfig` in the foreground on asyncio.

One `AsyncioIkeDriver` (UDP 500 and 4500, raw ESP when no NAT) per listen address, each with an
`IkeEndpoint` serving the connections whose `local_addrs` hold that address. At start the gateway
initiates the connections with `start_action = start` and answers the others. `reload()` (SIGHUP)
loads the configuration again: new and changed connections serve new peers, removed ones stop
answering, and no established SA is touched (new `start` connections are initiated).
`shutdown()` (SIGTERM/SIGINT) deletes every IKE SA, waits a bounded time for the answers, and
returns. With a `DataPathConfig` (TOML `[datapath]`, or `--tun`), the Child SAs' traffic crosses a
TUN device through the C forwarder (`datapath.py`); without one the gateway moves IKE only and ESP is
decapsulated and counted, not forwarded.

`status()` describes every IKE and Child SA like `swanctl --list-sas` (names, states, SPIs,
algorithms, identities, selectors, rekey times, packet and byte counters) as plain data for JSON.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..addresses import EXACT_RANK, parse_address, parse_selector, selectors_rank
from ..child_sa import ChildSa
from ..config import IkeConfig
from ..drivers.asyncio_udp import AsyncioIkeDriver, RawEspUnavailable
from ..endpoint import IkeEndpoint
from ..events import (
    Address,
    ChildSaCreated,
    ChildSaDeleted,
    ChildSaRekeyed,
    Event,
    IkeSaAddressesUpdated,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRedirected,
    IkeSaRekeyed,
    IkeSaRestored,
    PeerAddressChanged,
    PeerDead,
    ProtocolErrorEvent,
)
from ..exceptions import LocalProtocolError
from ..ike_sa import IkeSa
from ..state import IkeState
from ..wire.redirect import Gateway as RedirectTarget
from .counters import TunnelCounters
from . import service_address
from .datapath import DataPath
from .ha import HighAvailability
from .metrics import GatewayMetrics
from .model import Connection, DataPathConfig, GatewayConfig

__all__ = ["Gateway", "SHUTDOWN_WAIT"]

log = logging.getLogger("ikev2lib.gateway")

RESOLVE_TIMEOUT = 10.0  # seconds to resolve the DNS name a gateway redirected us to
SHUTDOWN_WAIT = 5.0  # seconds to wait for the peers to answer our Deletes at shutdown
STARTS_PER_TICK = 20  # `start` connections initiated together ...
START_TICK = 0.1  # ... every this many seconds: 200 per second
RATE_WINDOW = 1.0  # seconds: status rates cover at least this long
RATE_HISTORY = 30.0  # seconds of counter samples kept for them
IKE_PORT = 500
NATT_PORT = 4500


@dataclass
class _Listener:
    address: str
    driver: AsyncioIkeDriver
    pump: asyncio.Task[None] | None = None
    established: dict[int, str] = field(default_factory=dict)  # ike_sa_id -> connection name
    datapath: DataPath | None = None


def _serves(connection: Connection, address: str) -> bool:
    return selectors_rank(connection.config.local_addrs, parse_address(address)) > 0


class Gateway:
    """Build with the function that loads the configuration (called again by `reload`)."""

    def __init__(self, load: Callable[[], GatewayConfig], *, listen: tuple[str, ...] = (),
                 ike_port: int = IKE_PORT, natt_port: int = NATT_PORT,
                 wall_clock: Callable[[], float] = time.time, datapath: DataPathConfig | None = None) -> None:
        self._load = load
        self._datapath_override = datapath
        self._listen_override = listen
        self._ike_port = ike_port
        self._natt_port = natt_port
        self._wall_clock = wall_clock
        self.config: GatewayConfig | None = None
        self.listeners: list[_Listener] = []
        self.ha: HighAvailability | None = None
        self.started_at = 0.0
        self._samples: list[tuple[float, dict[str, TunnelCounters]]] = []  # (time, counters) for status rates
        self.metrics = GatewayMetrics(self)

    # ---- lifecycle ---------------------------------------------------------------------------------

    def listen_addresses(self, config: GatewayConfig) -> tuple[str, ...]:
        addresses = self._listen_override or config.listen
        if not addresses:
            exact = [s for c in config.connections for s in c.config.local_addrs if parse_selector(s).rank == EXACT_RANK]
            addresses = tuple(dict.fromkeys(exact))
        if not addresses:
            raise LocalProtocolError("no address to listen on: give connections local_addrs, `listen`, or --listen")
        return addresses

    async def start(self) -> None:
        config = self._load()
        datapath = self._datapath_override or config.datapath
        addresses = self.listen_addresses(config)
        if datapath is not None and len(addresses) != 1:
            raise LocalProtocolError("the data path serves one listen address: give `listen` (or --listen) one")
        if config.ha is not None:
            if addresses != (config.ha.service_ip,):
                raise LocalProtocolError(f"ha: listen on the service address {config.ha.service_ip} only")
            # the standby binds the service address before it holds it
            service_address.allow_nonlocal_bind(parse_address(config.ha.service_ip).version)
        for address in addresses:
            served = [c.config for c in config.connections if _serves(c, address)]

            def factory(addr: tuple[str, int], served: list[IkeConfig] = served) -> IkeEndpoint:
                endpoint = IkeEndpoint(served, local_addr=addr, wall_clock=self._wall_clock,
                                       max_sas_per_peer=config.max_sas_per_peer)
                endpoint.redirect_hook = self._redirect_hook(endpoint)
                return endpoint

            driver = await AsyncioIkeDriver.create(factory, host=address, ike_port=self._ike_port,
                                                   natt_port=self._natt_port, esp_elsewhere=datapath is not None)
            listener = _Listener(address, driver)
            if datapath is not None:
                try:
                    listener.datapath = DataPath(datapath, address, driver.natt_port, driver.loop)
                    listener.datapath.on_peer_moved = self._peer_moved_hook(driver)
                    listener.datapath.start()
                except LocalProtocolError:
                    driver.close()
                    raise
                driver.event_hook = self._datapath_hook(listener.datapath)
            listener.pump = asyncio.get_running_loop().create_task(self._pump(listener))
            self.listeners.append(listener)
            log.info("listening on %s (IKE %d, NAT-T %d): %d connections", address, driver.ike_port,
                     driver.natt_port, len(served))
        self.config = config
        self.started_at = time.monotonic()
        if config.ha is not None:  # the leader initiates, once it leads
            self.ha = HighAvailability(self, config.ha)
            await self.ha.start()
        else:
            self.start_connections()

    def start_connections(self) -> None:
        """Initiate the `start` connections that have no IKE SA yet."""
        if self.config is None:
            return
        running = {sa.config.name for lst in self.listeners for sa in lst.driver.endpoint.connections()
                   if not sa.finished}
        self._start_paced([c.name for c in self.config.connections if c.start_action == "start"
                           and c.name not in running])

    def _start_paced(self, names: list[str]) -> None:
        """Initiate `names`, STARTS_PER_TICK every START_TICK seconds: a gateway with thousands of
        `start` connections must not flood its peers (nor itself) with half-open IKE SAs at once."""
        batch, rest = names[:STARTS_PER_TICK], names[STARTS_PER_TICK:]
        for name in batch:
            if self.config is not None and self.config.connection(name) is not None:
                try:
                    self.initiate(name)
                except LocalProtocolError as exc:
                    log.error("%s: %s", name, exc)
        if rest and self.listeners:
            self.listeners[0].driver.loop.call_later(START_TICK, self._start_paced, rest)

    async def shutdown(self, wait: float = SHUTDOWN_WAIT) -> None:
        """Delete every IKE SA (the peers hear of it), wait up to `wait` seconds, close the sockets.
        With HA the SAs are handed over instead (the standby carries them on): nothing is deleted."""
        if self.ha is not None:
            await self.ha.stop()
            self.ha = None
            self._close_listeners()
            log.info("stopped (handed over)")
            return
        for listener in self.listeners:
            for sa in list(listener.driver.endpoint.connections()):
                _end(listener, sa)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(lst.driver.endpoint.ike_sa_ids() for lst in self.listeners):
            await asyncio.sleep(0.05)
        self._close_listeners()
        log.info("stopped")

    def _close_listeners(self) -> None:
        for listener in self.listeners:
            if listener.pump is not None:
                listener.pump.cancel()
            listener.driver.close()
            if listener.datapath is not None:
                listener.datapath.stop()
        self.listeners = []

    # ---- control -----------------------------------------------------------------------------------

    def _listener_for(self, connection: Connection) -> _Listener:
        for listener in self.listeners:
            if _serves(connection, listener.address):
                return listener
        raise LocalProtocolError(f"connection {connection.name!r}: no listen address is one of its local_addrs")

    def _connection(self, name: str) -> Connection:
        connection = self.config.connection(name) if self.config is not None else None
        if connection is None:
            raise LocalProtocolError(f"no connection named {name!r}")
        return connection

    def initiate(self, name: str) -> int:
        """Start an IKE SA (and its first Child SA) for connection `name`; returns its ike_sa_id."""
        connection = self._connection(name)
        if connection.remote_host is None:
            raise LocalProtocolError(f"connection {name!r} has no remote address to initiate to")
        listener = self._listener_for(connection)
        ike_sa_id = listener.driver.initiate(connection.config, (connection.remote_host, connection.remote_port))
        listener.established[ike_sa_id] = name  # named in logs from the start (and followed if redirected)
        log.info("%s: initiating to %s", name, connection.remote_host)
        return ike_sa_id

    def terminate(self, name: str) -> int:
        """Delete the IKE SAs of connection `name`; returns how many."""
        self._connection(name)
        count = 0
        for listener in self.listeners:
            for sa in list(listener.driver.endpoint.connections()):
                if sa.config.name == name and not sa.hidden and _end(listener, sa):
                    count += 1
        log.info("%s: terminating %d IKE SAs", name, count)
        return count

    def redirect(self, to: str, name: str | None = None) -> dict[str, int]:
        """RFC 5685 6: send the established clients (of connection `name`, or all) to gateway `to`.
        Only clients that announced REDIRECT_SUPPORTED can be sent; the others are counted."""
        try:
            RedirectTarget.parse(to)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        if name is not None:
            self._connection(name)
        redirected = unable = 0
        for listener in self.listeners:
            endpoint = listener.driver.endpoint
            for sa in list(endpoint.connections()):
                if sa.hidden or sa.state != IkeState.ESTABLISHED or (name is not None and sa.config.name != name):
                    continue
                if not sa.peer_accepts_redirect:
                    unable += 1
                    continue
                listener.driver.request(endpoint.redirect_ike_sa, sa.ike_sa_id, to)
                redirected += 1
        log.info("redirecting %d IKE SAs to %s (%d cannot follow)", redirected, to, unable)
        return {"redirected": redirected, "unable": unable}

    def _redirect_hook(self, endpoint: IkeEndpoint) -> Callable[[Address, IkeConfig, str | None], str | None]:
        """The [redirect] policy, read at each IKE_SA_INIT (a reload changes it)."""
        def decide(addr: Address, connection: IkeConfig, came_from: str | None) -> str | None:
            policy = self.config.redirect if self.config is not None else None
            if policy is None or len(endpoint) < policy.above:
                return None
            return policy.to
        return decide

    def _follow_named_redirect(self, listener: _Listener, event: IkeSaRedirected) -> None:
        """A gateway sent one of our IKE SAs to a DNS name: resolve it, then initiate there."""
        name = listener.established.get(event.ike_sa_id or 0)
        connection = self.config.connection(name) if self.config is not None and name is not None else None
        if connection is None:
            log.warning("redirected to %s, but the connection is gone", event.gateway)
            return

        async def follow() -> None:
            loop = listener.driver.loop
            try:
                found = await asyncio.wait_for(loop.getaddrinfo(event.gateway, None, type=socket.SOCK_DGRAM),
                                               RESOLVE_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                log.error("%s: cannot resolve %s to follow its redirect: %s", connection.name, event.gateway, exc)
                return
            host = str(found[0][4][0])
            initiate = functools.partial(listener.driver.endpoint.initiate, redirection=event.redirection)
            listener.driver.request(initiate, connection.config, (host, connection.remote_port), loop.time())
            log.info("%s: following the redirect to %s (%s)", connection.name, event.gateway, host)

        listener.driver.loop.create_task(follow())

    def reload(self) -> dict[str, list[str]]:
        """Load the configuration again and apply it to new peers; established SAs stay as they are.
        Returns the names added, changed and removed. A configuration that does not load changes nothing."""
        new = self._load()
        old = self.config or GatewayConfig(connections=())
        if self.listeners and self.listen_addresses(new) != tuple(lst.address for lst in self.listeners):
            log.warning("reload: listen addresses changed; restart the gateway to rebind")
        before = {c.name: c for c in old.connections}
        after = {c.name: c for c in new.connections}
        removed = [n for n in before if n not in after]
        added = [n for n in after if n not in before]
        changed = [n for n in after if n in before and after[n] != before[n]]
        for listener in self.listeners:
            endpoint = listener.driver.endpoint
            for name in removed:
                if name in endpoint.configs:
                    endpoint.remove_connection(name)
            for name in added + changed:
                if _serves(after[name], listener.address):
                    endpoint.add_connection(after[name].config)
                elif name in endpoint.configs:
                    endpoint.remove_connection(name)
        self.config = new
        if self.ha is None or self.ha.role == "leader":  # a standby initiates nothing
            self._start_paced([name for name in added if after[name].start_action == "start"])
        log.info("reloaded: %d added, %d changed, %d removed", len(added), len(changed), len(removed))
        return {"added": added, "changed": changed, "removed": removed}

    # ---- data path -----------------------------------------------------------------------------------

    @staticmethod
    def _datapath_hook(datapath: DataPath) -> Callable[[IkeEndpoint, Event], None]:
        def hook(endpoint: IkeEndpoint, event: Event) -> None:
            try:
                datapath.on_event(endpoint, event)
            except (LocalProtocolError, OSError, ValueError) as exc:  # the IKE side carries on regardless
                log.error("data path: %s: %s", type(event).__name__, exc)
        return hook

    @staticmethod
    def _peer_moved_hook(driver: AsyncioIkeDriver) -> Callable[[int, Address], None]:
        """What the data path calls on authentic ESP from a new source: the engine decides (RFC 7296
        2.23) and, if the IKE SA follows, its PeerAddressChanged moves the Child SAs."""
        def moved(ike_sa_id: int, addr: Address) -> None:
            try:
                driver.request(driver.endpoint.peer_address_seen, ike_sa_id, addr, driver.loop.time())
            except LocalProtocolError:  # the IKE SA is gone meanwhile
                pass
        return moved

    def tunnel_counters(self) -> dict[str, TunnelCounters]:
        """Per connection: packets and bytes each way and drops by reason, monotonic across rekeys."""
        found: dict[str, TunnelCounters] = {}
        for listener in self.listeners:
            if listener.datapath is not None:
                found.update(listener.datapath.tunnel_counters())
        return found

    def datapath_drops(self) -> dict[str, int]:
        """Packets no connection owns (no SA, no policy, malformed, not ESP), by reason."""
        found: dict[str, int] = {}
        for listener in self.listeners:
            if listener.datapath is not None:
                for reason, n in listener.datapath.drops().items():
                    found[reason] = found.get(reason, 0) + n
        return found

    def _traffic(self) -> dict[str, Any]:
        """Counters per connection, with rates over the time since the newest earlier sample that is at
        least RATE_WINDOW old (status calls close together still give rates over a useful interval)."""
        now = time.monotonic()
        counters = self.tunnel_counters()
        self._samples = [(t, c) for t, c in self._samples if now - t <= RATE_HISTORY]
        then, previous = next(((t, c) for t, c in reversed(self._samples) if now - t >= RATE_WINDOW), (now, {}))
        elapsed = now - then
        traffic = {}
        for name, c in counters.items():
            before = previous.get(name)
            rates = {}
            if before is not None and elapsed > 0:
                rates = {"bits_in_per_s": round((c.bytes_in - before.bytes_in) * 8 / elapsed),
                         "bits_out_per_s": round((c.bytes_out - before.bytes_out) * 8 / elapsed),
                         "packets_in_per_s": round((c.packets_in - before.packets_in) / elapsed),
                         "packets_out_per_s": round((c.packets_out - before.packets_out) / elapsed)}
            traffic[name] = {"packets_in": c.packets_in, "bytes_in": c.bytes_in, "packets_out": c.packets_out,
                             "bytes_out": c.bytes_out, "drops": dict(c.drops), **rates}
        if not self._samples or now - self._samples[-1][0] >= RATE_WINDOW / 2:
            self._samples.append((now, counters))
        return traffic

    # ---- events and status -------------------------------------------------------------------------

    async def _pump(self, listener: _Listener) -> None:
        while True:
            try:
                event = await listener.driver.next_event()
            except RawEspUnavailable as exc:
                log.error("%s: %s", listener.address, exc)
                continue
            self._log_event(listener, event)

    def _log_event(self, listener: _Listener, event: Event) -> None:
        self.metrics.observe(event, listener.driver.loop.time(), listener.driver.endpoint)
        if isinstance(event, (IkeSaEstablished, IkeSaRestored)):
            listener.established[event.ike_sa_id or 0] = event.connection
        name = listener.established.get(event.ike_sa_id or 0, "?")
        # the structured fields of a JSON log line (--log-format json); never keys or SPIs' secrets
        extra = {"connection": name, "ike_sa_id": event.ike_sa_id, "event": type(event).__name__}
        if isinstance(event, IkeSaEstablished):
            log.info("%s: IKE SA %d established with %s[%s] (%s)", event.connection, event.ike_sa_id,
                     event.remote_addr[0], event.remote_id, event.proposal, extra=extra)
        elif isinstance(event, IkeSaRestored):
            log.info("%s: IKE SA %d restored with %s[%s], %d Child SAs", event.connection, event.ike_sa_id,
                     event.remote_addr[0], event.remote_id, event.children, extra=extra)
        elif isinstance(event, ChildSaCreated):
            log.info("%s: IKE SA %s: Child SA %s (%d) installed, SPIs %s_i %s_o, %s === %s", name, event.ike_sa_id,
                     event.name, event.child_id, event.spi_in.hex(), event.spi_out.hex(),
                     ",".join(event.local_ts), ",".join(event.remote_ts), extra=extra)
        elif isinstance(event, (ChildSaRekeyed, IkeSaRekeyed)):
            log.info("%s: IKE SA %s: %s", name, event.ike_sa_id, type(event).__name__, extra=extra)
        elif isinstance(event, ChildSaDeleted):
            log.info("%s: IKE SA %s: Child SA %d deleted", name, event.ike_sa_id, event.child_id, extra=extra)
        elif isinstance(event, IkeSaDeleted):
            listener.established.pop(event.ike_sa_id or 0, None)
            log.info("%s: IKE SA %s deleted (%s)", name, event.ike_sa_id, event.reason, extra=extra)
        elif isinstance(event, PeerAddressChanged):  # the peer's NAT made a new mapping (RFC 7296 2.23)
            log.info("%s: IKE SA %s: peer moved from %s:%d to %s:%d", name, event.ike_sa_id, *event.old_addr,
                     *event.remote_addr, extra=extra)
        elif isinstance(event, IkeSaAddressesUpdated):  # MOBIKE (RFC 4555)
            log.info("%s: IKE SA %s: MOBIKE moved %s:%d - %s:%d to %s:%d - %s:%d (%s)", name, event.ike_sa_id,
                     *event.old_local_addr, *event.old_remote_addr, *event.local_addr, *event.remote_addr,
                     "UDP-encapsulated" if event.udp_encap else "raw ESP", extra=extra)
        elif isinstance(event, IkeSaRedirected):  # RFC 5685: a gateway sent us elsewhere
            log.info("%s: IKE SA %s: redirected by %s to %s", name, event.ike_sa_id, event.old_addr[0], event.gateway,
                     extra=extra)
            if event.new_ike_sa_id is not None:
                listener.established[event.new_ike_sa_id] = name
            elif event.remote_addr is None:
                self._follow_named_redirect(listener, event)
        elif isinstance(event, (ProtocolErrorEvent, PeerDead)):
            log.warning("%s: %s: %s", name, listener.address, event, extra=extra)

    def status(self) -> dict[str, Any]:
        ike_sas = []
        for listener in self.listeners:
            now = listener.driver.loop.time()
            for sa in listener.driver.endpoint.connections():
                if not sa.hidden and not sa.finished:
                    ike_sas.append(_ike_sa_status(sa, listener.address, now))
        connections = [c.name for c in self.config.connections] if self.config is not None else []
        status: dict[str, Any] = {
            "connections": connections,
            "listen": [lst.address for lst in self.listeners],
            "ike_sas": ike_sas,
            "uptime_s": round(time.monotonic() - self.started_at, 1),
        }
        if self.ha is not None:
            status["ha"] = self.ha.status()
        datapaths = [lst.datapath for lst in self.listeners if lst.datapath is not None]
        if datapaths:
            dp = datapaths[0]
            status["datapath"] = {"tun": dp.tun.name if dp.tun else None, "mtu": dp.tun_mtu, "workers": dp.workers,
                                  "tunnels": sum(len(d.tunnels()) for d in datapaths),
                                  "drops": self.datapath_drops(), "traffic": self._traffic(),
                                  "xdp": dp.xdp_stats()}  # None: no AF_XDP (not asked for, or unavailable)
        return status


def _end(listener: _Listener, sa: IkeSa) -> bool:
    """Delete an established IKE SA (the peer is told) or forget one still being set up."""
    if sa.finished:
        return False
    endpoint = listener.driver.endpoint
    if sa.state == IkeState.ESTABLISHED:
        listener.driver.request(endpoint.delete_ike_sa, sa.ike_sa_id)
    elif sa.state != IkeState.DELETING:
        listener.driver.request(endpoint.abandon_ike_sa, sa.ike_sa_id, listener.driver.loop.time())
    return True


def _in(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else round(max(deadline - now, 0.0), 1)


def _counters(child: ChildSa) -> dict[str, int]:
    found = {}
    for direction, sa in (("in", child.inbound), ("out", child.outbound)):
        stats = getattr(sa, "stats", None)
        found[f"packets_{direction}"] = int(getattr(stats, "packets", 0))
        found[f"bytes_{direction}"] = int(getattr(stats, "bytes", 0))
    return found


def _ike_sa_status(sa: IkeSa, local: str, now: float) -> dict[str, Any]:
    config = sa.config
    certificate = sa.peer_certificate
    return {
        "name": config.name,
        "ike_sa_id": sa.ike_sa_id,
        "state": sa.state.value,
        "initiator": sa.is_initiator,
        "local": f"{sa.local_addr[0] if sa.local_addr[0] not in ('0.0.0.0', '::') else local}",
        "remote": f"{sa.remote_addr[0]}[{sa.remote_addr[1]}]",
        "local_id": config.local_id,
        "remote_id": sa.remote_id_text,
        "remote_certificate": certificate.subject.rfc4514_string() if certificate is not None else None,
        "spi_i": sa.spi_i.hex(),
        "spi_r": sa.spi_r.hex(),
        "proposal": sa.proposal_text,
        "udp_encap": sa.natt or sa.nat_detected,
        "established_s": None if sa.established_at is None else round(now - sa.established_at, 1),
        "rekey_in_s": _in(sa.rekey_at, now),
        "children": [
            {
                "name": child.config_name,
                "child_id": child.child_id,
                "state": child.state.value,
                "mode": child.mode,
                "spi_in": child.spi_in.hex(),
                "spi_out": child.spi_out.hex(),
                "proposal": child.proposal_text,
                "udp_encap": child.udp_encap,
                "local_ts": list(child.local_ts),
                "remote_ts": list(child.remote_ts),
                "rekey_in_s": _in(child.rekey_at, now),
                "expire_in_s": _in(child.expire_at, now),
                "per_resource": child.per_resource,  # RFC 9611 group member; resource None: its fallback
                "resource": child.resource,
                **_counters(child),
            }
            for child in sa.children.values()
        ],
    }

