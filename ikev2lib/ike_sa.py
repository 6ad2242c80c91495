"""One IKE SA: its identity, state, keys and Child SAs, and the message layer (RFC 7296 2.1-2.3).

`IkeSa` moves messages; it knows no exchange. A request of ours is a `Request` object built by the
exchange module that owns it (`exchanges/`), and its answer goes back to that object's `on_response`.
A request from the peer comes out of `receive` as an `IncomingRequest`, which `exchanges.receive` hands
to the responder of its exchange type. Window size 1 both ways: one request of ours in flight, one
cached response for the peer's retransmissions. No I/O and no clock: `now` comes in with every call,
datagrams and events go out through the shared `EngineContext`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from cryptography import x509

from .child_sa import ChildSa
from .config import ChildConfig, IkeConfig
from .context import EngineContext
from .crypto import IkeKeys, SKCipher, sk_cipher
from .events import (
    Address, ChildSaDeleted, IkeSaDeleted, PeerAddressChanged, PeerDead, ProtocolErrorEvent, Redirection,
)  # fmt: skip
from .exceptions import LocalProtocolError, PeerNotifyError, RemoteProtocolError
from .natt import NON_ESP_MARKER
from .negotiation import SelectedProposal
from .operations import Operation, ReportInvalidMessageId
from .protection import Reassembly, protect, protect_fragments, unprotect
from .state import ChildInput, ChildState, IkeInput, IkeState, ike_transition
from .wire import EncryptedFragment, ExchangeType, Message, Payload

__all__ = [
    "IkeSa",
    "Request",
    "IncomingRequest",
    "InitExchange",
    "MessageState",
    "MAX_PENDING_REQUESTS",
    "MAX_CHILD_SAS",
    "HALF_OPEN_TIMEOUT",
    "REKEYED_SA_LIFETIME",
    "INVALID_MID_REPORT_INTERVAL",
]

MAX_PENDING_REQUESTS = 32  # local requests (create/rekey/delete/DPD) queued per IKE SA
MAX_CHILD_SAS = 64  # Child SAs per IKE SA (more: NO_ADDITIONAL_SAS)
HALF_OPEN_TIMEOUT = 30.0  # seconds a responder keeps an IKE SA that never completed IKE_AUTH
REKEYED_SA_LIFETIME = 60.0  # seconds an IKE SA replaced by a rekey waits for the peer's Delete
INVALID_MID_REPORT_INTERVAL = 10.0  # seconds between INVALID_MESSAGE_ID reports per IKE SA
_IP_UDP_OVERHEAD = 28  # IPv4 + UDP headers, counted in fragment_size like strongSwan does


class Request:
    """One request of ours, built by an exchange module, which also handles its answer.

    `on_response` raises RemoteProtocolError/LocalProtocolError only for answers that end the IKE SA
    (IKE_SA_INIT, IKE_AUTH); optional exchanges contain their own failures. `abandon` gives back what
    the request reserved (SPIs) when it will never be answered."""

    __slots__ = ()
    exchange_type: ClassVar[ExchangeType]

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        raise NotImplementedError

    def answers(self, sa: IkeSa, payloads: list[Payload], addr: Address) -> bool:
        """False for an unprotected IKE_SA_INIT response that cannot be the answer to this request
        (anyone can send one): it is dropped and the request stays in flight."""
        return True

    def abandon(self, sa: IkeSa) -> None:
        """The IKE SA ends or gives up on this request before an answer came."""

    def destination(self, sa: IkeSa, attempt: int) -> Address | None:
        """Where transmission number `attempt` (0: the first) goes; None: the peer's address. MOBIKE
        probes other paths this way (RFC 4555 3.5, 3.7)."""
        return None

    def source(self, sa: IkeSa) -> str | None:
        """The local IP the transmissions leave from (after `destination`); None: the SA's."""
        return None

    def tries(self, sa: IkeSa) -> int:
        """Retransmissions before the request gives up."""
        return sa.config.retransmit.tries

    def on_timeout(self, sa: IkeSa, now: float) -> bool:
        """The retransmissions ran out (after `abandon`). True: the IKE SA lives on (a failed path
        check); False: the peer is dead and the IKE SA fails."""
        return False


@dataclass(eq=False, slots=True)
class _InFlight:
    request: Request
    message_id: int
    datagrams: list[bytes]  # one message, possibly in SKF fragments
    next_at: float
    attempts: int = 0  # retransmissions done so far


@dataclass(frozen=True, slots=True)
class MessageState:
    """An IKE SA's message layer as another process needs it to carry on (`ikev2lib.ha`): message
    IDs, the cached response to the peer's last request, our request in flight exactly as sent, and
    the IV counter of our SK cipher (None: random IVs)."""

    send_mid: int
    recv_mid: int
    cached_response: tuple[int, bytes, tuple[bytes, ...]] | None  # (mid, request digest, datagrams)
    in_flight: tuple[int, int, tuple[bytes, ...]] | None  # (mid, exchange type, datagrams)
    next_iv: int | None


class _HandedOver(Request):
    """A request the previous owner of the SA had in flight: retransmitted exactly as it was sent,
    so that the peer sees one request per message ID. Its answer is only acknowledged: the work that
    request carried (a rekey's key share) stayed with the process that is gone."""

    __slots__ = ("exchange",)
    exchange_type = ExchangeType.INFORMATIONAL  # replaced per instance

    def __init__(self, exchange: int) -> None:
        self.exchange = exchange

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        sa.ctx.count("handed_over_answers")


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A new, authenticated request from the peer, for `exchanges` to answer."""

    exchange_type: int
    message_id: int
    payloads: list[Payload]
    data: bytes  # the datagram as received: the response cache recognizes retransmissions by it
    addr: Address  # where it came from: the answer goes there (RFC 7296 2.11)
    natt: bool  # it came on the NAT-T port (with the non-ESP marker)
    local_ip: str | None = None  # the address of ours it was sent to, if the driver said; the answer leaves from it


@dataclass(eq=False, slots=True)
class InitExchange:
    """What IKE_AUTH needs from IKE_SA_INIT (RFC 7296 2.15): both nonces and the messages as sent.
    Dropped once the IKE SA is established."""

    ni: bytes = b""
    nr: bytes = b""
    request: bytes = b""
    response: bytes = b""


class IkeSa:
    """One IKE SA (either role). Built by `IkeEndpoint` or by an IKE SA rekey; users talk to the endpoint."""

    __slots__ = (
        "ctx", "ike_sa_id", "config", "is_initiator", "remote_addr", "spi_i", "spi_r", "state", "finished", "natt",
        "nat_detected", "nat_here", "nat_there", "next_keepalive", "created_at", "established_at", "last_heard",
        "remote_id_text", "hidden",
        "selected", "proposal_text", "keys", "_in", "_out", "children", "init", "rekey_at", "init_key",
        "scheduled_at", "peer_fragmentation", "peer_deleted", "response_data", "_send_mid", "_recv_mid",
        "_outstanding", "_queue", "_cached_response", "_reassembly", "_last_invalid_mid_report",
        "peer_signature_hashes", "peer_certreq", "peer_certificate", "resource_limited", "ike_port",
        "accepts_redirect", "peer_accepts_redirect", "redirection", "delete_at",
        "local_addr", "original_initiator", "peer_mobike", "peer_additional_addresses", "local_addresses",
        "mobike_target", "mobike_old_local", "mobike_update_mid", "request_source", "response_source",
    )  # fmt: skip

    def __init__(
        self,
        *,
        ctx: EngineContext[IkeSa],
        ike_sa_id: int,
        config: IkeConfig,
        is_initiator: bool,
        remote_addr: Address,
        spi_i: bytes,
        spi_r: bytes,
        now: float,
    ) -> None:
        self.ctx = ctx
        self.ike_sa_id = ike_sa_id
        self.config = config
        self.is_initiator = is_initiator  # original initiator of THIS IKE SA (the I flag)
        self.remote_addr = remote_addr
        self.spi_i = spi_i
        self.spi_r = spi_r
        self.state = IkeState.INITIAL
        self.finished = False  # in a terminal state (set by `apply` only)
        self.natt = False  # IKE runs on the NAT-T port with the non-ESP marker
        # a NAT between the peers (RFC 7296 2.23), or `config.encap` forcing one: the Child SAs' ESP is
        # UDP-encapsulated (RFC 3948); otherwise it is raw ESP (IP protocol 50)
        self.nat_detected = False
        self.nat_here = False  # NAT_DETECTION: our address was translated (we send keepalives)
        self.nat_there = False  # the peer's was (we follow its mapping, RFC 7296 2.23)
        self.next_keepalive: float | None = None  # RFC 3948 2.3, behind a NAT on the NAT-T port
        self.created_at = now
        self.established_at: float | None = None
        self.last_heard = now
        self.remote_id_text = ""
        self.hidden = False  # a rekey's new SA not yet in use, or one superseded: no user-visible events
        self.selected: SelectedProposal | None = None
        self.proposal_text = ""
        self.keys: IkeKeys | None = None
        self._in: SKCipher | None = None
        self._out: SKCipher | None = None
        self.children: dict[int, ChildSa] = {}
        self.resource_limited: set[str] = set()  # child configs the peer refused more per-resource SAs for
        self.init: InitExchange | None = None  # until IKE_AUTH is done
        self.rekey_at: float | None = None
        self.init_key: tuple[bytes, Address] | None = None  # responder: (SPIi, address) of IKE_SA_INIT
        self.scheduled_at: float | None = None  # the deadline the endpoint's timer heap holds for us
        self.peer_fragmentation = False  # both sides announced IKEV2_FRAGMENTATION_SUPPORTED
        self.peer_deleted = False  # the peer's Delete of this IKE SA: close once it is answered
        self.response_data = b""  # raw bytes of the response being handled (IKE_SA_INIT: signed by AUTH)
        self._send_mid = 0
        self._recv_mid = 0
        self._outstanding: _InFlight | None = None
        self._queue: list[Operation] = []  # at most MAX_PENDING_REQUESTS: a list is smaller than a deque
        self._cached_response: tuple[int, bytes, list[bytes]] | None = None  # (mid, request digest, datagrams)
        self._reassembly: Reassembly | None = None  # created at the first SKF fragment
        self._last_invalid_mid_report: float | None = None
        # RFC 7427: the hash IDs of the peer's SIGNATURE_HASH_ALGORITHMS (empty: it sent none)
        self.peer_signature_hashes: tuple[int, ...] = ()
        # the CA key hashes of the peer's CERTREQ payloads; None: it sent no CERTREQ
        self.peer_certreq: tuple[bytes, ...] | None = None
        self.peer_certificate: x509.Certificate | None = None  # validated, when the peer used one
        self.ike_port = remote_addr[1]  # the peer's IKE port before any float to NAT-T (redirects go there)
        # RFC 5685: we announced that we follow redirects (client); the peer did (gateway)
        self.accepts_redirect = False
        self.peer_accepts_redirect = False
        self.redirection: Redirection | None = None  # how a gateway sent us here, if one did
        self.delete_at: float | None = None  # the SA deletes itself then (a redirected client that stays)
        # ---- MOBIKE (RFC 4555, exchanges/mobike.py) ----
        self.local_addr: Address = ctx.local_addr  # this SA's own address (IKE port); MOBIKE moves it
        self.original_initiator = is_initiator  # kept across IKE SA rekeys (the I flag may change)
        self.peer_mobike = False  # both sides sent MOBIKE_SUPPORTED in IKE_AUTH
        self.peer_additional_addresses: tuple[str, ...] = ()  # the peer's ADDITIONAL_*_ADDRESS list
        self.local_addresses: tuple[str, ...] = ctx.local_addresses  # our usable addresses (empty: never told)
        # responder: (the peer's new address, our IP its update came to) being checked
        self.mobike_target: tuple[Address, str] | None = None
        self.mobike_old_local: Address | None = None  # initiator: our address before a move not yet answered
        self.mobike_update_mid: int | None = None  # the message ID of the last UPDATE_SA_ADDRESSES answered
        # (address, natt, our IP it was sent to or None) of the request being answered
        self.request_source: tuple[Address, bool, str | None] | None = None
        self.response_source: Address | None = None  # where the response being handled came from

    # ---- identity and state ------------------------------------------------------------------------

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.is_initiator else self.spi_r

    def __repr__(self) -> str:
        return (
            f"IkeSa(id={self.ike_sa_id}, {self.state.value}, spi_i={self.spi_i.hex()}, "
            f"spi_r={self.spi_r.hex()}, children={len(self.children)})"
        )

    def apply(self, event: IkeInput) -> None:
        """The only place the IKE SA's state changes (through the table in state.py)."""
        self.state = state = ike_transition(self.state, event)
        self.finished = state is IkeState.DELETED or state is IkeState.FAILED  # read on every call

    def check(self, event: IkeInput) -> None:
        """Validate a (state, input) pair before doing the work; `apply` it once the work succeeded."""
        ike_transition(self.state, event)

    def install_keys(self, selected: SelectedProposal, keys: IkeKeys, proposal_text: str) -> None:
        self.selected = selected
        self.keys = keys
        self.proposal_text = proposal_text
        enc_i = sk_cipher(selected.encr_id, selected.encr_key_bits, selected.integ_id, keys.sk_ei, keys.sk_ai)
        enc_r = sk_cipher(selected.encr_id, selected.encr_key_bits, selected.integ_id, keys.sk_er, keys.sk_ar)
        self._out, self._in = (enc_i, enc_r) if self.is_initiator else (enc_r, enc_i)

    def find_child_config(self, name: str) -> ChildConfig | None:
        for cfg in self.config.children:
            if cfg.name == name:
                return cfg
        return None

    # ---- sending -----------------------------------------------------------------------------------

    @property
    def source_ip(self) -> str | None:
        """The source IP of what this SA sends; None for an unspecified address (the driver chooses)."""
        ip = self.local_addr[0]
        return None if ip in ("0.0.0.0", "::") else ip

    def transmit(
        self, datagrams: list[bytes], dest: Address | None = None, natt: bool | None = None, source: str | None = None
    ) -> None:
        addr = self.remote_addr if dest is None else dest
        marker = self.natt if natt is None else natt
        source = self.source_ip if source is None else source
        for datagram in datagrams:
            self.ctx.send(datagram, addr, natt=marker, source=source)

    def _max_message(self) -> int:
        # strongSwan's fragment_size counts the IP and UDP headers (and the non-ESP marker)
        return self.config.fragment_size - _IP_UDP_OVERHEAD - (len(NON_ESP_MARKER) if self.natt else 0)

    def _build(self, exchange_type: int, message_id: int, is_response: bool, payloads: list[Payload]) -> list[bytes]:
        spi_i, spi_r, is_initiator = self.spi_i, self.spi_r, self.is_initiator
        if exchange_type == ExchangeType.IKE_SA_INIT:
            message = Message(
                spi_i=spi_i, spi_r=spi_r, exchange_type=exchange_type, message_id=message_id, payloads=payloads,
                is_initiator=is_initiator, is_response=is_response,
            )  # fmt: skip
            return [message.serialize()]
        if self._out is None:
            raise LocalProtocolError("no keys yet")
        if self.peer_fragmentation:
            return protect_fragments(
                self._out, spi_i=spi_i, spi_r=spi_r, exchange_type=exchange_type, message_id=message_id,
                is_initiator=is_initiator, is_response=is_response, payloads=payloads,
                max_message=self._max_message(),
            )  # fmt: skip
        return [
            protect(
                self._out, spi_i=spi_i, spi_r=spi_r, exchange_type=exchange_type, message_id=message_id,
                is_initiator=is_initiator, is_response=is_response, payloads=payloads,
            )
        ]  # fmt: skip

    @property
    def window_free(self) -> bool:
        return self._outstanding is None

    @property
    def pending_request(self) -> Request | None:
        """Our request in flight, if any (exchanges look at it to detect collisions)."""
        return None if self._outstanding is None else self._outstanding.request

    def send_request(self, request: Request, payloads: list[Payload], now: float) -> bytes:
        """Send `request` (the window must be free); returns its first datagram."""
        if self._outstanding is not None:
            raise LocalProtocolError("a request is already outstanding")
        mid = self._send_mid
        self._send_mid += 1
        datagrams = self._build(request.exchange_type, mid, False, payloads)
        self._outstanding = _InFlight(request, mid, datagrams, now + self.config.retransmit.delay(0))
        self.transmit(datagrams, request.destination(self, 0), source=request.source(self))
        return datagrams[0]

    def send_final_notice(self, payloads: list[Payload]) -> None:
        """One INFORMATIONAL request sent once and never retransmitted, by an SA about to fail: how an
        initiator tells the responder it failed to authenticate it (RFC 7296 2.21.2)."""
        mid = self._send_mid
        self._send_mid += 1
        self.transmit(self._build(ExchangeType.INFORMATIONAL, mid, False, payloads))

    def restart_sa_init(self, request: Request, payloads: list[Payload], now: float) -> bytes:
        """A new IKE_SA_INIT request with message ID 0 (after COOKIE or INVALID_KE_PAYLOAD)."""
        self._send_mid = 0
        self._outstanding = None
        return self.send_request(request, payloads, now)

    def send_response(
        self, exchange_type: int, message_id: int, payloads: list[Payload], request: bytes,
        to: tuple[Address, bool] | None = None, source: str | None = None,
    ) -> None:
        """Answer a request; `to` is (address, natt) of the request: the answer goes where the request
        came from (RFC 7296 2.11; a MOBIKE peer may ask from a new address). None: the peer's address."""
        datagrams = self._build(exchange_type, message_id, True, payloads)
        self._cached_response = (message_id, hashlib.sha256(request).digest(), datagrams)
        if to is None:
            self.transmit(datagrams, source=source)
        else:
            self.transmit(datagrams, to[0], to[1], source)

    @property
    def answering_message_id(self) -> int:
        """The message ID of the peer's request being answered (the last one accepted)."""
        return self._recv_mid - 1

    def expect_request(self, message_id: int) -> None:
        self._recv_mid = message_id

    def response_bytes(self) -> bytes | None:
        return None if self._cached_response is None else self._cached_response[2][0]

    # ---- hand-over to another process (ikev2lib.ha) --------------------------------------------------

    def message_state(self) -> MessageState:
        flight, cached = self._outstanding, self._cached_response
        return MessageState(
            send_mid=self._send_mid, recv_mid=self._recv_mid,
            cached_response=None if cached is None else (cached[0], cached[1], tuple(cached[2])),
            in_flight=None if flight is None else (flight.message_id, int(flight.request.exchange_type),
                                                   tuple(flight.datagrams)),
            next_iv=None if self._out is None else self._out.next_iv,
        )  # fmt: skip

    def resume_message_state(self, state: MessageState, *, iv_margin: int, now: float) -> None:
        """Carry on where another process left off (the keys are installed). Our SK cipher's IV
        counter jumps `iv_margin` past what the other process had replicated: messages it sent after
        that must never share an IV with ours."""
        if self._out is None:
            raise LocalProtocolError("install the keys before the message state")
        self._send_mid, self._recv_mid = state.send_mid, state.recv_mid
        if state.cached_response is not None:
            mid, digest, datagrams = state.cached_response
            self._cached_response = (mid, digest, list(datagrams))
        if state.next_iv is not None:
            self._out.skip_ivs(state.next_iv + iv_margin)
        if state.in_flight is not None:
            mid, exchange, datagrams = state.in_flight
            request = _HandedOver(exchange)
            self._outstanding = _InFlight(request, mid, list(datagrams), now)  # resent at once
            self._send_mid = max(self._send_mid, mid + 1)

    # ---- receiving ---------------------------------------------------------------------------------

    def receive(self, data: bytes, message: Message, addr: Address, natt: bool, now: float) -> IncomingRequest | None:
        """Handle one parsed message addressed to this IKE SA: answers go to their request's handler,
        a new request comes back for `exchanges` to answer. Raises only RemoteProtocolError (the
        endpoint drops the datagram then)."""
        if message.is_initiator == self.is_initiator:
            raise RemoteProtocolError("message has our own role flag")
        if message.is_response:
            self._receive_response(data, message, addr, natt, now)
            return None
        return self._receive_request(data, message, addr, natt, now)

    def _learn_path(self, addr: Address, natt: bool) -> None:
        """After a complete message authenticated: follow the peer to the NAT-T port, then its NAT."""
        if not natt:
            return
        if not self.natt:  # the switch to port 4500 during IKE_AUTH (RFC 7296 2.23)
            self.natt = True
            # with MOBIKE only UPDATE_SA_ADDRESSES moves the SA to another IP (RFC 4555 3.5)
            same_ip = not self.peer_mobike or addr[0] == self.remote_addr[0]
            self.remote_addr = addr if same_ip else (self.remote_addr[0], addr[1])
            return
        self.follow_peer(addr)

    def follow_peer(self, addr: Address) -> bool:
        """RFC 7296 2.23: a host not behind a NAT sends to where the last authenticated packet of a peer
        behind one came from, so a NAT that lost its mapping (a reboot, a conntrack flush, an idle
        timeout) and made a new one does not cut the SA off. Elsewhere, or without NAT-T, an
        address change is ignored (MOBIKE moves those). With MOBIKE only the port is followed (a NAT's
        new mapping on the same public IP): a new IP waits for the peer's UPDATE_SA_ADDRESSES and our
        return routability check (RFC 4555 3.5). True if the peer's address changed."""
        if addr == self.remote_addr or not self.natt or self.nat_here or not self.nat_there:
            return False
        if self.peer_mobike and addr[0] != self.remote_addr[0]:
            self.ctx.count("mobike_address_change_ignored")
            return False
        old, self.remote_addr = self.remote_addr, addr
        self.ctx.count("peer_address_changes")
        if not self.hidden:
            self.ctx.emit(PeerAddressChanged(ike_sa_id=self.ike_sa_id, old_addr=old, remote_addr=addr))
        return True

    def keepalive_deadline(self) -> float | None:
        return self.next_keepalive if self.natt and self.nat_here and not self.hidden else None

    def send_keepalive_if_due(self, now: float) -> None:
        """RFC 3948 2.3: behind a NAT, a keepalive every `natt_keepalive` seconds keeps the mapping."""
        interval = self.config.natt_keepalive
        if interval is None or not (self.natt and self.nat_here) or self.hidden:
            self.next_keepalive = None
            return
        if self.next_keepalive is None:
            self.next_keepalive = now + interval
        elif now >= self.next_keepalive:
            self.ctx.send_keepalive(self.remote_addr, self.source_ip)
            self.next_keepalive = now + interval

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
        if self._reassembly is None:
            self._reassembly = Reassembly()
        return self._reassembly.add(self._in, data, message, is_response)

    def _receive_request(self, data: bytes, message: Message, addr: Address, natt: bool, now: float) -> IncomingRequest | None:
        mid = message.message_id
        cached = self._cached_response
        if cached is not None and mid == cached[0]:
            # A retransmitted request: answer from the cache, never process it twice (RFC 7296 2.1).
            last = message.payloads[-1] if message.payloads else None
            if isinstance(last, EncryptedFragment):
                if last.fragment_number == 1:  # RFC 7383 2.6.1: answer the first fragment only
                    self.ctx.count("retransmitted_requests")
                    self.transmit(cached[2], addr, natt, self.ctx.arrived_at)
                return None
            if hashlib.sha256(data).digest() == cached[1]:
                self.ctx.count("retransmitted_requests")
                self.transmit(cached[2], addr, natt, self.ctx.arrived_at)  # back the way it came (RFC 7296 2.11)
                return None
            raise RemoteProtocolError("different request with an already answered message ID")
        if mid != self._recv_mid:
            if mid > self._recv_mid and self._in is not None and self.state == IkeState.ESTABLISHED:
                self._report_invalid_message_id(data, message, now)
            raise RemoteProtocolError(f"message ID {mid} outside the window (expected {self._recv_mid})")
        payloads = self._open(data, message, False)
        self.last_heard = now
        if payloads is None:
            return None
        # only a complete, new, authenticated message may move the peer's address (RFC 7296 2.23): a
        # replayed fragment of a message still being reassembled must not
        self._learn_path(addr, natt)
        self._recv_mid += 1
        return IncomingRequest(int(message.exchange_type), mid, payloads, data, addr, natt, self.ctx.arrived_at)

    def _report_invalid_message_id(self, data: bytes, message: Message, now: float) -> None:
        """RFC 7296 3.10.1: never answer the request, but tell the peer in an INFORMATIONAL of
        our own, rate limited, and only for a request that authenticates."""
        last = self._last_invalid_mid_report
        if last is not None and now - last < INVALID_MID_REPORT_INTERVAL:
            return
        if self._in is None or isinstance(message.payloads[-1] if message.payloads else None, EncryptedFragment):
            return
        unprotect(self._in, data, message)  # raises (and so drops) unless authentic
        self._last_invalid_mid_report = now
        if len(self._queue) < MAX_PENDING_REQUESTS:
            self._queue.append(ReportInvalidMessageId(message.message_id))
        self.ctx.count("invalid_message_id_reports")

    def _receive_response(self, data: bytes, message: Message, addr: Address, natt: bool, now: float) -> None:
        flight = self._outstanding
        if flight is None or message.message_id != flight.message_id:
            raise RemoteProtocolError("unexpected response (no matching request)")
        expected = flight.request.exchange if isinstance(flight.request, _HandedOver) else flight.request.exchange_type
        if int(message.exchange_type) != expected:
            raise RemoteProtocolError("response exchange type does not match the request")
        payloads: list[Payload] | None
        if flight.request.exchange_type == ExchangeType.IKE_SA_INIT:
            payloads = list(message.payloads)
            if not flight.request.answers(self, payloads, addr):
                raise RemoteProtocolError("IKE_SA_INIT response that does not answer our request")
            if message.spi_r != bytes(8):
                self.spi_r = bytes(message.spi_r)
        else:
            payloads = self._open(data, message, True)
            if payloads is not None:
                self._learn_path(addr, natt)  # a complete message only, as for requests
        self.last_heard = now
        if payloads is None:
            return
        self.response_data = data
        self.response_source = addr
        self._outstanding = None
        try:
            flight.request.on_response(self, payloads, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            # an authenticated but unusable answer to IKE_SA_INIT/IKE_AUTH ends the SA
            notify = exc.notify if isinstance(exc, RemoteProtocolError) else None
            self.ctx.emit(
                ProtocolErrorEvent(
                    ike_sa_id=self.ike_sa_id, remote_addr=self.remote_addr, description=str(exc),
                    notify=notify, received=isinstance(exc, PeerNotifyError),
                )
            )  # fmt: skip
            self.fail(now, reason=str(exc))
        finally:
            self.response_data = b""
            self.response_source = None

    # ---- queued local requests ---------------------------------------------------------------------

    def enqueue(self, operation: Operation) -> None:
        if self.finished or self.state in (IkeState.DELETING, IkeState.REKEYED):
            raise LocalProtocolError(f"IKE SA {self.ike_sa_id} is {self.state.value}")
        if len(self._queue) >= MAX_PENDING_REQUESTS:
            raise LocalProtocolError("too many queued requests on this IKE SA")
        self._queue.append(operation)

    def enqueue_front(self, operation: Operation) -> None:
        # follow-up work of a finished exchange (delete the replaced SA) goes before user requests
        self._queue.insert(0, operation)

    def has_queued(self, kind: type) -> bool:
        return any(isinstance(operation, kind) for operation in self._queue)

    def next_operation(self) -> Operation | None:
        return self._queue.pop(0) if self._queue else None

    def take_queue(self, old: IkeSa) -> None:
        # requests queued on an IKE SA that was just rekeyed move to its successor
        self._queue.extend(old._queue)
        old._queue.clear()

    # ---- timers of the message layer ---------------------------------------------------------------

    def message_deadline(self) -> float | None:
        """The next retransmission or state timeout (exchanges add their timed work)."""
        deadline: float | None = None
        if self._outstanding is not None:
            deadline = self._outstanding.next_at
        if self.state == IkeState.SA_INIT_RECEIVED:
            deadline = _earliest(deadline, self.created_at + HALF_OPEN_TIMEOUT)
        elif self.state == IkeState.REKEYED:
            deadline = _earliest(deadline, self.last_heard + REKEYED_SA_LIFETIME)
        return deadline

    def handle_message_timer(self, now: float) -> bool:
        """Retransmit or time out. False if the IKE SA ended."""
        flight = self._outstanding
        if flight is not None and now >= flight.next_at:
            if flight.attempts >= flight.request.tries(self):
                self._outstanding = None
                flight.request.abandon(self)
                if flight.request.on_timeout(self, now):
                    return True
                if self.state in (IkeState.DELETING, IkeState.REKEYED):
                    self.close(now, reason="delete not answered", by_peer=False, terminal=IkeInput.TIMEOUT)
                else:
                    self.ctx.emit(PeerDead(ike_sa_id=self.ike_sa_id, remote_addr=self.remote_addr))
                    self.fail(now, reason="peer dead (retransmissions exhausted)")
                return False
            flight.attempts += 1
            flight.next_at = now + self.config.retransmit.delay(flight.attempts)
            self.ctx.count("retransmissions")
            request = flight.request
            self.transmit(flight.datagrams, request.destination(self, flight.attempts), source=request.source(self))
        if self.state == IkeState.SA_INIT_RECEIVED and now >= self.created_at + HALF_OPEN_TIMEOUT:
            self.ctx.count("half_open_expired")
            self.apply(IkeInput.TIMEOUT)  # silently: it never became visible to the user
            return False
        if self.state == IkeState.REKEYED and now >= self.last_heard + REKEYED_SA_LIFETIME:
            self.close(now, reason="replaced", by_peer=False, terminal=IkeInput.TIMEOUT)
            return False
        return True

    # ---- endings -----------------------------------------------------------------------------------

    def fail(self, now: float, *, reason: str) -> None:
        """End the SA after a timeout or fatal error, emitting the deletion events."""
        if self.finished:
            return
        was_visible = self.established_at is not None or self.is_initiator
        self.close(now, reason=reason, by_peer=False, terminal=IkeInput.FATAL_ERROR, visible=was_visible)

    def close(self, now: float, *, reason: str, by_peer: bool, terminal: IkeInput, visible: bool = True) -> None:
        """Move to a terminal state and tell the user about every SA that went away."""
        if self.finished:
            return
        self.apply(terminal)
        flight, self._outstanding = self._outstanding, None
        if flight is not None:
            flight.request.abandon(self)
        self._queue.clear()
        self.init = None
        for child in list(self.children.values()):
            self.drop_child(child, by_peer=by_peer, event=ChildInput.IKE_SA_GONE)
        if visible and not self.hidden:
            self.ctx.emit(
                IkeSaDeleted(
                    ike_sa_id=self.ike_sa_id, spi_i=self.spi_i, spi_r=self.spi_r, reason=reason, by_peer=by_peer
                )
            )

    def drop_child(self, child: ChildSa, *, by_peer: bool, event: ChildInput) -> None:
        if child.state != ChildState.DELETED:
            child.apply(event)
        self.children.pop(child.child_id, None)
        self.ctx.release_esp_spi(child.spi_in)
        self.ctx.emit(
            ChildSaDeleted(
                ike_sa_id=self.ike_sa_id, child_id=child.child_id, spi_in=child.spi_in, spi_out=child.spi_out,
                by_peer=by_peer,
            )
        )  # fmt: skip


def _earliest(a: float | None, b: float) -> float:
    return b if a is None or b < a else a
