"""`IkeEndpoint`: the sans-IO engine for one local address, serving many peers (aioquic-style API).

    endpoint = IkeEndpoint(responder_config, local_addr=("192.0.2.1", 500))
    endpoint.receive_datagram(data, addr, now)       # never raises on peer input
    for data, addr in endpoint.datagrams_to_send(now): sock.sendto(data, addr)
    endpoint.get_timer(); endpoint.handle_timer(now); endpoint.next_event()

Datagrams for the NAT-T port carry the RFC 3948 non-ESP marker (4 zero octets) at the start: a driver
sends those from its port-4500 socket (and may hand received port-4500 IKE datagrams in with the marker
still on). Incoming IKE messages are demultiplexed by our SPI; IKE_SA_INIT requests by (SPIi, address).
An IKE message on port 500 whose SPIi starts with four zero octets is read as marker-prefixed, so
this engine never chooses such SPIs.
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from .child_sa import EspFactory, default_esp_factory
from .config import ChildConfig, IkeConfig
from .connection import NON_ESP_MARKER, EngineContext, IkeConnection, NotifyError
from .cookies import CookieJar
from .events import Address, Event, ProtocolErrorEvent
from .exceptions import LocalProtocolError, RemoteProtocolError
from .state import IkeState
from .wire import ExchangeType, Header, Message, Nonce, Notify, NotifyType

__all__ = [
    "IkeEndpoint",
    "IkeKeyRecord",
    "EspKeyRecord",
    "MAX_IKE_SAS",
    "MAX_HALF_OPEN",
    "COOKIE_THRESHOLD",
    "MAX_SAS_PER_PEER",
    "MAX_DATAGRAM",
]

MAX_IKE_SAS = 10_000  # IKE SAs in any state; beyond it new IKE_SA_INIT requests are dropped
MAX_HALF_OPEN = 1_000  # responder SAs still waiting for IKE_AUTH (RFC 7296 2.6: the DoS target)
COOKIE_THRESHOLD = 100  # half-open SAs from which an IKE_SA_INIT must carry a valid COOKIE
MAX_SAS_PER_PEER = 32  # IKE SAs per remote IP address
MAX_DATAGRAM = 65_535  # largest UDP payload we look at
LINGER_TIME = 30.0  # seconds a closed IKE SA still answers retransmits of its last request from the cache
MAX_LINGERING = 1_000  # closed IKE SAs kept for that purpose
INVALID_SPI_REPLIES_PER_SECOND = 10  # unprotected INVALID_IKE_SPI answers (a reflection vector)
_ZERO_SPI = bytes(8)


@dataclass(frozen=True, kw_only=True)
class IkeKeyRecord:
    """Keys of one live IKE SA, for Wireshark's ikev2_decryption_table (see keyexport.py)."""

    spi_i: bytes
    spi_r: bytes
    encr_id: int
    encr_key_bits: int | None
    integ_id: int | None
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class EspKeyRecord:
    """Keys of one direction of a live Child SA, for Wireshark's esp_sa table."""

    src: str
    dst: str
    spi: bytes
    encr_id: int
    encr_key_bits: int | None
    key: bytes = field(repr=False)  # encryption key || salt
    integ_key: bytes = field(repr=False)


def _random_spi(taken: dict[bytes, IkeConnection]) -> bytes:
    while True:
        spi = os.urandom(8)
        if spi[:4] != bytes(4) and spi not in taken:
            return spi


class IkeEndpoint:
    """Many IKE SAs behind one local address. `config` answers incoming IKE_SA_INIT requests
    (None: initiator only). All methods take `now` (seconds, any monotonic origin) where time matters."""

    def __init__(
        self,
        config: IkeConfig | None = None,
        *,
        local_addr: Address,
        esp_factory: EspFactory = default_esp_factory,
        cookie_threshold: int = COOKIE_THRESHOLD,
        allow_key_export: bool = False,
    ) -> None:
        self.config = config
        self.ctx = EngineContext(local_addr=local_addr, esp_factory=esp_factory)
        self.cookie_threshold = cookie_threshold
        self.allow_key_export = allow_key_export
        self._by_spi: dict[bytes, IkeConnection] = {}  # our SPI -> IKE SA (old and new during a rekey)
        self._by_id: dict[int, IkeConnection] = {}  # stable handle -> current IKE SA
        # responder SAs by (SPIi, address) of their IKE_SA_INIT: retransmits and replays find them
        self._by_init: dict[tuple[bytes, Address], IkeConnection] = {}
        self._half_open: set[IkeConnection] = set()
        self._per_peer: Counter[str] = Counter()
        self._dirty: set[IkeConnection] = set()
        self._cookies = CookieJar()
        self._lingering: dict[bytes, tuple[float, IkeConnection]] = {}  # our SPI -> (expiry, closed SA)
        self._linger_heap: list[tuple[float, bytes]] = []
        # (deadline, tie-breaker, IKE SA); an entry is live while conn.scheduled_at == deadline
        self._timers: list[tuple[float, int, IkeConnection]] = []
        self._timer_seq = itertools.count()
        self._invalid_spi_window = float("-inf")  # start of the current one-second rate window
        self._invalid_spi_sent = 0
        self._next_id = 1

    # ---- introspection -----------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters of dropped/retransmitted/... datagrams (names are stable strings)."""
        return dict(self.ctx.stats)

    def connection(self, ike_sa_id: int) -> IkeConnection:
        conn = self._by_id.get(ike_sa_id)
        if conn is None:
            raise LocalProtocolError(f"no IKE SA {ike_sa_id}")
        return conn

    def ike_sa_ids(self) -> list[int]:
        return [i for i, c in self._by_id.items() if not c.finished]

    def state_of(self, ike_sa_id: int) -> IkeState:
        return self.connection(ike_sa_id).state

    @property
    def half_open_count(self) -> int:
        return len(self._half_open)

    def __len__(self) -> int:
        return len(self._by_spi)

    # ---- the sans-IO surface -----------------------------------------------------------------------

    def initiate(self, config: IkeConfig, remote_addr: Address, now: float) -> int:
        """Start IKE_SA_INIT towards `remote_addr`; returns the IKE SA's handle (`ike_sa_id`)."""
        if len(self._by_spi) >= MAX_IKE_SAS:
            raise LocalProtocolError("too many IKE SAs")
        conn = IkeConnection(
            ctx=self.ctx,
            ike_sa_id=self._take_id(),
            config=config,
            is_initiator=True,
            remote_addr=remote_addr,
            spi_i=_random_spi(self._by_spi),
            spi_r=_ZERO_SPI,
            now=now,
        )
        conn.exchanges.start_initiator(now)
        self._register(conn)
        return conn.ike_sa_id

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP payload from `addr`. Never raises on anything the peer can send."""
        try:
            self._receive(bytes(data), (str(addr[0]), int(addr[1])), now)
        except (RemoteProtocolError, LocalProtocolError):
            # Hostile, broken, replayed or unauthenticated input: dropped (RFC 7296 2.21.1).
            self.ctx.count("dropped")
        self._settle(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
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
        due: list[IkeConnection] = []
        while timers and timers[0][0] <= now:
            deadline, _, conn = heapq.heappop(timers)
            if conn.scheduled_at == deadline:
                conn.scheduled_at = None
                due.append(conn)
        for conn in due:
            self._guarded(conn, now, conn.handle_timer)
            self._dirty.add(conn)
        while self._linger_heap and self._linger_heap[0][0] <= now:
            expiry, spi = heapq.heappop(self._linger_heap)
            if self._lingering.get(spi, (None,))[0] == expiry:
                del self._lingering[spi]
        self._settle(now)

    def next_event(self) -> Event | None:
        return self.ctx.events.popleft() if self.ctx.events else None

    # ---- requests of the local user ----------------------------------------------------------------

    def create_child_sa(self, ike_sa_id: int, child: ChildConfig | None = None) -> None:
        conn = self.connection(ike_sa_id)
        if child is None:
            if not conn.config.children:
                raise LocalProtocolError("no child config")
            child = conn.config.children[0]
        self._enqueue(conn, ("create_child", child))

    def rekey_child_sa(self, ike_sa_id: int, child_id: int) -> None:
        conn = self.connection(ike_sa_id)
        if child_id not in conn.children:
            raise LocalProtocolError(f"no Child SA {child_id}")
        self._enqueue(conn, ("rekey_child", child_id))

    def delete_child_sa(self, ike_sa_id: int, child_id: int) -> None:
        conn = self.connection(ike_sa_id)
        if child_id not in conn.children:
            raise LocalProtocolError(f"no Child SA {child_id}")
        self._enqueue(conn, ("delete_child", child_id))

    def rekey_ike_sa(self, ike_sa_id: int) -> None:
        self._enqueue(self.connection(ike_sa_id), ("rekey_ike", None))

    def delete_ike_sa(self, ike_sa_id: int) -> None:
        self._enqueue(self.connection(ike_sa_id), ("delete_ike", None))

    def send_dpd(self, ike_sa_id: int) -> None:
        self._enqueue(self.connection(ike_sa_id), ("dpd", None))

    def abandon_ike_sa(self, ike_sa_id: int, now: float) -> None:
        """Forget an IKE SA at once without telling the peer (strongSwan's `terminate --force`)."""
        conn = self.connection(ike_sa_id)
        conn.fail(now, reason="abandoned locally")
        self._dirty.add(conn)
        self._settle(now)

    # ---- key export (off unless asked for) ---------------------------------------------------------

    def key_records(self) -> tuple[list[IkeKeyRecord], list[EspKeyRecord]]:
        """Keys of every live SA, for keyexport.py. Refused unless built with allow_key_export=True."""
        if not self.allow_key_export:
            raise LocalProtocolError("key export is off (IkeEndpoint(allow_key_export=True))")
        ike: list[IkeKeyRecord] = []
        esp: list[EspKeyRecord] = []
        local_ip = self.ctx.local_addr[0]
        for conn in self._by_spi.values():
            if conn.keys is None or conn.selected is None or conn.finished:
                continue
            sel = conn.selected
            ike.append(
                IkeKeyRecord(
                    spi_i=conn.spi_i,
                    spi_r=conn.spi_r,
                    encr_id=sel.encr_id,
                    encr_key_bits=sel.encr_key_bits,
                    integ_id=sel.integ_id,
                    sk_ei=conn.keys.sk_ei,
                    sk_er=conn.keys.sk_er,
                    sk_ai=conn.keys.sk_ai,
                    sk_ar=conn.keys.sk_ar,
                )
            )
            remote_ip = conn.remote_addr[0]
            for child in conn.children.values():
                common = dict(encr_id=child.selected.encr_id, encr_key_bits=child.selected.encr_key_bits)
                esp.append(
                    EspKeyRecord(
                        src=remote_ip, dst=local_ip, spi=child.spi_in, key=child.keys_in[0],
                        integ_key=child.keys_in[1], **common,  # type: ignore[arg-type]
                    )
                )
                esp.append(
                    EspKeyRecord(
                        src=local_ip, dst=remote_ip, spi=child.spi_out, key=child.keys_out[0],
                        integ_key=child.keys_out[1], **common,  # type: ignore[arg-type]
                    )
                )
        return ike, esp

    # ---- internals ---------------------------------------------------------------------------------

    def _take_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def _enqueue(self, conn: IkeConnection, operation: tuple[str, object]) -> None:
        conn.enqueue(operation)
        self._dirty.add(conn)

    def _register(self, conn: IkeConnection) -> None:
        self._by_spi[conn.local_spi] = conn
        self._by_id[conn.ike_sa_id] = conn
        self._per_peer[conn.remote_addr[0]] += 1
        self._dirty.add(conn)

    def _guarded(self, conn: IkeConnection, now: float, action: object) -> None:
        # Timers and pumps run our own code on state the peer influenced: a peer-caused error
        # there ends that IKE SA, never the endpoint.
        try:
            action(now)  # type: ignore[operator]
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self.ctx.emit(
                ProtocolErrorEvent(ike_sa_id=conn.ike_sa_id, remote_addr=conn.remote_addr, description=str(exc))
            )
            conn.fail(now, reason=str(exc))

    def _pump(self, conn: IkeConnection, now: float) -> None:
        if not conn.finished:
            self._guarded(conn, now, conn.pump)

    def _settle(self, now: float) -> None:
        """Register IKE SAs born from rekeys, forget finished ones, pump touched ones."""
        if not self._dirty and not self.ctx.spawned:
            return  # nothing touched since the last call (half of the calls)
        while self.ctx.spawned:
            new = self.ctx.spawned.pop()
            self._register(new)
        for conn in list(self._dirty):
            self._pump(conn, now)
        for conn in list(self._dirty):
            if conn.state != IkeState.SA_INIT_RECEIVED:
                self._half_open.discard(conn)
            if conn.finished:
                self._forget(conn, now)
            else:
                self._reschedule(conn)
        self._dirty.clear()
        if len(self._timers) > 2 * len(self._by_spi) + 64:  # too many stale entries: rebuild
            self._timers = [e for e in self._timers if e[2].scheduled_at == e[0]]
            heapq.heapify(self._timers)

    def _reschedule(self, conn: IkeConnection) -> None:
        deadline = conn.next_timer()
        if deadline != conn.scheduled_at:
            conn.scheduled_at = deadline
            if deadline is not None:
                heapq.heappush(self._timers, (deadline, next(self._timer_seq), conn))

    def _forget(self, conn: IkeConnection, now: float) -> None:
        if conn.response_bytes() is not None and len(self._lingering) < MAX_LINGERING:
            # our answer to its last request (e.g. a Delete) may have been lost: keep answering
            self._lingering[conn.local_spi] = (now + LINGER_TIME, conn)
            heapq.heappush(self._linger_heap, (now + LINGER_TIME, conn.local_spi))
        conn.scheduled_at = None
        if self._by_spi.get(conn.local_spi) is conn:
            del self._by_spi[conn.local_spi]
            self._per_peer[conn.remote_addr[0]] -= 1
            if self._per_peer[conn.remote_addr[0]] <= 0:
                del self._per_peer[conn.remote_addr[0]]
        if self._by_id.get(conn.ike_sa_id) is conn:
            del self._by_id[conn.ike_sa_id]
        self._half_open.discard(conn)
        if conn.init_key is not None and self._by_init.get(conn.init_key) is conn:
            del self._by_init[conn.init_key]
        for child in conn.children.values():
            self.ctx.esp_spis.discard(child.spi_in)

    def _receive(self, data: bytes, addr: Address, now: float) -> None:
        natt = False
        if data[:4] == NON_ESP_MARKER:
            natt = True
            data = data[4:]
        elif len(data) == 1 and data[0] == 0xFF:
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
        conn = self._by_spi.get(local_spi)
        if conn is None:
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
            if header.spi_i != conn.spi_i:
                raise RemoteProtocolError("SPIi does not match")
        elif not (conn.spi_r == _ZERO_SPI or header.spi_r == conn.spi_r):
            if not (header.exchange_type == ExchangeType.IKE_SA_INIT and conn.state == IkeState.SA_INIT_SENT):
                raise RemoteProtocolError("SPIr does not match")
        message = Message.parse(data)
        self._dirty.add(conn)
        conn.receive(data, message, addr, natt, now)

    def _reply_stateless(self, spi_i: bytes, notify: Notify, addr: Address, natt: bool) -> None:
        datagram = Message(
            spi_i=spi_i,
            spi_r=_ZERO_SPI,
            exchange_type=ExchangeType.IKE_SA_INIT,
            message_id=0,
            payloads=[notify],
            is_initiator=False,
            is_response=True,
        ).serialize()
        self.ctx.send((NON_ESP_MARKER if natt else b"") + datagram, addr)

    def _reply_invalid_spi(self, header: Header, addr: Address, natt: bool, now: float) -> None:
        """RFC 7296 2.21.4: an unprotected INVALID_IKE_SPI answer to a request for an unknown IKE SA
        (the peer may then notice that we lost its SA), rate limited against reflection."""
        if now - self._invalid_spi_window >= 1.0:
            self._invalid_spi_window, self._invalid_spi_sent = now, 0
        if self._invalid_spi_sent >= INVALID_SPI_REPLIES_PER_SECOND:
            return
        self._invalid_spi_sent += 1
        datagram = Message(
            spi_i=header.spi_i,
            spi_r=header.spi_r,
            exchange_type=header.exchange_type,
            message_id=header.message_id,
            payloads=[Notify(NotifyType.INVALID_IKE_SPI)],
            is_initiator=not header.is_initiator,
            is_response=True,
        ).serialize()
        self.ctx.send((NON_ESP_MARKER if natt else b"") + datagram, addr)

    def _on_sa_init_request(
        self, data: bytes, spi_i: bytes, message_id: int, addr: Address, natt: bool, now: float
    ) -> None:
        if self.config is None:
            self.ctx.count("unexpected_sa_init")
            return
        if message_id != 0:
            raise RemoteProtocolError("IKE_SA_INIT with a non-zero message ID")
        existing = self._by_init.get((spi_i, addr))
        if existing is not None:
            # a retransmission (answered from the cache) or a replay/garbage reusing the SPI (dropped)
            self._dirty.add(existing)
            existing.receive(data, Message.parse(data), addr, natt, now)
            return
        if len(self._by_spi) >= MAX_IKE_SAS or len(self._half_open) >= MAX_HALF_OPEN:
            self.ctx.count("dropped_overload")
            return
        if self._per_peer[addr[0]] >= MAX_SAS_PER_PEER:
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
        conn = IkeConnection(
            ctx=self.ctx,
            ike_sa_id=self._take_id(),
            config=self.config,
            is_initiator=False,
            remote_addr=addr,
            spi_i=spi_i,
            spi_r=_random_spi(self._by_spi),
            now=now,
        )
        conn.natt = natt
        try:
            conn.exchanges.accept_sa_init(message, data, now)
        except RemoteProtocolError as exc:
            # answered without keeping any state (RFC 7296 2.6/1.2)
            data_out = exc.data if isinstance(exc, NotifyError) else b""
            self._reply_stateless(spi_i, Notify(exc.notify, data=data_out), addr, natt)
            if exc.notify != NotifyType.INVALID_KE_PAYLOAD:
                self.ctx.emit(
                    ProtocolErrorEvent(ike_sa_id=None, remote_addr=addr, description=str(exc), notify=exc.notify)
                )
            return
        self._register(conn)
        conn.init_key = (spi_i, addr)
        self._by_init[conn.init_key] = conn
        self._half_open.add(conn)

    # ---- iteration helpers for drivers and tests ---------------------------------------------------

    def connections(self) -> Iterator[IkeConnection]:
        return iter(list(self._by_spi.values()))
