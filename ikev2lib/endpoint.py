"""`IkeEndpoint`: the sans-IO engine for one local address, serving many peers (aioquic-style API).

    endpoint = IkeEndpoint(responder_config, local_addr=("192.0.2.1", 500))
    endpoint.receive_datagram(data, addr, now)       # never raises on peer input
    for data, addr in endpoint.datagrams_to_send(now): sock.sendto(data, addr)
    endpoint.get_timer(); endpoint.handle_timer(now); endpoint.next_event()

Datagrams for the NAT-T port carry the RFC 3948 non-ESP marker (4 zero octets) at the start: a driver
sends those, and NAT keepalives (the single octet 0xFF, `natt.NATT_KEEPALIVE`), from its port-4500
socket (and may hand received port-4500 IKE datagrams in with the marker still on). Incoming IKE
messages are demultiplexed by our SPI; IKE_SA_INIT requests by (SPIi, address).
An IKE message on port 500 whose SPIi starts with four zero octets is read as marker-prefixed, so
this engine never chooses such SPIs.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from . import exchanges
from .child_sa import ChildSa, EspFactory, default_esp_factory
from .config import ChildConfig, IkeConfig
from .connections import ConnectionTable
from .context import EngineContext
from .cookies import CookieJar
from .events import Address, Event, IkeSaRedirected, ProtocolErrorEvent, Redirection
from .exceptions import LocalProtocolError, RemoteProtocolError
from .ike_sa import IkeSa
from .keyrecords import EspKeyRecord, IkeKeyRecord, key_records
from .natt import NON_ESP_MARKER, UdpKind, classify_udp4500
from .operations import CreateChild, DeleteChild, DeleteIke, Operation, Redirect, RekeyChild, RekeyIke, SendDpd
from .ratelimit import PerSecondBudget
from .state import IkeState
from .wire import SA, ExchangeType, Header, Message, Nonce, Notify, NotifyType
from .wire.redirect import Gateway, decode as decode_redirect, encode as redirect_answer

__all__ = [
    "IkeEndpoint",
    "IkeKeyRecord",
    "EspKeyRecord",
    "MAX_IKE_SAS",
    "MAX_HALF_OPEN",
    "COOKIE_THRESHOLD",
    "MAX_SAS_PER_PEER",
    "MAX_DATAGRAM",
    "RedirectHook",
]

# RFC 5685, gateway side: (the client's address, the connection it would get, the gateway that
# redirected it here if any) -> the gateway (IP address or DNS name) to send it to, or None to serve it
RedirectHook = Callable[[Address, IkeConfig, "str | None"], "str | None"]

MAX_IKE_SAS = 10_000  # IKE SAs in any state; beyond it new IKE_SA_INIT requests are dropped
MAX_HALF_OPEN = 1_000  # responder SAs still waiting for IKE_AUTH (RFC 7296 2.6: the DoS target)
COOKIE_THRESHOLD = 100  # half-open SAs from which an IKE_SA_INIT must carry a valid COOKIE
MAX_SAS_PER_PEER = 32  # IKE SAs per remote IP address
MAX_DATAGRAM = 65_535  # largest UDP payload we look at
LINGER_TIME = 30.0  # seconds a closed IKE SA still answers retransmits of its last request from the cache
MAX_LINGERING = 1_000  # closed IKE SAs kept for that purpose
INVALID_SPI_REPLIES_PER_SECOND = 10  # unprotected INVALID_IKE_SPI answers (a reflection vector)
# Refused IKE_SA_INIT requests come from addresses anyone can spoof: their unprotected answers and
# their ProtocolErrorEvents are budgeted (every refusal is still counted in `stats`).
SA_INIT_REFUSALS_PER_SECOND = 100  # stateless error answers (INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN, ...)
SA_INIT_REFUSAL_EVENTS_PER_SECOND = 10  # ProtocolErrorEvents about refused IKE_SA_INIT requests
_ZERO_SPI = bytes(8)


class IkeEndpoint:
    """Many IKE SAs behind one local address. `config` (one `IkeConfig`, or several connections with
    distinct names) answers incoming IKE_SA_INIT requests (None: initiator only); each peer gets the
    connection that matches its addresses and identity best (connections.py), and connections can be
    added, replaced and removed at run time without touching established SAs. All methods take `now` (seconds, any monotonic origin) where time matters;
    `wall_clock` (seconds since the epoch) is read only to check certificates and CRLs."""

    def __init__(
        self,
        config: IkeConfig | Iterable[IkeConfig] | None = None,
        *,
        local_addr: Address,
        esp_factory: EspFactory = default_esp_factory,
        cookie_threshold: int = COOKIE_THRESHOLD,
        allow_key_export: bool = False,
        wall_clock: Callable[[], float] = time.time,
        max_sas_per_peer: int = MAX_SAS_PER_PEER,
        natt_port: int = 4500,
        redirect: RedirectHook | None = None,
    ) -> None:
        configs = () if config is None else (config,) if isinstance(config, IkeConfig) else tuple(config)
        names = [c.name for c in configs]
        if len(set(names)) != len(names):
            raise LocalProtocolError("connections need distinct names")
        self.ctx: EngineContext[IkeSa] = EngineContext(
            local_addr=local_addr, esp_factory=esp_factory, wall_clock=wall_clock,
            connections=ConnectionTable(configs), natt_port=natt_port,
        )
        self.cookie_threshold = cookie_threshold
        # IKE SAs one remote IP address may hold: raise it for a hub whose spokes share an address (a NAT)
        self.max_sas_per_peer = max_sas_per_peer
        self.allow_key_export = allow_key_export
        # asked for every IKE_SA_INIT of a client that follows redirects (RFC 5685); user code: an
        # exception in it is counted (`redirect_hook_errors`) and the client is served
        self.redirect_hook = redirect
        # replication (ikev2lib.gateway.ha) asks which IKE SAs changed: only kept when it is on
        self.track_changes = False
        self._changed: set[int] = set()
        self._by_spi: dict[bytes, IkeSa] = {}  # our SPI -> IKE SA (old and new during a rekey)
        self._by_id: dict[int, IkeSa] = {}  # stable handle -> the IKE SA users see
        # responder SAs by (SPIi, address) of their IKE_SA_INIT: retransmits and replays find them
        self._by_init: dict[tuple[bytes, Address], IkeSa] = {}
        self._half_open: set[IkeSa] = set()
        self._per_peer: Counter[str] = Counter()
        self._counted_as: dict[bytes, str] = {}  # our SPI -> the peer IP it counts for (MOBIKE may move it)
        self._cookies = CookieJar()
        self._lingering: dict[bytes, tuple[float, IkeSa]] = {}  # our SPI -> (expiry, closed SA)
        self._linger_heap: list[tuple[float, bytes]] = []
        # (deadline, tie-breaker, IKE SA); an entry is live while sa.scheduled_at == deadline
        self._timers: list[tuple[float, int, IkeSa]] = []
        self._timer_seq = itertools.count()
        self._invalid_spi_replies = PerSecondBudget(INVALID_SPI_REPLIES_PER_SECOND)
        self._refusal_replies = PerSecondBudget(SA_INIT_REFUSALS_PER_SECOND)
        self._refusal_events = PerSecondBudget(SA_INIT_REFUSAL_EVENTS_PER_SECOND)
        self._next_id = 1

    # ---- introspection -----------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters of dropped/retransmitted/... datagrams (names are stable strings)."""
        return dict(self.ctx.stats)

    def connection(self, ike_sa_id: int) -> IkeSa:
        """The IKE SA behind a handle (the current one: a rekey replaces it, the handle stays)."""
        sa = self._by_id.get(ike_sa_id)
        if sa is None:
            raise LocalProtocolError(f"no IKE SA {ike_sa_id}")
        return sa

    def ike_sa_ids(self) -> list[int]:
        return [i for i, c in self._by_id.items() if not c.finished]

    def state_of(self, ike_sa_id: int) -> IkeState:
        return self.connection(ike_sa_id).state

    @property
    def half_open_count(self) -> int:
        return len(self._half_open)

    def __len__(self) -> int:
        return len(self._by_spi)

    # ---- connections (what a responder serves) ------------------------------------------------------

    @property
    def config(self) -> IkeConfig | None:
        """The responder's connection when it has exactly one (the single-connection API)."""
        configs = list(self.ctx.connections)
        return configs[0] if len(configs) == 1 else None

    @config.setter
    def config(self, config: IkeConfig | None) -> None:
        """Answer new peers with exactly `config` from now on (None: with nothing)."""
        self.ctx.connections = ConnectionTable(() if config is None else (config,))

    @property
    def configs(self) -> ConnectionTable:
        """The connections this endpoint answers for."""
        return self.ctx.connections

    def add_connection(self, config: IkeConfig) -> None:
        """Serve `config` from now on (replacing the connection of the same name). IKE SAs already
        set up keep the definition they were made with."""
        self.ctx.connections.add(config)

    def remove_connection(self, name: str) -> IkeConfig:
        """Stop answering new peers for connection `name`; its established SAs stay up."""
        return self.ctx.connections.remove(name)

    # ---- the sans-IO surface -----------------------------------------------------------------------

    def initiate(self, config: IkeConfig, remote_addr: Address, now: float, *,
                 redirection: Redirection | None = None) -> int:
        """Start IKE_SA_INIT towards `remote_addr`; returns the IKE SA's handle (`ike_sa_id`).
        `redirection`: we go there because a gateway redirected us (from `IkeSaRedirected`)."""
        if len(self._by_spi) >= MAX_IKE_SAS:
            raise LocalProtocolError("too many IKE SAs")
        spi_i = self.ctx.new_ike_spi()
        sa = IkeSa(
            ctx=self.ctx, ike_sa_id=self._take_id(), config=config, is_initiator=True, remote_addr=remote_addr,
            spi_i=spi_i, spi_r=_ZERO_SPI, now=now,
        )  # fmt: skip
        sa.redirection = redirection
        try:
            exchanges.initiate(sa, now)
        except BaseException:
            self.ctx.release_ike_spi(spi_i)
            raise
        self._register(sa)
        return sa.ike_sa_id

    def receive_datagram(self, data: bytes, addr: Address, now: float, local_ip: str | None = None) -> None:
        """Feed one UDP payload from `addr`. Never raises on anything the peer can send. `local_ip`:
        the address of ours it was sent to, if the driver knows (answers then leave from it, and a
        MOBIKE peer's update through another address of ours moves the IKE SA there)."""
        self.ctx.arrived_at = local_ip if isinstance(local_ip, str) and local_ip else None
        try:
            self._receive(bytes(data), (str(addr[0]), int(addr[1])), now)
        except (RemoteProtocolError, LocalProtocolError):
            # Hostile, broken, replayed or unauthenticated input: dropped (RFC 7296 2.21.1).
            self.ctx.count("dropped")
        finally:
            self.ctx.arrived_at = None
        self._settle(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return [(data, addr) for data, addr, _ in self.datagrams_with_source(now)]

    def datagrams_with_source(self, now: float) -> list[tuple[bytes, Address, str | None]]:
        """As `datagrams_to_send`, with the source IP each datagram must leave from (None: the
        endpoint's address, or whichever the driver's socket has). It differs from the endpoint's
        address once MOBIKE moved an IKE SA to another local address (`local_addresses_changed`)."""
        self._settle(now)  # pumps every touched IKE SA (queued user requests go out now)
        out, self.ctx.outbox = self.ctx.outbox, []
        return out

    def get_timer(self) -> float | None:
        """The earliest deadline of any IKE SA (O(log n): a heap with lazy deletion)."""
        timers = self._timers
        while timers and timers[0][2].scheduled_at != timers[0][0]:
            heapq.heappop(timers)  # stale: the IKE SA was rescheduled or forgotten since
        times = [timers[0][0]] if timers else []
        while self._linger_heap and self._lingering.get(self._linger_heap[0][1], (None,))[0] != self._linger_heap[0][0]:
            heapq.heappop(self._linger_heap)
        if self._linger_heap:
            times.append(self._linger_heap[0][0])
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        timers = self._timers
        due: list[IkeSa] = []
        while timers and timers[0][0] <= now:
            deadline, _, sa = heapq.heappop(timers)
            if sa.scheduled_at == deadline:
                sa.scheduled_at = None
                due.append(sa)
        for sa in due:
            self._guarded(sa, now, exchanges.on_timer)
        while self._linger_heap and self._linger_heap[0][0] <= now:
            expiry, spi = heapq.heappop(self._linger_heap)
            if self._lingering.get(spi, (None,))[0] == expiry:
                del self._lingering[spi]
        self._settle(now)

    def next_event(self) -> Event | None:
        return self.ctx.events.popleft() if self.ctx.events else None

    # ---- requests of the local user ----------------------------------------------------------------

    def create_child_sa(self, ike_sa_id: int, child: ChildConfig | None = None) -> None:
        sa = self.connection(ike_sa_id)
        if child is None:
            if not sa.config.children:
                raise LocalProtocolError("no child config")
            child = sa.config.children[0]
        self._enqueue(sa, CreateChild(child))

    def rekey_child_sa(self, ike_sa_id: int, child_id: int) -> None:
        sa = self.connection(ike_sa_id)
        if child_id not in sa.children:
            raise LocalProtocolError(f"no Child SA {child_id}")
        self._enqueue(sa, RekeyChild(child_id))

    def delete_child_sa(self, ike_sa_id: int, child_id: int) -> None:
        sa = self.connection(ike_sa_id)
        if child_id not in sa.children:
            raise LocalProtocolError(f"no Child SA {child_id}")
        self._enqueue(sa, DeleteChild(child_id))

    def rekey_ike_sa(self, ike_sa_id: int) -> None:
        self._enqueue(self.connection(ike_sa_id), RekeyIke())

    def delete_ike_sa(self, ike_sa_id: int) -> None:
        self._enqueue(self.connection(ike_sa_id), DeleteIke())

    def send_dpd(self, ike_sa_id: int) -> None:
        self._enqueue(self.connection(ike_sa_id), SendDpd())

    def redirect_ike_sa(self, ike_sa_id: int, gateway: str) -> None:
        """Send an established client to another gateway (RFC 5685 6: IP address or DNS name). Only
        a client that announced REDIRECT_SUPPORTED can be redirected; if it does not delete its IKE SA
        within REDIRECT_DELETE_DELAY seconds, we do."""
        sa = self.connection(ike_sa_id)
        if not sa.peer_accepts_redirect:
            raise LocalProtocolError(f"IKE SA {ike_sa_id}: the peer did not announce REDIRECT_SUPPORTED")
        try:
            target = Gateway.parse(gateway)
        except ValueError as exc:
            raise LocalProtocolError(str(exc)) from None
        self._enqueue(sa, Redirect(target))

    def peer_address_seen(self, ike_sa_id: int, addr: Address, now: float) -> bool:
        """Authenticated ESP of one of this IKE SA's Child SAs arrived (UDP-encapsulated) from `addr`:
        the peer's NAT may have a new mapping. Followed as for an IKE message (RFC 7296 2.23, only when
        the peer is behind a NAT and we are not), which emits PeerAddressChanged; strongSwan does the
        same on the kernel's mapping reports. The caller must have authenticated the packet: an
        unauthenticated source must never move an SA. True if the address changed."""
        sa = self.connection(ike_sa_id)
        if sa.state != IkeState.ESTABLISHED:
            return False
        moved = sa.follow_peer(addr)
        self.ctx.touch(sa)
        self._settle(now)
        return moved

    def local_addresses_changed(self, addresses: Iterable[str], now: float) -> None:
        """The complete list of our usable local IP addresses (RFC 4555 MOBIKE): an established IKE SA
        with MOBIKE of which we are the original initiator moves when its own address is no longer
        listed (to the first listed address of the same family: UPDATE_SA_ADDRESSES); any MOBIKE SA
        sends the peer the new list when only the list changed. Without a usable address of the
        family nothing is sent; a later call tries again. Entries that are no IP address are ignored."""
        listed = exchanges.mobike.usable_addresses(addresses)
        self.ctx.local_addresses = listed
        for sa in list(self._by_spi.values()):
            if sa.state == IkeState.ESTABLISHED and not sa.hidden and not sa.finished:
                self._guarded(sa, now, lambda s, t: exchanges.mobike.local_addresses_changed(s, listed, t))
                self.ctx.touch(sa)
        self._settle(now)
    def adopt(self, sa: IkeSa, children: Iterable[ChildSa]) -> None:
        """Take in an established IKE SA built outside a handshake (`ikev2lib.ha.snapshot.restore`),
        with its Child SAs: their SPIs and ids are reserved here. LocalProtocolError if one is taken."""
        if sa.ctx is not self.ctx:
            raise LocalProtocolError("the IKE SA was built for another endpoint")
        children = list(children)
        if sa.local_spi in self.ctx.ike_spis or sa.ike_sa_id in self._by_id:
            raise LocalProtocolError(f"IKE SA {sa.ike_sa_id} (SPI {sa.local_spi.hex()}) is already here")
        if any(c.spi_in in self.ctx.esp_spis for c in children):
            raise LocalProtocolError("an inbound ESP SPI of the IKE SA is already in use here")
        self.ctx.ike_spis.add(sa.local_spi)
        for child in children:
            self.ctx.esp_spis.add(child.spi_in)
            self.ctx.reserve_child_id(child.child_id)
            sa.children[child.child_id] = child
        self._next_id = max(self._next_id, sa.ike_sa_id + 1)
        self._register(sa)

    def abandon_ike_sa(self, ike_sa_id: int, now: float) -> None:
        """Forget an IKE SA at once without telling the peer (strongSwan's `terminate --force`)."""
        sa = self.connection(ike_sa_id)
        sa.fail(now, reason="abandoned locally")
        self.ctx.touch(sa)
        self._settle(now)

    def take_changed(self) -> set[int]:
        """The handles of the IKE SAs that received, sent or changed anything since the last call
        (with `track_changes` on): what a replica must record again, or forget if they are gone."""
        changed, self._changed = self._changed, set()
        return changed

    # ---- key export (off unless asked for) ---------------------------------------------------------

    def key_records(self) -> tuple[list[IkeKeyRecord], list[EspKeyRecord]]:
        """Keys of every live SA, for keyexport.py. Refused unless built with allow_key_export=True."""
        if not self.allow_key_export:
            raise LocalProtocolError("key export is off (IkeEndpoint(allow_key_export=True))")
        return key_records(self._by_spi.values())

    # ---- internals ---------------------------------------------------------------------------------

    def _take_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def _enqueue(self, sa: IkeSa, operation: Operation) -> None:
        sa.enqueue(operation)
        self.ctx.touch(sa)

    def _register(self, sa: IkeSa) -> None:
        """Index a new IKE SA (idempotent: an SA born from a rekey may be touched again)."""
        if self._by_spi.get(sa.local_spi) is not sa:
            self._by_spi[sa.local_spi] = sa
            self._per_peer[sa.remote_addr[0]] += 1
            self._counted_as[sa.local_spi] = sa.remote_addr[0]
        if not sa.hidden:
            self._by_id[sa.ike_sa_id] = sa
        self.ctx.touch(sa)

    def _guarded(self, sa: IkeSa, now: float, action: Callable[[IkeSa, float], None]) -> None:
        # Timers and pumps run our own code on state the peer influenced: a peer-caused error
        # there ends that IKE SA, never the endpoint.
        try:
            action(sa, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self.ctx.emit(ProtocolErrorEvent(ike_sa_id=sa.ike_sa_id, remote_addr=sa.remote_addr, description=str(exc)))
            sa.fail(now, reason=str(exc))
        self.ctx.touch(sa)

    def _settle(self, now: float) -> None:
        """Register IKE SAs born from rekeys, pump touched ones, forget finished ones."""
        ctx = self.ctx
        if not ctx.touched and not ctx.spawned:
            return  # nothing touched since the last call (half of the calls)
        while ctx.spawned:
            self._register(ctx.spawned.pop())
        for sa in list(ctx.touched):
            if not sa.finished:
                self._guarded(sa, now, exchanges.pump)
        while ctx.spawned:  # pumps may finish rekeys too
            self._register(ctx.spawned.pop())
        while ctx.redirects:
            self._follow_redirect(*ctx.redirects.pop(0), now)
        touched, ctx.touched = ctx.touched, set()
        if self.track_changes:
            self._changed.update(sa.ike_sa_id for sa in touched)
        for sa in touched:
            if sa.state != IkeState.SA_INIT_RECEIVED:
                self._half_open.discard(sa)
            if sa.finished:
                self._forget(sa, now)
            else:
                if not sa.hidden:
                    self._by_id[sa.ike_sa_id] = sa
                self._reschedule(sa)
        if len(self._timers) > 2 * len(self._by_spi) + 64:  # too many stale entries: rebuild
            self._timers = [e for e in self._timers if e[2].scheduled_at == e[0]]
            heapq.heapify(self._timers)

    def _follow_redirect(self, old: IkeSa, gateway: Gateway, redirection: Redirection, now: float) -> None:
        """An established IKE SA was redirected (it deletes itself): the same connection starts over
        at the new gateway; a DNS name is left to the user (IkeSaRedirected says where)."""
        target = (gateway.value, old.ike_port) if gateway.is_address else None
        new_id: int | None = None
        if target is not None:
            try:
                new_id = self.initiate(old.config, target, now, redirection=redirection)
            except LocalProtocolError as exc:
                self.ctx.emit(ProtocolErrorEvent(ike_sa_id=old.ike_sa_id, remote_addr=old.remote_addr,
                                                 description=f"cannot follow the redirect to {gateway}: {exc}"))
                target = None
        self.ctx.emit(
            IkeSaRedirected(
                ike_sa_id=old.ike_sa_id, gateway=gateway.value, old_addr=old.remote_addr, remote_addr=target,
                new_ike_sa_id=new_id, redirection=redirection,
            )
        )  # fmt: skip

    def _reschedule(self, sa: IkeSa) -> None:
        deadline = exchanges.next_deadline(sa)
        if deadline != sa.scheduled_at:
            sa.scheduled_at = deadline
            if deadline is not None:
                heapq.heappush(self._timers, (deadline, next(self._timer_seq), sa))

    def _forget(self, sa: IkeSa, now: float) -> None:
        if sa.response_bytes() is not None and len(self._lingering) < MAX_LINGERING:
            # our answer to its last request (e.g. a Delete) may have been lost: keep answering
            self._lingering[sa.local_spi] = (now + LINGER_TIME, sa)
            heapq.heappush(self._linger_heap, (now + LINGER_TIME, sa.local_spi))
        sa.scheduled_at = None
        if self._by_spi.get(sa.local_spi) is sa:
            del self._by_spi[sa.local_spi]
            self.ctx.release_ike_spi(sa.local_spi)
            peer_ip = self._counted_as.pop(sa.local_spi, sa.remote_addr[0])
            self._per_peer[peer_ip] -= 1
            if self._per_peer[peer_ip] <= 0:
                del self._per_peer[peer_ip]
        if self._by_id.get(sa.ike_sa_id) is sa:
            del self._by_id[sa.ike_sa_id]
        self._half_open.discard(sa)
        if sa.init_key is not None and self._by_init.get(sa.init_key) is sa:
            del self._by_init[sa.init_key]
        for child in sa.children.values():
            self.ctx.release_esp_spi(child.spi_in)

    def _receive(self, data: bytes, addr: Address, now: float) -> None:
        natt = False
        kind = classify_udp4500(data)
        if kind is UdpKind.IKE:
            natt = True
            data = data[len(NON_ESP_MARKER) :]
        elif kind is UdpKind.KEEPALIVE:
            self.ctx.count("natt_keepalives")  # RFC 3948 2.3
            return
        if len(data) > MAX_DATAGRAM:
            raise RemoteProtocolError("datagram too large")
        header = Message.parse_header(data)
        if (
            header.exchange_type == ExchangeType.IKE_SA_INIT
            and header.is_initiator
            and not header.is_response
            and header.spi_r == _ZERO_SPI
        ):
            self._on_sa_init_request(data, header.spi_i, header.message_id, addr, natt, now)
            return
        local_spi = header.spi_r if header.is_initiator else header.spi_i
        sa = self._by_spi.get(local_spi)
        if sa is None:
            lingering = self._lingering.get(local_spi)
            if lingering is not None and not header.is_response:
                lingering[1].answer_retransmit(data)
                return
            self.ctx.count("unknown_spi")
            if not header.is_response:
                self._reply_invalid_spi(header, addr, natt, now)
            return
        # the other SPI must match too, except in the IKE_SA_INIT response that tells us SPIr
        if header.is_initiator:
            if header.spi_i != sa.spi_i:
                raise RemoteProtocolError("SPIi does not match")
        elif not (sa.spi_r == _ZERO_SPI or header.spi_r == sa.spi_r):
            if not (header.exchange_type == ExchangeType.IKE_SA_INIT and sa.state == IkeState.SA_INIT_SENT):
                raise RemoteProtocolError("SPIr does not match")
        message = Message.parse(data)
        self.ctx.touch(sa)
        exchanges.receive(sa, data, message, addr, natt, now)

    def _reply_stateless(self, spi_i: bytes, notify: Notify, addr: Address, natt: bool) -> None:
        datagram = Message(
            spi_i=spi_i, spi_r=_ZERO_SPI, exchange_type=ExchangeType.IKE_SA_INIT, message_id=0, payloads=[notify],
            is_initiator=False, is_response=True,
        ).serialize()  # fmt: skip
        self.ctx.send(datagram, addr, natt=natt, source=self.ctx.arrived_at)

    def _reply_invalid_spi(self, header: Header, addr: Address, natt: bool, now: float) -> None:
        """RFC 7296 2.21.4: an unprotected INVALID_IKE_SPI answer to a request for an unknown IKE SA
        (the peer may then notice that we lost its SA), rate limited against reflection."""
        if not self._invalid_spi_replies.take(now):
            return
        datagram = Message(
            spi_i=header.spi_i, spi_r=header.spi_r, exchange_type=header.exchange_type,
            message_id=header.message_id, payloads=[Notify(NotifyType.INVALID_IKE_SPI)],
            is_initiator=not header.is_initiator, is_response=True,
        ).serialize()  # fmt: skip
        self.ctx.send(datagram, addr, natt=natt)

    def _refuse_sa_init(self, exc: RemoteProtocolError, spi_i: bytes, addr: Address, natt: bool, now: float) -> None:
        """Answer an IKE_SA_INIT request we will not take without keeping any state (RFC 7296 2.6/1.2).
        The source address is not authenticated: answers and events are budgeted, never queued
        at the expense of events about real SAs."""
        negotiating = exc.notify == NotifyType.INVALID_KE_PAYLOAD  # a normal step, not an error
        if not negotiating:
            self.ctx.count("sa_init_refused")
        if self._refusal_replies.take(now):
            self._reply_stateless(spi_i, Notify(exc.notify, data=exc.data), addr, natt)
        else:
            self.ctx.count("sa_init_refusals_unanswered")
        if negotiating:
            return
        if self._refusal_events.take(now):
            self.ctx.emit_unauthenticated(
                ProtocolErrorEvent(ike_sa_id=None, remote_addr=addr, description=str(exc), notify=exc.notify)
            )
        else:
            self.ctx.count("sa_init_refusal_events_suppressed")

    def _on_sa_init_request(
        self, data: bytes, spi_i: bytes, message_id: int, addr: Address, natt: bool, now: float
    ) -> None:
        if not self.ctx.connections:
            self.ctx.count("unexpected_sa_init")
            return
        if message_id != 0:
            raise RemoteProtocolError("IKE_SA_INIT with a non-zero message ID")
        existing = self._by_init.get((spi_i, addr))
        if existing is not None:
            # a retransmission (answered from the cache) or a replay/garbage reusing the SPI (dropped)
            self.ctx.touch(existing)
            exchanges.receive(existing, data, Message.parse(data), addr, natt, now)
            return
        if len(self._by_spi) >= MAX_IKE_SAS or len(self._half_open) >= MAX_HALF_OPEN:
            self.ctx.count("dropped_overload")
            return
        if self._per_peer[addr[0]] >= self.max_sas_per_peer:
            self.ctx.count("dropped_peer_limit")
            return
        message = Message.parse(data)
        if len(self._half_open) >= self.cookie_threshold:
            nonce = message.find(Nonce)
            if nonce is None:
                raise RemoteProtocolError("IKE_SA_INIT without a nonce")
            cookie = message.notify(NotifyType.COOKIE)
            if cookie is None or not self._cookies.verify(bytes(cookie.data), bytes(nonce.data), addr[0], spi_i, now):
                self.ctx.count("cookies_sent")
                made = self._cookies.make(bytes(nonce.data), addr[0], spi_i, now)
                self._reply_stateless(spi_i, Notify(NotifyType.COOKIE, data=made), addr, natt)
                return
        config = self._connection_for(message, addr)
        if config is None:
            self.ctx.count("no_matching_connection")
            refusal = RemoteProtocolError(f"no connection for a peer at {addr[0]}", notify=NotifyType.NO_PROPOSAL_CHOSEN)
            self._refuse_sa_init(refusal, spi_i, addr, natt, now)
            return
        if self.redirect_hook is not None and self._redirect_sa_init(message, config, spi_i, addr, natt, now):
            return
        spi_r = self.ctx.new_ike_spi()
        sa = IkeSa(
            ctx=self.ctx, ike_sa_id=self._take_id(), config=config, is_initiator=False, remote_addr=addr,
            spi_i=spi_i, spi_r=spi_r, now=now,
        )  # fmt: skip
        sa.natt = natt
        if self.ctx.arrived_at is not None:  # the driver says which of our addresses the peer chose
            sa.local_addr = (self.ctx.arrived_at, self.ctx.local_addr[1])
        try:
            exchanges.accept_sa_init(sa, message, data, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self.ctx.release_ike_spi(spi_r)
            if isinstance(exc, LocalProtocolError):  # a group or cipher our crypto layer cannot run
                exc = RemoteProtocolError(str(exc), notify=NotifyType.NO_PROPOSAL_CHOSEN)
            self._refuse_sa_init(exc, spi_i, addr, natt, now)
            return
        self._register(sa)
        sa.init_key = (spi_i, addr)
        self._by_init[sa.init_key] = sa
        self._half_open.add(sa)

    def _redirect_sa_init(self, message: Message, config: IkeConfig, spi_i: bytes, addr: Address, natt: bool,
                          now: float) -> bool:
        """RFC 5685 4.2: answer a client that follows redirects with a REDIRECT (carrying its nonce,
        so that nobody else can forge one) if the hook says so; no state is kept. True if redirected."""
        came_from: str | None = None
        supported = message.notify(NotifyType.REDIRECT_SUPPORTED) is not None
        redirected_from = message.notify(NotifyType.REDIRECTED_FROM)
        if redirected_from is not None:
            supported = True
            try:
                came_from = decode_redirect(bytes(redirected_from.data))[0].value
            except RemoteProtocolError:
                self.ctx.count("malformed_redirects")
        nonce = message.find(Nonce)
        if not supported or nonce is None or self.redirect_hook is None:
            return False
        try:
            answer = self.redirect_hook(addr, config, came_from)
            target = None if answer is None else Gateway.parse(answer)
        except Exception:  # user code must not break the endpoint's promise never to raise on input
            self.ctx.count("redirect_hook_errors")
            return False
        if target is None:
            return False
        self.ctx.count("sa_init_redirected")
        if self._refusal_replies.take(now):
            notify = Notify(NotifyType.REDIRECT, data=redirect_answer(target, bytes(nonce.data)))
            self._reply_stateless(spi_i, notify, addr, natt)
        else:
            self.ctx.count("sa_init_refusals_unanswered")
        return True

    def _connection_for(self, message: Message, addr: Address) -> IkeConfig | None:
        """The best connection by addresses whose IKE proposals accept the offer; if none accepts it,
        the best by addresses (which refuses it with the right notify)."""
        candidates = self.ctx.connections.for_addresses(self.ctx.arrived_at or self.ctx.local_addr[0], addr[0])
        first = next(candidates, None)
        offer = message.find(SA)
        if first is None or offer is None or exchanges.accepts_ike_offer(first, offer):
            return first
        return next((c for c in candidates if exchanges.accepts_ike_offer(c, offer)), first)

    # ---- iteration helpers for drivers and tests ---------------------------------------------------

    def connections(self) -> Iterator[IkeSa]:
        return iter(list(self._by_spi.values()))
