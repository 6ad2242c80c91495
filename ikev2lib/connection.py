"""One IKE SA of the sans-IO engine: message IDs, retransmission, and the four exchanges.

`IkeConnection` never does I/O and never reads a clock: `now` comes in with every call, datagrams and
events go out through the shared `EngineContext` that `IkeEndpoint` drains. Every state change goes
through `state.ike_transition` (via `_apply`). Exchange details live in `exchanges.py`; this module
owns the message layer (window size 1, RFC 7296 2.1-2.3).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .child_sa import ChildSa, EspFactory, random_esp_spi
from .config import ChildConfig, IkeConfig
from .crypto import IkeKeys, SKCipher, sk_cipher
from .events import (
    Address,
    ChildSaDeleted,
    Event,
    IkeSaDeleted,
    PeerDead,
    ProtocolErrorEvent,
)
from .exceptions import LocalProtocolError, RemoteProtocolError
from .negotiation import SelectedProposal
from .protection import MAX_FRAGMENTS, open_fragment, protect, protect_fragments, unprotect
from .state import ChildInput, ChildState, IkeInput, IkeState, ike_transition
from .wire import EncryptedFragment, ExchangeType, Message, Notify, NotifyType, Payload, parse_payloads

if TYPE_CHECKING:
    from .exchanges import Exchanges, Operation

__all__ = ["EngineContext", "IkeConnection", "NotifyError", "PeerNotifyError", "NON_ESP_MARKER"]

NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 2.2: IKE on the NAT-T port is prefixed with it
MAX_PENDING_REQUESTS = 32  # local requests (create/rekey/delete/DPD) queued per IKE SA
MAX_CHILD_SAS = 64  # Child SAs per IKE SA (more: NO_ADDITIONAL_SAS)
HALF_OPEN_TIMEOUT = 30.0  # seconds a responder keeps an IKE SA that never completed IKE_AUTH
REKEYED_SA_LIFETIME = 60.0  # seconds an IKE SA replaced by a rekey waits for the peer's Delete
INVALID_MID_REPORT_INTERVAL = 10.0  # seconds between INVALID_MESSAGE_ID reports per IKE SA
MAX_QUEUED_EVENTS = 10_000  # undrained events kept (oldest dropped first)
MAX_QUEUED_DATAGRAMS = 10_000  # unsent datagrams kept (newest dropped)
MAX_REASSEMBLED = 65_535  # octets of one reassembled SKF message (RFC 7383)
_IP_UDP_OVERHEAD = 28  # IPv4 + UDP headers, counted in fragment_size like strongSwan does


class PeerNotifyError(RemoteProtocolError):
    """The peer answered with an error Notify (the event says `received=True`)."""


class NotifyError(RemoteProtocolError):
    """A RemoteProtocolError whose answer Notify carries data (INVALID_KE_PAYLOAD: the group)."""

    def __init__(self, message: str, *, notify: int, data: bytes = b"") -> None:
        super().__init__(message, notify=notify)
        self.data = data


@dataclass
class EngineContext:
    """What every IKE SA shares with the endpoint: output queues, id counters, the ESP factory."""

    local_addr: Address
    esp_factory: EspFactory
    events: deque[Event] = field(default_factory=deque)
    outbox: list[tuple[bytes, Address]] = field(default_factory=list)
    esp_spis: set[bytes] = field(default_factory=set)  # our live inbound ESP SPIs
    stats: dict[str, int] = field(default_factory=dict)
    spawned: list[IkeConnection] = field(default_factory=list)  # new IKE SAs from rekeys
    _next_child_id: int = 1

    def emit(self, event: Event) -> None:
        if len(self.events) >= MAX_QUEUED_EVENTS:  # the user is not draining next_event()
            self.events.popleft()
            self.count("events_dropped")
        self.events.append(event)

    def send(self, datagram: bytes, addr: Address) -> None:
        if len(self.outbox) >= MAX_QUEUED_DATAGRAMS:  # the user is not calling datagrams_to_send()
            self.count("datagrams_dropped")
            return
        self.outbox.append((datagram, addr))

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def new_child_id(self) -> int:
        value = self._next_child_id
        self._next_child_id += 1
        return value

    def new_esp_spi(self) -> bytes:
        while True:
            spi = random_esp_spi()
            if spi not in self.esp_spis:
                self.esp_spis.add(spi)
                return spi


RequestHandler = Callable[[list[Payload], float], None]


@dataclass(eq=False)
class _Request:
    exchange_type: int
    message_id: int
    datagrams: list[bytes]  # one message, possibly in SKF fragments
    handler: RequestHandler
    next_at: float
    attempts: int = 0  # retransmissions done so far


@dataclass(eq=False)
class _Fragments:
    total: int
    first: int = 0
    size: int = 0
    chunks: dict[int, bytes] = field(default_factory=dict)


@functools.lru_cache(maxsize=4096)
def _natd_address(host: str, port: int) -> bytes:
    """IP | port as NAT detection hashes them (parsed once per address)."""
    try:
        packed = ipaddress.ip_address(host).packed
    except ValueError:  # a driver handing us a non-IP address string
        packed = host.encode("utf-8", "replace")
    return packed + int(port).to_bytes(2, "big")


def natd_hash(spi_i: bytes, spi_r: bytes, addr: Address) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port) (RFC 7296 2.23)."""
    return hashlib.sha1(spi_i + spi_r + _natd_address(addr[0], addr[1])).digest()


class IkeConnection:
    """One IKE SA (either role). Built by `IkeEndpoint`; users talk to the endpoint."""

    __slots__ = (
        "ctx",
        "ike_sa_id",
        "config",
        "is_initiator",
        "remote_addr",
        "spi_i",
        "spi_r",
        "state",
        "natt",
        "nat_detected",
        "created_at",
        "established_at",
        "last_heard",
        "remote_id_text",
        "replaced",
        "selected",
        "proposal_text",
        "keys",
        "_in",
        "_out",
        "children",
        "_send_mid",
        "_recv_mid",
        "_outstanding",
        "_queue",
        "_cached_response",
        "_fragments",
        "peer_fragmentation",
        "rekey_at",
        "init_key",
        "scheduled_at",
        "_last_invalid_mid_report",
        "last_received",
        "exchanges",
    )

    def __init__(
        self,
        *,
        ctx: EngineContext,
        ike_sa_id: int,
        config: IkeConfig,
        is_initiator: bool,
        remote_addr: Address,
        spi_i: bytes,
        spi_r: bytes,
        now: float,
    ) -> None:
        from .exchanges import Exchanges

        self.ctx = ctx
        self.ike_sa_id = ike_sa_id
        self.config = config
        self.is_initiator = is_initiator  # original initiator of THIS IKE SA (the I flag)
        self.remote_addr = remote_addr
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.state = IkeState.INITIAL
        self.natt = False  # IKE runs on the NAT-T port with the non-ESP marker
        self.nat_detected = False
        self.created_at = now
        self.established_at: float | None = None
        self.last_heard = now
        self.remote_id_text = ""
        self.replaced = False  # superseded by a rekeyed IKE SA: no user-visible deletion events
        self.selected: SelectedProposal | None = None
        self.proposal_text = ""
        self.keys: IkeKeys | None = None
        self._in: SKCipher | None = None
        self._out: SKCipher | None = None
        self.children: dict[int, ChildSa] = {}
        # message layer
        self._send_mid = 0
        self._recv_mid = 0
        self._outstanding: _Request | None = None
        self._queue: list[Operation] = []  # at most MAX_PENDING_REQUESTS: a list is smaller than a deque
        self._cached_response: tuple[int, bytes, list[bytes]] | None = None  # (mid, request digest, datagrams)
        self._fragments: dict[tuple[bool, int], _Fragments] = {}  # (is response, message ID) -> SKF parts
        self.peer_fragmentation = False  # both sides announced IKEV2_FRAGMENTATION_SUPPORTED
        self.rekey_at: float | None = None
        self.init_key: tuple[bytes, Address] | None = None  # responder: (SPIi, address) of IKE_SA_INIT
        self.scheduled_at: float | None = None  # the deadline the endpoint's timer heap holds for us
        self._last_invalid_mid_report: float | None = None
        self.last_received: bytes | None = None  # raw bytes of the last response (IKE_SA_INIT: signed by AUTH)
        self.exchanges: Exchanges = Exchanges(self)

    # ---- identity ----------------------------------------------------------------------------------

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.is_initiator else self.spi_r

    def __repr__(self) -> str:
        return (
            f"IkeConnection(id={self.ike_sa_id}, {self.state.value}, spi_i={self.spi_i.hex()}, "
            f"spi_r={self.spi_r.hex()}, children={len(self.children)})"
        )

    # ---- state -------------------------------------------------------------------------------------

    def apply(self, event: IkeInput) -> None:
        """The only place the IKE SA's state changes (through the table in state.py)."""
        self.state = ike_transition(self.state, event)

    @property
    def finished(self) -> bool:
        return self.state in (IkeState.DELETED, IkeState.FAILED)

    # ---- keys --------------------------------------------------------------------------------------

    def install_keys(self, selected: SelectedProposal, keys: IkeKeys, proposal_text: str) -> None:
        self.selected = selected
        self.keys = keys
        self.proposal_text = proposal_text
        enc_i = sk_cipher(selected.encr_id, selected.encr_key_bits, selected.integ_id, keys.sk_ei, keys.sk_ai)
        enc_r = sk_cipher(selected.encr_id, selected.encr_key_bits, selected.integ_id, keys.sk_er, keys.sk_ar)
        self._out, self._in = (enc_i, enc_r) if self.is_initiator else (enc_r, enc_i)

    # ---- output ------------------------------------------------------------------------------------

    def transmit(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            data = NON_ESP_MARKER + datagram if self.natt else datagram
            self.ctx.send(data, self.remote_addr)

    def _max_message(self) -> int:
        # strongSwan's fragment_size counts the IP and UDP headers (and the non-ESP marker)
        return self.config.fragment_size - _IP_UDP_OVERHEAD - (len(NON_ESP_MARKER) if self.natt else 0)

    def _build(self, exchange_type: int, message_id: int, is_response: bool, payloads: list[Payload]) -> list[bytes]:
        if exchange_type == ExchangeType.IKE_SA_INIT:
            return [
                Message(
                    spi_i=self.spi_i,
                    spi_r=self.spi_r,
                    exchange_type=exchange_type,
                    message_id=message_id,
                    payloads=payloads,
                    is_initiator=self.is_initiator,
                    is_response=is_response,
                ).serialize()
            ]
        if self._out is None:
            raise LocalProtocolError("no keys yet")
        if self.peer_fragmentation:
            return protect_fragments(
                self._out, spi_i=self.spi_i, spi_r=self.spi_r, exchange_type=exchange_type, message_id=message_id,
                is_initiator=self.is_initiator, is_response=is_response, payloads=payloads,
                max_message=self._max_message(),
            )  # fmt: skip
        return [
            protect(
                self._out, spi_i=self.spi_i, spi_r=self.spi_r, exchange_type=exchange_type, message_id=message_id,
                is_initiator=self.is_initiator, is_response=is_response, payloads=payloads,
            )
        ]  # fmt: skip

    def send_request(
        self, exchange_type: int, payloads: list[Payload], handler: RequestHandler, now: float
    ) -> None:
        """Send a request (window size 1: the caller made sure nothing is outstanding)."""
        if self._outstanding is not None:
            raise LocalProtocolError("a request is already outstanding")
        mid = self._send_mid
        self._send_mid += 1
        datagrams = self._build(exchange_type, mid, False, payloads)
        self._outstanding = _Request(exchange_type, mid, datagrams, handler, now + self.config.retransmit.delay(0))
        self.transmit(datagrams)

    def resend_sa_init(self, payloads: list[Payload], handler: RequestHandler, now: float) -> bytes:
        """A new IKE_SA_INIT request with message ID 0 (after COOKIE or INVALID_KE_PAYLOAD)."""
        self._send_mid = 0
        self._outstanding = None
        self.send_request(ExchangeType.IKE_SA_INIT, payloads, handler, now)
        if self._outstanding is None:  # pragma: no cover - send_request always sets it
            raise LocalProtocolError("request not recorded")
        return self._outstanding.datagrams[0]

    def outstanding_datagram(self) -> bytes | None:
        return None if self._outstanding is None else self._outstanding.datagrams[0]

    def send_response(self, exchange_type: int, message_id: int, payloads: list[Payload], request: bytes) -> None:
        datagrams = self._build(exchange_type, message_id, True, payloads)
        self._cached_response = (message_id, hashlib.sha256(request).digest(), datagrams)
        self.transmit(datagrams)

    def expect_request(self, message_id: int) -> None:
        self._recv_mid = message_id

    def response_bytes(self) -> bytes | None:
        return None if self._cached_response is None else self._cached_response[2][0]

    # ---- input -------------------------------------------------------------------------------------

    def receive(self, data: bytes, message: Message, addr: Address, natt: bool, now: float) -> None:
        """Handle one parsed message addressed to this IKE SA. Raises only RemoteProtocolError
        (the endpoint drops the datagram then); a peer error inside an authenticated exchange is
        answered or turned into an event here."""
        if message.is_initiator == self.is_initiator:
            raise RemoteProtocolError("message has our own role flag")
        if message.is_response:
            self._receive_response(data, message, addr, natt, now)
        else:
            self._receive_request(data, message, addr, natt, now)

    def _learn_path(self, addr: Address, natt: bool) -> None:
        # Only called after a message authenticated: follow the peer to port 4500 (RFC 7296 2.23).
        if natt and not self.natt:
            self.natt = True
        if natt and addr != self.remote_addr:
            self.remote_addr = addr

    def answer_retransmit(self, data: bytes) -> None:
        """Resend the cached response if `data` is the request it answered (used after closing)."""
        cached = self._cached_response
        if cached is not None and hashlib.sha256(data).digest() == cached[1]:
            self.ctx.count("retransmitted_requests")
            self.transmit(cached[2])

    def _open(self, data: bytes, message: Message, is_response: bool) -> list[Payload] | None:
        """The authenticated inner payloads, or None while an SKF message is incomplete."""
        if self._in is None:
            raise RemoteProtocolError("protected message before keys exist")
        if not (message.payloads and isinstance(message.payloads[-1], EncryptedFragment)):
            return unprotect(self._in, data, message)
        number, total, first, plain = open_fragment(self._in, data, message)
        if total > MAX_FRAGMENTS:
            raise RemoteProtocolError(f"message in {total} fragments (limit {MAX_FRAGMENTS})")
        key = (is_response, message.message_id)
        buffer = self._fragments.get(key)
        if buffer is None or buffer.total != total:
            # RFC 7383 2.6.2: a retransmission may use a different fragmentation; start over
            self._fragments = {k: v for k, v in self._fragments.items() if k[0] != is_response}
            buffer = self._fragments[key] = _Fragments(total)
        if number in buffer.chunks:
            return None
        buffer.size += len(plain)
        if buffer.size > MAX_REASSEMBLED:
            del self._fragments[key]
            raise RemoteProtocolError("reassembled message too large")
        buffer.chunks[number] = plain
        if number == 1:
            buffer.first = first
        if len(buffer.chunks) < total:
            return None
        del self._fragments[key]
        return parse_payloads(buffer.first, b"".join(buffer.chunks[i] for i in range(1, total + 1)))

    def _receive_request(self, data: bytes, message: Message, addr: Address, natt: bool, now: float) -> None:
        mid = message.message_id
        cached = self._cached_response
        if cached is not None and mid == cached[0]:
            # A retransmitted request: answer from the cache, never process it twice (RFC 7296 2.1).
            last = message.payloads[-1] if message.payloads else None
            if isinstance(last, EncryptedFragment):
                if last.fragment_number == 1:  # RFC 7383 2.6.1: answer the first fragment only
                    self.ctx.count("retransmitted_requests")
                    self.transmit(cached[2])
                return
            if hashlib.sha256(data).digest() == cached[1]:
                self.ctx.count("retransmitted_requests")
                self.transmit(cached[2])
                return
            raise RemoteProtocolError("different request with an already answered message ID")
        if mid != self._recv_mid:
            if mid > self._recv_mid and self._in is not None and self.state == IkeState.ESTABLISHED:
                self._report_invalid_message_id(data, message, now)
            raise RemoteProtocolError(f"message ID {mid} outside the window (expected {self._recv_mid})")
        payloads = self._open(data, message, False)
        self.last_heard = now
        if payloads is None:
            return
        # only a complete, new, authenticated message may move the peer's address (RFC 7296 2.23): a
        # replayed fragment of a message still being reassembled must not
        self._learn_path(addr, natt)
        self._recv_mid += 1
        exchange = int(message.exchange_type)
        was_established = self.state == IkeState.ESTABLISHED
        try:
            response = self.exchanges.handle_request(exchange, payloads, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            # LocalProtocolError here: the peer chose something our own code cannot use (e.g. a group
            # the crypto layer lacks); the answer is the same refusal
            notify = exc.notify if isinstance(exc, RemoteProtocolError) else int(NotifyType.NO_PROPOSAL_CHOSEN)
            response = [Notify(notify, data=getattr(exc, "data", b""))]
            self.ctx.emit(
                ProtocolErrorEvent(
                    ike_sa_id=self.ike_sa_id, remote_addr=self.remote_addr, description=str(exc), notify=notify
                )
            )
            # a failed IKE_AUTH ends the SA it was setting up (with the deletion events if the user saw
            # it); a stray IKE_AUTH on an SA that was already established only gets the error answer
            if exchange == ExchangeType.IKE_AUTH and not was_established:
                self.fail(now, reason=str(exc))
        self.send_response(exchange, mid, response, data)
        self.exchanges.after_response(now)

    def _report_invalid_message_id(self, data: bytes, message: Message, now: float) -> None:
        """RFC 7296 3.10.1: never answer the request, but tell the peer in an INFORMATIONAL of
        our own, rate limited, and only for a request that authenticates."""
        if self._last_invalid_mid_report is not None and now - self._last_invalid_mid_report < INVALID_MID_REPORT_INTERVAL:
            return
        if self._in is None or isinstance(message.payloads[-1] if message.payloads else None, EncryptedFragment):
            return
        unprotect(self._in, data, message)  # raises (and so drops) unless authentic
        self._last_invalid_mid_report = now
        if len(self._queue) < MAX_PENDING_REQUESTS:
            self._queue.append(("invalid_message_id", message.message_id))
        self.ctx.count("invalid_message_id_reports")

    def _receive_response(self, data: bytes, message: Message, addr: Address, natt: bool, now: float) -> None:
        request = self._outstanding
        if request is None or message.message_id != request.message_id:
            raise RemoteProtocolError("unexpected response (no matching request)")
        if int(message.exchange_type) != request.exchange_type:
            raise RemoteProtocolError("response exchange type does not match the request")
        if request.exchange_type == ExchangeType.IKE_SA_INIT:
            payloads: list[Payload] | None = list(message.payloads)
            if message.spi_r != bytes(8):
                self.spi_r = bytes(message.spi_r)
        else:
            payloads = self._open(data, message, True)
            if payloads is not None:
                self._learn_path(addr, natt)  # a complete message only, as for requests
        self.last_heard = now
        if payloads is None:
            return
        self.last_received = data
        self._outstanding = None
        try:
            request.handler(payloads, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            # An authenticated but unusable answer to IKE_SA_INIT/IKE_AUTH ends the SA; the
            # CREATE_CHILD_SA and INFORMATIONAL handlers contain their own errors.
            notify = exc.notify if isinstance(exc, RemoteProtocolError) else None
            self.ctx.emit(
                ProtocolErrorEvent(
                    ike_sa_id=self.ike_sa_id,
                    remote_addr=self.remote_addr,
                    description=str(exc),
                    notify=notify,
                    received=isinstance(exc, PeerNotifyError),
                )
            )
            self.fail(now, reason=str(exc))

    # ---- local requests ----------------------------------------------------------------------------

    def enqueue(self, operation: Operation) -> None:
        if self.finished or self.state in (IkeState.DELETING, IkeState.REKEYED):
            raise LocalProtocolError(f"IKE SA {self.ike_sa_id} is {self.state.value}")
        if len(self._queue) >= MAX_PENDING_REQUESTS:
            raise LocalProtocolError("too many queued requests on this IKE SA")
        self._queue.append(operation)

    def enqueue_front(self, operation: Operation) -> None:
        # follow-up work of a finished exchange (delete the replaced SA) goes before user requests
        self._queue.insert(0, operation)

    def take_queue(self, old: IkeConnection) -> None:
        # requests queued on an IKE SA that was just rekeyed move to its successor
        self._queue.extend(old._queue)
        old._queue.clear()

    def pump(self, now: float) -> None:
        """Start queued requests while the window is free."""
        while self._outstanding is None and self._queue and self.state in (
            IkeState.ESTABLISHED,
            IkeState.REKEYED,
        ):
            operation = self._queue.pop(0)
            self.exchanges.run(operation, now)
        if self._outstanding is None and self.state == IkeState.ESTABLISHED:
            self.exchanges.maybe_start_timed_work(now)

    # ---- timers ------------------------------------------------------------------------------------

    def next_timer(self) -> float | None:
        candidates: list[float] = []
        if self._outstanding is not None:
            candidates.append(self._outstanding.next_at)
        if self.state == IkeState.SA_INIT_RECEIVED:
            candidates.append(self.created_at + HALF_OPEN_TIMEOUT)
        if self.state == IkeState.REKEYED:
            candidates.append(self.last_heard + REKEYED_SA_LIFETIME)
        if self.state == IkeState.ESTABLISHED and self._outstanding is None:
            timed = self.exchanges.next_timed_work()
            if timed is not None:
                candidates.append(timed)
        return min(candidates) if candidates else None

    def handle_timer(self, now: float) -> None:
        request = self._outstanding
        if request is not None and now >= request.next_at:
            if request.attempts >= self.config.retransmit.tries:
                self._outstanding = None
                if self.state in (IkeState.DELETING, IkeState.REKEYED):
                    self.close(now, reason="delete not answered", by_peer=False, terminal=IkeInput.TIMEOUT)
                else:
                    self.ctx.emit(PeerDead(ike_sa_id=self.ike_sa_id, remote_addr=self.remote_addr))
                    self.fail(now, reason="peer dead (retransmissions exhausted)")
                return
            request.attempts += 1
            request.next_at = now + self.config.retransmit.delay(request.attempts)
            self.ctx.count("retransmissions")
            self.transmit(request.datagrams)
        if self.state == IkeState.SA_INIT_RECEIVED and now >= self.created_at + HALF_OPEN_TIMEOUT:
            self.ctx.count("half_open_expired")
            self.apply(IkeInput.TIMEOUT)  # silently: it never became visible to the user
            return
        if self.state == IkeState.REKEYED and now >= self.last_heard + REKEYED_SA_LIFETIME:
            self.close(now, reason="replaced", by_peer=False, terminal=IkeInput.TIMEOUT)
            return
        self.pump(now)

    # ---- endings -----------------------------------------------------------------------------------

    def fail(self, now: float, *, reason: str) -> None:
        """End the SA after a timeout or fatal error, emitting the deletion events."""
        if self.finished:
            return
        was_visible = self.established_at is not None or self.is_initiator
        self.close(now, reason=reason, by_peer=False, terminal=IkeInput.FATAL_ERROR, visible=was_visible)

    def close(
        self,
        now: float,
        *,
        reason: str,
        by_peer: bool,
        terminal: IkeInput,
        visible: bool = True,
    ) -> None:
        """Move to a terminal state and tell the user about every SA that went away."""
        if self.finished:
            return
        self.apply(terminal)
        self._outstanding = None
        self._queue.clear()
        for child in list(self.children.values()):
            self.drop_child(child, by_peer=by_peer, event=ChildInput.IKE_SA_GONE)
        if visible and not self.replaced:
            self.ctx.emit(
                IkeSaDeleted(
                    ike_sa_id=self.ike_sa_id, spi_i=self.spi_i, spi_r=self.spi_r, reason=reason, by_peer=by_peer
                )
            )

    def drop_child(self, child: ChildSa, *, by_peer: bool, event: ChildInput) -> None:
        if child.state != ChildState.DELETED:
            child.apply(event)
        self.children.pop(child.child_id, None)
        self.ctx.esp_spis.discard(child.spi_in)
        self.ctx.emit(
            ChildSaDeleted(
                ike_sa_id=self.ike_sa_id,
                child_id=child.child_id,
                spi_in=child.spi_in,
                spi_out=child.spi_out,
                by_peer=by_peer,
            )
        )

    def find_child_config(self, name: str) -> ChildConfig:
        for cfg in self.config.children:
            if cfg.name == name:
                return cfg
        raise LocalProtocolError(f"no child config named {name!r}")
