"""The four IKEv2 exchanges for one IKE SA (RFC 7296 1.2-1.4): what to send, what to accept.

`Exchanges` is the protocol half of an `IkeConnection` (which owns the message layer). Request
handlers return the response payloads or raise `RemoteProtocolError` (answered with its Notify);
response handlers raise for answers that end the SA, and contain errors of optional exchanges
themselves (a failed CREATE_CHILD_SA becomes an event, not a dead IKE SA).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .child_sa import NO_LIMITS, ChildSa, build_esp_pair, derive_child_keys, esp_algorithm_name
from .config import ChildConfig
from .crypto import (
    KeyExchange,
    derive_ike_keys,
    derive_rekeyed_ike_keys,
    psk_auth_data,
    signed_octets,
    verify_psk_auth,
)
from .events import (
    ChildSaCreated,
    ChildSaExpired,
    ChildSaRekeyed,
    IkeSaEstablished,
    IkeSaRekeyed,
    ProtocolErrorEvent,
)
from .exceptions import LocalProtocolError, RemoteProtocolError
from .lifetimes import (
    LIFETIME_CHECK_INTERVAL,
    MAX_SOFT_REKEYS,
    Action,
    assess,
    hard_deadline,
    inbound_rose,
    volume_limits,
)
from .negotiation import (
    SelectedProposal,
    ke_groups,
    narrow_traffic_selectors,
    select_proposal,
    transforms_cacheable,
    ts_from_config,
    ts_to_text,
    ts_within,
    validate_chosen_proposal,
)
from .proposals import parse_proposals, proposal_to_keywords
from .state import ChildInput, ChildState, IkeInput, IkeState, ike_transition
from .wire import (
    KE,
    SA,
    AuthMethod,
    Auth,
    Delete,
    ExchangeType,
    IDi,
    IDr,
    Message,
    Nonce,
    Notify,
    NotifyType,
    Payload,
    Proposal,
    ProtocolId,
    TrafficSelector,
    Transform,
    TransformType,
    TSi,
    TSr,
)

from .connection import MAX_CHILD_SAS, NotifyError, PeerNotifyError, natd_hash

if TYPE_CHECKING:
    from .connection import IkeConnection

__all__ = ["Exchanges", "Operation"]

NONCE_SIZE = 32  # our nonces: at least half the PRF key size (RFC 7296 2.10), 256 bits covers SHA-512
MAX_SA_INIT_RETRIES = 3  # COOKIE / INVALID_KE_PAYLOAD round trips an initiator follows
MAX_CHILD_KE_RETRIES = 2  # INVALID_KE_PAYLOAD answers to one CREATE_CHILD_SA (Child or IKE rekey) we follow
MAX_COOKIE_SIZE = 64  # RFC 7296 2.6: a cookie is 1..64 octets
SIGNATURE_HASHES = (2, 3, 4)  # RFC 7427 SHA2-256/384/512, advertised as strongSwan does
_SIGNATURE_HASHES_DATA = Notify.signature_hash_algorithms(list(SIGNATURE_HASHES)).data  # built once
_ZERO_SPI = bytes(8)
_NATD_SOURCE = int(NotifyType.NAT_DETECTION_SOURCE_IP)
_NATD_DESTINATION = int(NotifyType.NAT_DETECTION_DESTINATION_IP)
_P = TypeVar("_P", bound=Payload)

# A queued local request: (kind, argument). Plain data, so a rekeyed IKE SA can take them over.
Operation = tuple[str, object]


def _find(payloads: list[Payload], kind: type[_P]) -> _P | None:
    for payload in payloads:
        if isinstance(payload, kind):
            return payload
    return None


def _need(payloads: list[Payload], kind: type[_P], what: str) -> _P:
    for payload in payloads:
        if isinstance(payload, kind):
            return payload
    raise RemoteProtocolError(f"missing {what} payload", notify=NotifyType.INVALID_SYNTAX)


def _notify(payloads: list[Payload], notify_type: int) -> Notify | None:
    for payload in payloads:
        if isinstance(payload, Notify) and payload.notify_type == notify_type:
            return payload
    return None


def _errors(payloads: list[Payload]) -> list[Notify]:
    return [p for p in payloads if isinstance(p, Notify) and p.is_error]


def _selectors(payload: TSi | TSr) -> list[TrafficSelector]:
    return [s for s in payload.selectors if isinstance(s, TrafficSelector)]


def _id_body(payload: IDi | IDr) -> bytes:
    # "RestOfInitIDPayload" (RFC 7296 2.15): ID type, three reserved octets, identification data
    return bytes((int(payload.id_type), 0, 0, 0)) + bytes(payload.data)


@functools.lru_cache(maxsize=1024)
def _id_wire(text: str) -> tuple[int, bytes]:
    """(ID type, data) of a configured identity string (parsed once)."""
    payload = IDi.from_value(text)
    return int(payload.id_type), bytes(payload.data)


def _id_matches(payload: IDi | IDr, expected: str) -> bool:
    return (int(payload.id_type), bytes(payload.data)) == _id_wire(expected)


def _own_id(kind: type[IDi] | type[IDr], text: str) -> IDi | IDr:
    id_type, data = _id_wire(text)
    return kind(id_type, data)


def _strip_ke(proposals: list[Proposal]) -> list[Proposal]:
    # IKE_AUTH creates the first Child SA with the IKE SA's keys: no KE transforms (RFC 7296 1.2)
    for proposal in proposals:
        proposal.transforms = [t for t in proposal.transforms if int(t.transform_type) != TransformType.KE]
    return proposals


_KEYWORD_ORDER = {1: 0, 3: 1, 2: 2, 4: 3, 5: 4}  # strongSwan prints encr-integ-prf-ke-esn


def _proposals(text: str, protocol: int, spi: bytes = b"") -> list[Proposal]:
    """parse_proposals, parsed once per configuration string; fresh Proposal objects each call
    (callers set SPIs and strip transforms), sharing the immutable-by-convention Transforms."""
    return [
        Proposal(number=p.number, protocol_id=p.protocol_id, spi=spi, transforms=list(p.transforms))
        for p in _parsed_proposals(text, protocol)
    ]


@functools.lru_cache(maxsize=256)
def _parsed_proposals(text: str, protocol: int) -> tuple[Proposal, ...]:
    # shared between calls: only for read-only use (negotiation); see _proposals for copies
    return tuple(parse_proposals(text, ProtocolId(protocol)))


@functools.lru_cache(maxsize=256)
def _acceptable_esp(text: str, for_auth: bool) -> tuple[Proposal, ...]:
    """Our ESP proposals as a responder compares them (IKE_AUTH: without KE); shared, read-only."""
    ours = _proposals(text, ProtocolId.ESP)
    return tuple(_strip_ke(ours) if for_auth else ours)


def _describe(selected: SelectedProposal) -> str:
    # Transforms are hashable NamedTuples (an enum member hashes and compares as its int value)
    describe = _describe_cached if transforms_cacheable(selected.transforms) else _describe_cached.__wrapped__
    return describe(selected.number, selected.protocol_id, selected.transforms)


@functools.lru_cache(maxsize=256)
def _describe_cached(number: int, protocol: int, selected: tuple[Transform, ...]) -> str:
    key = [(int(t.transform_type), int(t.transform_id), t.key_length) for t in selected]
    transforms = sorted(key, key=lambda t: _KEYWORD_ORDER.get(t[0], 9))
    proposal = Proposal(
        number=number,
        protocol_id=protocol,
        transforms=[Transform(transform_type=t, transform_id=i, key_length=k) for t, i, k in transforms],
    )
    try:
        return proposal_to_keywords(proposal)
    except (LocalProtocolError, KeyError, ValueError):
        return "/".join(f"{t}:{i}" for t, i, _ in transforms)


def _random_ike_spi() -> bytes:
    while True:
        spi = os.urandom(8)
        # never zero, and never starting with the non-ESP marker (see IkeEndpoint.receive_datagram)
        if spi[:4] != bytes(4):
            return spi


@dataclass(eq=False)
class _ChildOffer:
    cfg: ChildConfig
    spi_in: bytes
    proposals: list[Proposal]
    tsi: list[TrafficSelector]
    tsr: list[TrafficSelector]
    payloads: list[Payload]
    nonce: bytes = b""
    ke: KeyExchange | None = None
    released: bool = False


@dataclass(eq=False)
class _IkeRekeyOffer:
    spi: bytes
    proposals: list[Proposal]
    nonce: bytes
    ke: KeyExchange
    payloads: list[Payload] = field(default_factory=list)


class Exchanges:
    __slots__ = (
        "conn",
        "ctx",
        "cfg",
        "ni",
        "nr",
        "ke",
        "ike_offer",
        "cookie",
        "sa_init_retries",
        "init_request",
        "init_response",
        "auth_offer",
        "_close_after_response",
        "_ike_rekey_nonce",
        "peer_identity",
    )

    def __init__(self, conn: IkeConnection) -> None:
        self.conn = conn
        self.ctx = conn.ctx
        self.cfg = conn.config
        self.ni = b""
        self.nr = b""
        self.ke: KeyExchange | None = None
        self.ike_offer: list[Proposal] = []
        self.cookie: bytes | None = None
        self.sa_init_retries = 0
        self.init_request = b""
        self.init_response = b""
        self.auth_offer: _ChildOffer | None = None
        self._close_after_response = False
        self._ike_rekey_nonce: bytes | None = None  # our Ni while our IKE SA rekey is in flight
        self.peer_identity: IDi | None = None  # responder: the authenticated IDi

    # ---- helpers -----------------------------------------------------------------------------------

    def _error_event(self, description: str, notify: int | None, received: bool) -> None:
        self.ctx.emit(
            ProtocolErrorEvent(
                ike_sa_id=self.conn.ike_sa_id,
                remote_addr=self.conn.remote_addr,
                description=description,
                notify=notify,
                received=received,
            )
        )

    def _natd(self, spi_r: bytes) -> list[Payload]:
        conn = self.conn
        if conn.is_initiator and self.cfg.encap:
            source = os.urandom(20)  # pretend to be behind a NAT: forces UDP encapsulation (strongSwan encap=yes)
        else:
            source = natd_hash(conn.spi_i, spi_r, self.ctx.local_addr)
        return [
            Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=source),
            Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, data=natd_hash(conn.spi_i, spi_r, conn.remote_addr)),
        ]

    def _nat_seen(self, payloads: list[Payload], spi_r: bytes) -> bool | None:
        """True if the peer's NAT_DETECTION notifies show a NAT, None if it sent none (no NAT-T)."""
        conn = self.conn
        sources: list[bytes] = []
        dests: list[bytes] = []
        for p in payloads:  # one pass; the hashes are public values, plain comparison is fine
            if isinstance(p, Notify):
                if p.notify_type == _NATD_SOURCE:
                    sources.append(bytes(p.data))
                elif p.notify_type == _NATD_DESTINATION:
                    dests.append(bytes(p.data))
        if not sources or not dests:
            return None
        peer_natted = natd_hash(conn.spi_i, spi_r, conn.remote_addr) not in sources
        me_natted = natd_hash(conn.spi_i, spi_r, self.ctx.local_addr) not in dests
        return peer_natted or me_natted

    def _capabilities(self, *, fragmentation: bool = True) -> list[Payload]:
        payloads: list[Payload] = []
        if fragmentation:  # a responder announces it only if the initiator did (RFC 7383 2.3)
            payloads.append(Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
        payloads.append(Notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=_SIGNATURE_HASHES_DATA))
        return payloads

    def _auth_data(self, id_payload: IDi | IDr) -> bytes:
        conn = self.conn
        if conn.keys is None or conn.selected is None or conn.selected.prf_id is None:
            raise LocalProtocolError("no keys")
        prf = conn.selected.prf_id
        if conn.is_initiator:
            octets = signed_octets(prf, conn.keys.sk_pi, self.init_request, self.nr, _id_body(id_payload))
        else:
            octets = signed_octets(prf, conn.keys.sk_pr, self.init_response, self.ni, _id_body(id_payload))
        psk = self._psk_for(self.cfg.remote_id if conn.is_initiator else self.peer_identity)
        if psk is None:
            raise LocalProtocolError("no pre-shared key for this peer")
        return psk_auth_data(prf, psk, octets)

    def _verify_auth(self, id_payload: IDi | IDr, auth: Auth) -> bool:
        conn = self.conn
        if conn.keys is None or conn.selected is None or conn.selected.prf_id is None:
            return False
        if int(auth.method) != AuthMethod.SHARED_KEY_MIC:
            return False
        prf = conn.selected.prf_id
        if conn.is_initiator:  # the responder signed its IKE_SA_INIT response and our nonce
            octets = signed_octets(prf, conn.keys.sk_pr, self.init_response, self.ni, _id_body(id_payload))
        else:
            octets = signed_octets(prf, conn.keys.sk_pi, self.init_request, self.nr, _id_body(id_payload))
        psk = self._psk_for(id_payload)
        if psk is None:
            return False
        return verify_psk_auth(prf, psk, octets, bytes(auth.data))

    def _psk_for(self, peer: IDi | IDr | str | None) -> bytes | None:
        """The PSK shared with `peer`: its peer_psks entry, else the general `psk` (None: no key)."""
        if peer is not None:
            payload = _own_id(IDi, peer) if isinstance(peer, str) else peer
            for identity, key in self.cfg.peer_psks:
                if _id_matches(payload, identity):
                    return key
        return self.cfg.psk or None

    def _check(self, event: IkeInput) -> None:
        # validate the (state, input) pair before doing any work; apply it once the work succeeded
        ike_transition(self.conn.state, event)

    def _mark_established(self, now: float) -> None:
        conn = self.conn
        conn.established_at = now
        # AUTH is done: the IKE_SA_INIT messages and our key pair are no longer needed
        self.init_request = self.init_response = b""
        self.ke = None
        self.ike_offer = []
        conn.last_received = None
        if self.cfg.rekey_time is not None:
            conn.rekey_at = now + self.cfg.rekey_time
        self.ctx.emit(
            IkeSaEstablished(
                ike_sa_id=conn.ike_sa_id,
                spi_i=conn.spi_i,
                spi_r=conn.spi_r,
                is_initiator=conn.is_initiator,
                remote_addr=conn.remote_addr,
                local_id=self.cfg.local_id,
                remote_id=conn.remote_id_text,
                proposal=conn.proposal_text,
                udp_encap=conn.natt or conn.nat_detected,
            )
        )

    # ---- IKE_SA_INIT, initiator ------------------------------------------------------------------

    def start_initiator(self, now: float) -> None:
        self.ike_offer = _proposals(self.cfg.ike_proposals, ProtocolId.IKE)
        groups = ke_groups(self.ike_offer)
        if not groups:
            raise LocalProtocolError("the IKE proposals need a key exchange group")
        if not self.cfg.children:
            raise LocalProtocolError("an initiator needs at least one child config")
        self.ke = KeyExchange.generate(groups[0])
        self.ni = os.urandom(NONCE_SIZE)
        self.conn.apply(IkeInput.SEND_SA_INIT)
        self._send_sa_init(now, first=True)

    def _sa_init_payloads(self) -> list[Payload]:
        if self.ke is None:
            raise LocalProtocolError("no key exchange")
        payloads: list[Payload] = []
        if self.cookie is not None:
            payloads.append(Notify(NotifyType.COOKIE, data=self.cookie))  # must come first (RFC 7296 2.6)
        payloads += [
            SA(self.ike_offer),
            KE(self.ke.group, self.ke.public_bytes()),
            Nonce(self.ni),
            *self._natd(_ZERO_SPI),
            *self._capabilities(),
        ]
        return payloads

    def _send_sa_init(self, now: float, *, first: bool) -> None:
        payloads = self._sa_init_payloads()
        if first:
            self.conn.send_request(ExchangeType.IKE_SA_INIT, payloads, self._on_sa_init_response, now)
            self.init_request = self.conn.outstanding_datagram() or b""
        else:
            self.init_request = self.conn.resend_sa_init(payloads, self._on_sa_init_response, now)

    def _on_sa_init_response(self, payloads: list[Payload], now: float) -> None:
        conn = self.conn
        cookie = _notify(payloads, NotifyType.COOKIE)
        if cookie is not None:
            if self.sa_init_retries >= MAX_SA_INIT_RETRIES or not 1 <= len(cookie.data) <= MAX_COOKIE_SIZE:
                raise RemoteProtocolError("unusable COOKIE request")
            self.sa_init_retries += 1
            self.cookie = bytes(cookie.data)
            conn.spi_r = _ZERO_SPI
            conn.apply(IkeInput.RECV_SA_INIT_RETRY)
            self._send_sa_init(now, first=False)
            return
        invalid_ke = _notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None:
            group = int.from_bytes(invalid_ke.data[:2], "big") if len(invalid_ke.data) >= 2 else -1
            current = self.ke.group if self.ke is not None else None
            if (
                self.sa_init_retries >= MAX_SA_INIT_RETRIES
                or group not in ke_groups(self.ike_offer)
                or group == current
            ):
                raise PeerNotifyError(
                    f"INVALID_KE_PAYLOAD asks for group {group}, which we cannot use",
                    notify=NotifyType.INVALID_KE_PAYLOAD,
                )
            self.sa_init_retries += 1
            self.ke = KeyExchange.generate(group)
            conn.spi_r = _ZERO_SPI
            conn.apply(IkeInput.RECV_SA_INIT_RETRY)
            self._send_sa_init(now, first=False)
            return
        errors = _errors(payloads)
        if errors:
            raise PeerNotifyError(f"peer refused IKE_SA_INIT: {errors[0]!r}", notify=int(errors[0].notify_type))
        if conn.spi_r == _ZERO_SPI:
            raise RemoteProtocolError("IKE_SA_INIT response without a responder SPI")
        sa = _need(payloads, SA, "SA")
        if len(sa.proposals) != 1:
            raise RemoteProtocolError("IKE_SA_INIT response must hold one proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        selected = validate_chosen_proposal(sa.proposals[0], self.ike_offer)
        ke = _need(payloads, KE, "KE")
        if self.ke is None or selected.ke_group != self.ke.group or int(ke.group) != self.ke.group:
            raise RemoteProtocolError("KE group does not match", notify=NotifyType.INVALID_KE_PAYLOAD)
        self.nr = bytes(_need(payloads, Nonce, "Nonce").data)
        self.init_response = b""  # set by the connection right after (needs the raw datagram)
        shared = self.ke.shared_secret(bytes(ke.data))
        self._derive_initial_keys(selected, shared)
        nat = self._nat_seen(payloads, conn.spi_r)
        conn.nat_detected = bool(nat) or self.cfg.encap
        conn.peer_fragmentation = _notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        conn.apply(IkeInput.RECV_SA_INIT_RESPONSE)
        self.init_response = conn.last_received or b""
        self._send_auth(now, natt=nat is not None and conn.nat_detected)

    def _derive_initial_keys(self, selected: SelectedProposal, shared: bytes) -> None:
        conn = self.conn
        if selected.prf_id is None:
            raise RemoteProtocolError("no PRF negotiated", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        _, keys = derive_ike_keys(
            selected.prf_id,
            selected.encr_id,
            selected.encr_key_bits,
            selected.integ_id,
            shared,
            self.ni,
            self.nr,
            conn.spi_i,
            conn.spi_r,
        )
        conn.install_keys(selected, keys, _describe(selected))

    # ---- IKE_AUTH, initiator ---------------------------------------------------------------------

    def _send_auth(self, now: float, *, natt: bool) -> None:
        conn = self.conn
        if natt:
            # RFC 7296 2.23: switch to port 4500 as soon as a NAT is seen (libipsec peers always fake one)
            conn.natt = True
            conn.remote_addr = (conn.remote_addr[0], self.cfg.remote_natt_port)
        idi = _own_id(IDi, self.cfg.local_id)
        payloads: list[Payload] = [idi]
        if self.cfg.remote_id is not None:
            payloads.append(_own_id(IDr, self.cfg.remote_id))
        payloads.append(Auth(AuthMethod.SHARED_KEY_MIC, self._auth_data(idi)))
        offer = self._child_offer(self.cfg.children[0], for_auth=True, rekey_of=None)
        self.auth_offer = offer
        payloads += offer.payloads
        conn.send_request(ExchangeType.IKE_AUTH, payloads, self._on_auth_response, now)

    def _on_auth_response(self, payloads: list[Payload], now: float) -> None:
        conn = self.conn
        offer, self.auth_offer = self.auth_offer, None  # answered once: the SA keeps no copy of its offer
        if _notify(payloads, NotifyType.AUTHENTICATION_FAILED) is not None:
            self._release(offer)
            raise PeerNotifyError("peer rejected our authentication", notify=NotifyType.AUTHENTICATION_FAILED)
        idr = _find(payloads, IDr)
        auth = _find(payloads, Auth)
        if idr is None or auth is None:
            self._release(offer)
            errors = _errors(payloads)
            if errors:
                raise PeerNotifyError(f"IKE_AUTH refused: {errors[0]!r}", notify=int(errors[0].notify_type))
            raise RemoteProtocolError("IKE_AUTH response without IDr/AUTH")
        if self.cfg.remote_id is not None and not _id_matches(idr, self.cfg.remote_id):
            self._release(offer)
            raise RemoteProtocolError("peer identity does not match remote_id", notify=NotifyType.AUTHENTICATION_FAILED)
        if not self._verify_auth(idr, auth):
            self._release(offer)
            raise RemoteProtocolError("peer AUTH payload does not verify", notify=NotifyType.AUTHENTICATION_FAILED)
        conn.remote_id_text = idr.display()
        conn.apply(IkeInput.RECV_AUTH_RESPONSE)
        self._mark_established(now)
        if offer is None:
            return
        errors = _errors(payloads)
        if errors:
            self._release(offer)
            self._error_event(f"first Child SA refused: {errors[0]!r}", int(errors[0].notify_type), True)
            return
        try:
            child = self._accept_child(offer, payloads, self.ni, self.nr, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self._release(offer)
            notify = exc.notify if isinstance(exc, RemoteProtocolError) else None
            self._error_event(f"first Child SA unusable: {exc}", notify, False)
            return
        self._emit_child_created(child)

    # ---- IKE_SA_INIT and IKE_AUTH, responder -----------------------------------------------------

    def accept_sa_init(self, message: Message, data: bytes, now: float) -> None:
        """Answer an IKE_SA_INIT request. Raises RemoteProtocolError (NotifyError for
        INVALID_KE_PAYLOAD) before changing anything, so the endpoint can answer statelessly."""
        conn = self.conn
        payloads = list(message.payloads)
        sa = _need(payloads, SA, "SA")
        ke = _need(payloads, KE, "KE")
        nonce = _need(payloads, Nonce, "Nonce")
        selected = select_proposal(sa.proposals, _parsed_proposals(self.cfg.ike_proposals, ProtocolId.IKE))
        group = selected.ke_group
        if group is None or selected.prf_id is None:
            raise RemoteProtocolError("proposal without KE or PRF", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        if int(ke.group) != group:
            raise NotifyError(
                f"KE payload uses group {int(ke.group)}, we want {group}",
                notify=NotifyType.INVALID_KE_PAYLOAD,
                data=group.to_bytes(2, "big"),
            )
        self._check(IkeInput.RECV_SA_INIT_REQUEST)
        self.ni = bytes(nonce.data)
        self.ke = KeyExchange.generate(group)
        shared = self.ke.shared_secret(bytes(ke.data))
        self.nr = os.urandom(NONCE_SIZE)
        self._derive_initial_keys(selected, shared)
        nat = self._nat_seen(payloads, _ZERO_SPI)
        conn.nat_detected = bool(nat)
        conn.apply(IkeInput.RECV_SA_INIT_REQUEST)
        self.init_request = data
        response: list[Payload] = [
            SA([selected.to_wire(b"")]),
            KE(group, self.ke.public_bytes()),
            Nonce(self.nr),
        ]
        if nat is not None:
            response += self._natd(conn.spi_r)
        conn.peer_fragmentation = _notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        response += self._capabilities(fragmentation=conn.peer_fragmentation)
        conn.send_response(ExchangeType.IKE_SA_INIT, 0, response, data)
        conn.expect_request(1)
        self.init_response = conn.response_bytes() or b""

    def _on_auth_request(self, payloads: list[Payload], now: float) -> list[Payload]:
        conn = self.conn
        self._check(IkeInput.RECV_AUTH_REQUEST)
        idi = _need(payloads, IDi, "IDi")
        auth = _need(payloads, Auth, "AUTH")
        wanted_idr = _find(payloads, IDr)
        ok = self._verify_auth(idi, auth)
        if self.cfg.remote_id is not None and not _id_matches(idi, self.cfg.remote_id):
            ok = False
        if wanted_idr is not None and not _id_matches(wanted_idr, self.cfg.local_id):
            ok = False
        if not ok:
            self._error_event("peer authentication failed", NotifyType.AUTHENTICATION_FAILED, False)
            conn.apply(IkeInput.AUTH_FAILED)
            return [Notify(NotifyType.AUTHENTICATION_FAILED)]
        conn.remote_id_text = idi.display()
        self.peer_identity = idi
        conn.apply(IkeInput.RECV_AUTH_REQUEST)
        idr = _own_id(IDr, self.cfg.local_id)
        response: list[Payload] = [idr, Auth(AuthMethod.SHARED_KEY_MIC, self._auth_data(idr))]
        self._mark_established(now)
        if _find(payloads, SA) is None:
            return response
        try:
            child, child_payloads = self._answer_child(payloads, self.ni, self.nr, for_auth=True, now=now, names=None)
        except RemoteProtocolError as exc:
            self._error_event(f"first Child SA refused: {exc}", exc.notify, False)
            return response + [Notify(exc.notify, data=getattr(exc, "data", b""))]
        self._emit_child_created(child)
        return response + child_payloads

    # ---- Child SAs (IKE_AUTH and CREATE_CHILD_SA) ------------------------------------------------

    def _child_offer(
        self, cfg: ChildConfig, *, for_auth: bool, rekey_of: ChildSa | None, ke_group: int | None = None
    ) -> _ChildOffer:
        proposals = _proposals(cfg.esp_proposals, ProtocolId.ESP)
        if for_auth:
            _strip_ke(proposals)
        spi_in = self.ctx.new_esp_spi()
        for proposal in proposals:
            proposal.spi = spi_in
        if rekey_of is not None:
            tsi, tsr = list(rekey_of.local_ts_wire), list(rekey_of.remote_ts_wire)
        else:
            tsi = [ts_from_config(n) for n in cfg.local_ts]
            tsr = [ts_from_config(n) for n in cfg.remote_ts]
        offer = _ChildOffer(cfg=cfg, spi_in=spi_in, proposals=proposals, tsi=tsi, tsr=tsr, payloads=[])
        payloads: list[Payload] = []
        if rekey_of is not None:
            payloads.append(Notify(NotifyType.REKEY_SA, protocol_id=ProtocolId.ESP, spi=rekey_of.spi_in))
        if cfg.mode == "transport":
            payloads.append(Notify(NotifyType.USE_TRANSPORT_MODE))
        payloads.append(SA(proposals))
        if not for_auth:
            offer.nonce = os.urandom(NONCE_SIZE)
            payloads.append(Nonce(offer.nonce))
            groups = ke_groups(proposals)
            if groups:
                # first guess: our preferred group; after INVALID_KE_PAYLOAD: the one the peer asked for
                group = ke_group if ke_group in groups else groups[0]
                offer.ke = KeyExchange.generate(group)
                payloads.append(KE(group, offer.ke.public_bytes()))
        payloads += [TSi(list(tsi)), TSr(list(tsr))]
        offer.payloads = payloads
        return offer

    def _release(self, offer: _ChildOffer | None) -> None:
        if offer is not None and not offer.released:
            offer.released = True
            self.ctx.esp_spis.discard(offer.spi_in)

    def _child_keys(
        self, selected: SelectedProposal, ni: bytes, nr: bytes, exchange_initiator: bool, shared: bytes | None
    ) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
        conn = self.conn
        if conn.keys is None or conn.selected is None or conn.selected.prf_id is None:
            raise LocalProtocolError("no IKE keys")
        return derive_child_keys(
            prf_id=conn.selected.prf_id,
            sk_d=conn.keys.sk_d,
            selected=selected,
            ni=ni,
            nr=nr,
            is_initiator=exchange_initiator,
            shared_secret=shared,
        )

    def _install_child(self, child: ChildSa) -> None:
        cfg = child_config(self.conn, child)
        limits = volume_limits(cfg) if cfg is not None else NO_LIMITS
        try:
            build_esp_pair(child, self.ctx.esp_factory, child_replay_window(self.conn, child), limits)
        except Exception as exc:  # the factory is the data plane (or user code): never let it kill the engine
            raise RemoteProtocolError(
                f"ESP SA could not be installed: {type(exc).__name__}", notify=NotifyType.NO_PROPOSAL_CHOSEN
            ) from exc
        if cfg is not None:
            child.expire_at = hard_deadline(cfg, child.created_at)
            if child.limits.active:
                child.lifetime_check_at = child.created_at + LIFETIME_CHECK_INTERVAL
        self.conn.children[child.child_id] = child

    def _accept_child(
        self, offer: _ChildOffer, payloads: list[Payload], ni: bytes, nr: bytes, now: float
    ) -> ChildSa:
        """Check the responder's answer to our Child SA offer and install the Child SA."""
        sa = _need(payloads, SA, "SA")
        if len(sa.proposals) != 1:
            raise RemoteProtocolError("answer must hold one proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        chosen = sa.proposals[0]
        selected = validate_chosen_proposal(chosen, offer.proposals)
        if len(chosen.spi) != 4 or int.from_bytes(chosen.spi, "big") <= 255:
            raise RemoteProtocolError("invalid ESP SPI in the answer")
        if esp_algorithm_name(selected) is None:
            raise RemoteProtocolError("answer selects a cipher we cannot use", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        shared = None
        if selected.ke_group is not None:
            ke = _need(payloads, KE, "KE")
            if offer.ke is None or int(ke.group) != offer.ke.group or selected.ke_group != offer.ke.group:
                raise RemoteProtocolError("KE group does not match", notify=NotifyType.INVALID_KE_PAYLOAD)
            shared = offer.ke.shared_secret(bytes(ke.data))
        tsi = _selectors(_need(payloads, TSi, "TSi"))
        tsr = _selectors(_need(payloads, TSr, "TSr"))
        if not ts_within(tsi, offer.tsi) or not ts_within(tsr, offer.tsr):
            raise RemoteProtocolError("narrowed selectors are not within ours", notify=NotifyType.TS_UNACCEPTABLE)
        transport = offer.cfg.mode == "transport" and _notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
        keys_in, keys_out = self._child_keys(selected, ni, nr, True, shared)
        child = ChildSa(
            child_id=self.ctx.new_child_id(),
            config_name=offer.cfg.name,
            spi_in=offer.spi_in,
            spi_out=bytes(chosen.spi),
            selected=selected,
            proposal_text=_describe(selected),
            mode="transport" if transport else "tunnel",
            local_ts=tuple([ts_to_text(t) for t in tsi]),
            remote_ts=tuple([ts_to_text(t) for t in tsr]),
            local_ts_wire=tsi,
            remote_ts_wire=tsr,
            udp_encap=self.conn.natt or self.conn.nat_detected,
            keys_in=keys_in,
            keys_out=keys_out,
            created_at=now,
            rekey_at=None if offer.cfg.rekey_time is None else now + offer.cfg.rekey_time,
        )
        self._install_child(child)
        offer.released = True  # the SPI now belongs to the installed Child SA
        return child

    def _answer_child(
        self, payloads: list[Payload], ni: bytes, nr: bytes, *, for_auth: bool, now: float, names: list[str] | None
    ) -> tuple[ChildSa, list[Payload]]:
        """Select, narrow and install a Child SA for a peer's offer; our answer's payloads."""
        sa = _need(payloads, SA, "SA")
        peer_tsi = _selectors(_need(payloads, TSi, "TSi"))
        peer_tsr = _selectors(_need(payloads, TSr, "TSr"))
        configs = [c for c in self.cfg.children if names is None or c.name in names]
        error: RemoteProtocolError | None = None
        found: tuple[ChildConfig, SelectedProposal, list[TrafficSelector], list[TrafficSelector]] | None = None
        for cfg in configs:
            try:
                selected = select_proposal(sa.proposals, _acceptable_esp(cfg.esp_proposals, for_auth))
                if esp_algorithm_name(selected) is None:
                    raise RemoteProtocolError("cipher not supported by the data plane", notify=NotifyType.NO_PROPOSAL_CHOSEN)
                if len(selected.spi) != 4 or int.from_bytes(selected.spi, "big") <= 255:
                    raise RemoteProtocolError("invalid ESP SPI in the proposal")
                tsi = narrow_traffic_selectors(peer_tsi, [ts_from_config(n) for n in cfg.remote_ts])
                tsr = narrow_traffic_selectors(peer_tsr, [ts_from_config(n) for n in cfg.local_ts])
            except RemoteProtocolError as exc:
                error = exc
                continue
            found = (cfg, selected, tsi, tsr)
            break
        if found is None:
            raise error or RemoteProtocolError("no child config", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        cfg, selected, tsi, tsr = found
        shared = None
        our_ke: KeyExchange | None = None
        if selected.ke_group is not None:
            ke = _find(payloads, KE)
            if ke is None or int(ke.group) != selected.ke_group:
                raise NotifyError(
                    "KE payload does not use the selected group",
                    notify=NotifyType.INVALID_KE_PAYLOAD,
                    data=selected.ke_group.to_bytes(2, "big"),
                )
            our_ke = KeyExchange.generate(selected.ke_group)
            shared = our_ke.shared_secret(bytes(ke.data))
        if len(self.conn.children) >= child_limit():
            raise RemoteProtocolError("too many Child SAs", notify=NotifyType.NO_ADDITIONAL_SAS)
        transport = cfg.mode == "transport" and _notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
        keys_in, keys_out = self._child_keys(selected, ni, nr, False, shared)
        spi_in = self.ctx.new_esp_spi()
        child = ChildSa(
            child_id=self.ctx.new_child_id(),
            config_name=cfg.name,
            spi_in=spi_in,
            spi_out=selected.spi,
            selected=selected,
            proposal_text=_describe(selected),
            mode="transport" if transport else "tunnel",
            local_ts=tuple([ts_to_text(t) for t in tsr]),
            remote_ts=tuple([ts_to_text(t) for t in tsi]),
            local_ts_wire=tsr,
            remote_ts_wire=tsi,
            udp_encap=self.conn.natt or self.conn.nat_detected,
            keys_in=keys_in,
            keys_out=keys_out,
            created_at=now,
            rekey_at=None if cfg.rekey_time is None else now + cfg.rekey_time,
        )
        try:
            self._install_child(child)
        except RemoteProtocolError:
            self.ctx.esp_spis.discard(spi_in)
            raise
        answer: list[Payload] = []
        if transport:
            answer.append(Notify(NotifyType.USE_TRANSPORT_MODE))
        answer.append(SA([selected.to_wire(spi_in)]))
        if not for_auth:
            answer.append(Nonce(nr))
        if our_ke is not None:
            answer.append(KE(our_ke.group, our_ke.public_bytes()))
        answer += [TSi(list(tsi)), TSr(list(tsr))]
        return child, answer

    def _emit_child_created(self, child: ChildSa) -> None:
        self.ctx.emit(
            ChildSaCreated(
                ike_sa_id=self.conn.ike_sa_id,
                child_id=child.child_id,
                spi_in=child.spi_in,
                spi_out=child.spi_out,
                proposal=child.proposal_text,
                mode=child.mode,
                udp_encap=child.udp_encap,
                local_ts=child.local_ts,
                remote_ts=child.remote_ts,
                inbound=child.inbound,
                outbound=child.outbound,
            )
        )

    def _emit_child_rekeyed(self, old: ChildSa, child: ChildSa) -> None:
        self.ctx.emit(
            ChildSaRekeyed(
                ike_sa_id=self.conn.ike_sa_id,
                old_child_id=old.child_id,
                child_id=child.child_id,
                spi_in=child.spi_in,
                spi_out=child.spi_out,
                proposal=child.proposal_text,
                inbound=child.inbound,
                outbound=child.outbound,
            )
        )

    # ---- CREATE_CHILD_SA, initiator --------------------------------------------------------------

    def _start_child(
        self, cfg: ChildConfig, old: ChildSa | None, now: float, *, ke_group: int | None = None, ke_retries: int = 0
    ) -> None:
        offer = self._child_offer(cfg, for_auth=False, rekey_of=old, ke_group=ke_group)
        if old is not None:
            old.apply(ChildInput.START_REKEY)

        def on_response(payloads: list[Payload], when: float) -> None:
            self._on_child_response(offer, old, payloads, when, ke_retries)

        self.conn.send_request(ExchangeType.CREATE_CHILD_SA, offer.payloads, on_response, now)

    def _on_child_response(
        self, offer: _ChildOffer, old: ChildSa | None, payloads: list[Payload], now: float, ke_retries: int = 0
    ) -> None:
        invalid_ke = _notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and offer.ke is not None and ke_retries < MAX_CHILD_KE_RETRIES:
            # RFC 7296 1.3: retry with the group the responder asked for, if we offered it
            group = int.from_bytes(invalid_ke.data[:2], "big") if len(invalid_ke.data) >= 2 else -1
            if group != offer.ke.group and group in ke_groups(offer.proposals):
                self._release(offer)
                if old is not None:
                    if old.state != ChildState.REKEYING or old.child_id not in self.conn.children:
                        return  # the peer rekeyed or deleted it meanwhile: nothing left to rekey
                    old.apply(ChildInput.REKEY_FAILED)
                self._start_child(offer.cfg, old, now, ke_group=group, ke_retries=ke_retries + 1)
                return
        try:
            errors = _errors(payloads)
            if errors:
                raise PeerNotifyError(f"CREATE_CHILD_SA refused: {errors[0]!r}", notify=int(errors[0].notify_type))
            nr = bytes(_need(payloads, Nonce, "Nonce").data)
            child = self._accept_child(offer, payloads, offer.nonce, nr, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self._release(offer)
            if old is not None and old.state == ChildState.REKEYING:
                old.apply(ChildInput.REKEY_FAILED)
            notify = exc.notify if isinstance(exc, RemoteProtocolError) else None
            self._error_event(str(exc), notify, isinstance(exc, PeerNotifyError))
            return
        if old is not None and old.state == ChildState.REKEYING:
            old.apply(ChildInput.RECV_REKEY_DONE)
            self._emit_child_rekeyed(old, child)
            self.conn.enqueue_front(("delete_child", old.child_id))  # the rekey initiator deletes the old SA (2.8)
            return
        # the old SA went away meanwhile, or the peer rekeyed it at the same time: a new SA of its own
        self._emit_child_created(child)
        if old is not None and old.collision is not None:
            # RFC 7296 2.8.1: the SA created with the lowest of the four nonces is redundant and its
            # initiator deletes it; the initiator of the surviving SA deletes the old one.
            _, peer_ni, peer_nr = old.collision
            if min(offer.nonce, nr) < min(peer_ni, peer_nr):
                self.conn.enqueue_front(("delete_child", child.child_id))
            elif old.state != ChildState.DELETED:
                self.conn.enqueue_front(("delete_child", old.child_id))

    # ---- CREATE_CHILD_SA, responder --------------------------------------------------------------

    def _on_create_child_request(self, payloads: list[Payload], now: float) -> list[Payload]:
        self._check(IkeInput.RECV_CREATE_CHILD_REQUEST)
        sa = _need(payloads, SA, "SA")
        ni = bytes(_need(payloads, Nonce, "Nonce").data)
        if sa.proposals and all(int(p.protocol_id) == ProtocolId.IKE for p in sa.proposals):
            return self._answer_ike_rekey(sa, ni, payloads, now)
        rekey = _notify(payloads, NotifyType.REKEY_SA)
        old: ChildSa | None = None
        if rekey is not None:
            old = next((c for c in self.conn.children.values() if c.spi_out == bytes(rekey.spi)), None)
            if old is not None and old.state == ChildState.DELETING:
                # RFC 7296 2.25.1: we are deleting it; the peer should wait, not create a new one
                raise RemoteProtocolError("rekey of a Child SA being deleted", notify=NotifyType.TEMPORARY_FAILURE)
            if old is None or old.state not in (ChildState.INSTALLED, ChildState.REKEYING):
                raise RemoteProtocolError("rekey of an unknown Child SA", notify=NotifyType.CHILD_SA_NOT_FOUND)
        nr = os.urandom(NONCE_SIZE)
        names = None if old is None else [old.config_name]
        child, answer = self._answer_child(payloads, ni, nr, for_auth=False, now=now, names=names)
        if old is not None:
            if old.state == ChildState.REKEYING:  # we are rekeying it too: settle it by nonces later
                old.collision = (child.child_id, ni, nr)
            old.apply(ChildInput.RECV_REKEY_REQUEST)
            self._emit_child_rekeyed(old, child)
        else:
            self._emit_child_created(child)
        return answer

    # ---- IKE SA rekey (CREATE_CHILD_SA, RFC 7296 1.3.2 and 2.18) ---------------------------------

    def _start_ike_rekey(self, now: float, *, ke_group: int | None = None, ke_retries: int = 0) -> None:
        conn = self.conn
        spi = _random_ike_spi()
        proposals = _proposals(self.cfg.ike_proposals, ProtocolId.IKE, spi)
        groups = ke_groups(proposals)
        current = conn.selected.ke_group if conn.selected is not None else None
        # first guess: the current group if still allowed; after INVALID_KE_PAYLOAD: the one asked for
        group = ke_group if ke_group in groups else current if current in groups else groups[0]
        if group is None:
            raise LocalProtocolError("no key exchange group for the IKE rekey")
        offer = _IkeRekeyOffer(spi=spi, proposals=proposals, nonce=os.urandom(NONCE_SIZE), ke=KeyExchange.generate(group))
        self._ike_rekey_nonce = offer.nonce
        payloads: list[Payload] = [SA(proposals), Nonce(offer.nonce), KE(group, offer.ke.public_bytes())]

        def on_response(answer: list[Payload], when: float) -> None:
            self._on_ike_rekey_response(offer, answer, when, ke_retries)

        conn.send_request(ExchangeType.CREATE_CHILD_SA, payloads, on_response, now)

    def _on_ike_rekey_response(
        self, offer: _IkeRekeyOffer, payloads: list[Payload], now: float, ke_retries: int = 0
    ) -> None:
        conn = self.conn
        self._ike_rekey_nonce = None
        invalid_ke = _notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if invalid_ke is not None and conn.state == IkeState.ESTABLISHED and ke_retries < MAX_CHILD_KE_RETRIES:
            # RFC 7296 1.3: retry the rekey with the group the responder asked for, if we offered it
            group = int.from_bytes(invalid_ke.data[:2], "big") if len(invalid_ke.data) >= 2 else -1
            if group != offer.ke.group and group in ke_groups(offer.proposals):
                self._start_ike_rekey(now, ke_group=group, ke_retries=ke_retries + 1)
                return
        try:
            if conn.state != IkeState.ESTABLISHED:
                raise LocalProtocolError("the IKE SA was rekeyed by the peer meanwhile")
            errors = _errors(payloads)
            if errors:
                raise PeerNotifyError(f"IKE rekey refused: {errors[0]!r}", notify=int(errors[0].notify_type))
            sa = _need(payloads, SA, "SA")
            if len(sa.proposals) != 1:
                raise RemoteProtocolError("answer must hold one proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
            chosen = sa.proposals[0]
            selected = validate_chosen_proposal(chosen, offer.proposals)
            if len(chosen.spi) != 8 or chosen.spi == _ZERO_SPI:
                raise RemoteProtocolError("invalid IKE SPI in the rekey answer")
            ke = _need(payloads, KE, "KE")
            if int(ke.group) != offer.ke.group or selected.ke_group != offer.ke.group:
                raise RemoteProtocolError("KE group does not match", notify=NotifyType.INVALID_KE_PAYLOAD)
            nr = bytes(_need(payloads, Nonce, "Nonce").data)
            shared = offer.ke.shared_secret(bytes(ke.data))
            self._spawn_rekeyed(
                selected, shared, offer.nonce, nr, spi_i=offer.spi, spi_r=bytes(chosen.spi), initiator=True, now=now
            )
        except (RemoteProtocolError, LocalProtocolError) as exc:
            notify = exc.notify if isinstance(exc, RemoteProtocolError) else None
            self._error_event(f"IKE SA rekey failed: {exc}", notify, isinstance(exc, PeerNotifyError))
            if self.cfg.rekey_time is not None:
                conn.rekey_at = now + self.cfg.rekey_time
            return
        conn.enqueue_front(("delete_ike", None))  # the rekey initiator deletes the old IKE SA

    def _answer_ike_rekey(self, sa: SA, ni: bytes, payloads: list[Payload], now: float) -> list[Payload]:
        from .connection import NotifyError

        if self._ike_rekey_nonce is not None and self._ike_rekey_nonce > ni:
            # both ends rekey at once (RFC 7296 2.8.2): the rekey with the higher nonce proceeds,
            # the other end is told to back off; both compare the same two nonces
            raise RemoteProtocolError("IKE SA rekey collision", notify=NotifyType.TEMPORARY_FAILURE)
        ours = _proposals(self.cfg.ike_proposals, ProtocolId.IKE)
        selected = select_proposal(sa.proposals, ours)
        if len(selected.spi) != 8 or selected.spi == _ZERO_SPI:
            raise RemoteProtocolError("invalid IKE SPI in the rekey proposal")
        group = selected.ke_group
        if group is None:
            raise RemoteProtocolError("IKE rekey without a key exchange", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        ke = _find(payloads, KE)
        if ke is None or int(ke.group) != group:
            raise NotifyError("KE payload does not use the selected group", notify=NotifyType.INVALID_KE_PAYLOAD, data=group.to_bytes(2, "big"))
        our_ke = KeyExchange.generate(group)
        shared = our_ke.shared_secret(bytes(ke.data))
        nr = os.urandom(NONCE_SIZE)
        spi_r = _random_ike_spi()
        self._spawn_rekeyed(selected, shared, ni, nr, spi_i=selected.spi, spi_r=spi_r, initiator=False, now=now)
        return [SA([selected.to_wire(spi_r)]), Nonce(nr), KE(group, our_ke.public_bytes())]

    def _spawn_rekeyed(
        self,
        selected: SelectedProposal,
        shared: bytes,
        ni: bytes,
        nr: bytes,
        *,
        spi_i: bytes,
        spi_r: bytes,
        initiator: bool,
        now: float,
    ) -> None:
        from .connection import IkeConnection

        old = self.conn
        if old.keys is None or old.selected is None or old.selected.prf_id is None or selected.prf_id is None:
            raise LocalProtocolError("no keys to rekey from")
        _, keys = derive_rekeyed_ike_keys(
            selected.prf_id,
            selected.encr_id,
            selected.encr_key_bits,
            selected.integ_id,
            old.keys.sk_d,
            shared,
            ni,
            nr,
            spi_i,
            spi_r,
            old_prf_id=old.selected.prf_id,
        )
        new = IkeConnection(
            ctx=self.ctx,
            ike_sa_id=old.ike_sa_id,
            config=self.cfg,
            is_initiator=initiator,
            remote_addr=old.remote_addr,
            spi_i=spi_i,
            spi_r=spi_r,
            now=now,
        )
        new.natt = old.natt
        new.nat_detected = old.nat_detected
        new.peer_fragmentation = old.peer_fragmentation
        new.remote_id_text = old.remote_id_text
        new.install_keys(selected, keys, _describe(selected))
        new.apply(IkeInput.CREATED_BY_REKEY)
        new.established_at = now
        if self.cfg.rekey_time is not None:
            new.rekey_at = now + self.cfg.rekey_time
        new.children = old.children
        old.children = {}
        new.take_queue(old)
        old.replaced = True
        old.apply(IkeInput.REPLACED)
        self.ctx.spawned.append(new)
        self.ctx.emit(
            IkeSaRekeyed(
                ike_sa_id=old.ike_sa_id,
                old_spi_i=old.spi_i,
                old_spi_r=old.spi_r,
                spi_i=spi_i,
                spi_r=spi_r,
                proposal=new.proposal_text,
            )
        )

    # ---- INFORMATIONAL ---------------------------------------------------------------------------

    def _on_informational_request(self, payloads: list[Payload], now: float) -> list[Payload]:
        conn = self.conn
        self._check(IkeInput.RECV_INFORMATIONAL_REQUEST)
        deletes = [p for p in payloads if isinstance(p, Delete)]
        if any(int(d.protocol_id) == ProtocolId.IKE for d in deletes):
            self._close_after_response = True
            return []
        ours: list[bytes] = []
        for delete in deletes:
            if int(delete.protocol_id) != ProtocolId.ESP:
                continue
            for spi in delete.spis:
                child = next((c for c in conn.children.values() if c.spi_out == bytes(spi)), None)
                if child is None:
                    continue
                ours.append(child.spi_in)
                conn.drop_child(child, by_peer=True, event=ChildInput.RECV_DELETE)
        return [Delete(ProtocolId.ESP, ours)] if ours else []

    def _send_child_delete(self, child_id: int, now: float) -> None:
        conn = self.conn
        child = conn.children.get(child_id)
        if child is None or child.state not in (ChildState.INSTALLED, ChildState.REKEYED):
            return
        child.apply(ChildInput.SEND_DELETE)

        def on_response(payloads: list[Payload], when: float) -> None:
            if child.child_id in conn.children:
                conn.drop_child(child, by_peer=False, event=ChildInput.RECV_DELETE_RESPONSE)

        conn.send_request(ExchangeType.INFORMATIONAL, [Delete(ProtocolId.ESP, [child.spi_in])], on_response, now)

    def _send_ike_delete(self, now: float) -> None:
        conn = self.conn
        if conn.state not in (IkeState.ESTABLISHED, IkeState.REKEYED):
            return
        conn.apply(IkeInput.SEND_DELETE)

        def on_response(payloads: list[Payload], when: float) -> None:
            conn.close(when, reason="deleted", by_peer=False, terminal=IkeInput.RECV_DELETE_RESPONSE)

        conn.send_request(ExchangeType.INFORMATIONAL, [Delete(ProtocolId.IKE, [])], on_response, now)

    def _send_dpd(self, now: float) -> None:
        self.conn.send_request(ExchangeType.INFORMATIONAL, [], lambda payloads, when: None, now)

    # ---- dispatch ----------------------------------------------------------------------------------

    def handle_request(self, exchange: int, payloads: list[Payload], now: float) -> list[Payload]:
        if exchange == ExchangeType.IKE_AUTH:
            return self._on_auth_request(payloads, now)
        if exchange == ExchangeType.CREATE_CHILD_SA:
            if self.conn.state in (IkeState.REKEYED, IkeState.DELETING):
                # RFC 7296 2.25: an IKE SA being replaced or deleted takes no new work
                raise RemoteProtocolError("IKE SA is going away", notify=NotifyType.TEMPORARY_FAILURE)
            return self._on_create_child_request(payloads, now)
        if exchange == ExchangeType.INFORMATIONAL:
            return self._on_informational_request(payloads, now)
        raise RemoteProtocolError(f"unsupported exchange type {exchange}")

    def after_response(self, now: float) -> None:
        if self._close_after_response:
            self._close_after_response = False
            self.conn.close(now, reason="deleted by peer", by_peer=True, terminal=IkeInput.RECV_DELETE)

    def run(self, operation: Operation, now: float) -> None:
        """Start one queued local request (skipped if it no longer applies)."""
        kind, arg = operation
        conn = self.conn
        if kind == "delete_ike":
            self._send_ike_delete(now)
            return
        if conn.state != IkeState.ESTABLISHED:
            return  # an old (rekeyed) IKE SA only sends its own Delete
        if kind == "create_child" and isinstance(arg, ChildConfig):
            self._start_child(arg, None, now)
        elif kind == "rekey_child" and isinstance(arg, int):
            child = conn.children.get(arg)
            if child is not None and child.state == ChildState.INSTALLED:
                self._start_child(conn.find_child_config(child.config_name), child, now)
        elif kind == "delete_child" and isinstance(arg, int):
            self._send_child_delete(arg, now)
        elif kind == "rekey_ike":
            self._start_ike_rekey(now)
        elif kind == "dpd":
            self._send_dpd(now)
        elif kind == "invalid_message_id" and isinstance(arg, int):
            notify = Notify(NotifyType.INVALID_MESSAGE_ID, data=(arg & 0xFFFFFFFF).to_bytes(4, "big"))
            conn.send_request(ExchangeType.INFORMATIONAL, [notify], lambda payloads, when: None, now)

    # ---- timed work (rekey on time, DPD) -----------------------------------------------------------

    def next_timed_work(self) -> float | None:
        conn = self.conn
        times: list[float] = []
        if conn.rekey_at is not None:
            times.append(conn.rekey_at)
        for child in conn.children.values():
            if child.rekey_at is not None and child.state == ChildState.INSTALLED:
                times.append(child.rekey_at)
            if child.state in _LIFETIME_STATES:
                if child.expire_at is not None:
                    times.append(child.expire_at)
                if child.lifetime_check_at is not None:
                    times.append(child.lifetime_check_at)
        if self.cfg.dpd_delay is not None:
            times.append(conn.last_heard + self.cfg.dpd_delay)
        return min(times) if times else None

    def maybe_start_timed_work(self, now: float) -> None:
        conn = self.conn
        if conn.rekey_at is not None and now >= conn.rekey_at:
            conn.rekey_at = None
            self.run(("rekey_ike", None), now)
            return
        if self._check_lifetimes(now):
            return
        for child in list(conn.children.values()):
            if child.rekey_at is not None and child.state == ChildState.INSTALLED and now >= child.rekey_at:
                child.rekey_at = None
                self._emit_child_expired(child, "time", hard=False)
                self.run(("rekey_child", child.child_id), now)
                return
        if self.cfg.dpd_delay is not None and now >= conn.last_heard + self.cfg.dpd_delay:
            if self._esp_alive():
                conn.last_heard = now  # inbound ESP since the last look: alive, no probe (as strongSwan)
                return
            self.run(("dpd", None), now)

    def _esp_alive(self) -> bool:
        alive = False
        for child in self.conn.children.values():
            alive = inbound_rose(child) or alive  # look at every child: each remembers its count
        return alive

    def _check_lifetimes(self, now: float) -> bool:
        """Act on children whose hard deadline or counter poll is due: delete on a hard limit,
        rekey on a soft one (not while a rekey runs). True if that started a request."""
        for child in list(self.conn.children.values()):
            if child.state not in _LIFETIME_STATES:
                continue
            expire_due = child.expire_at is not None and now >= child.expire_at
            poll_due = child.lifetime_check_at is not None and now >= child.lifetime_check_at
            if not (expire_due or poll_due):
                continue
            if child.lifetime_check_at is not None:
                child.lifetime_check_at = now + LIFETIME_CHECK_INTERVAL
            verdict = assess(child, now)
            if verdict.action is Action.EXPIRE:
                child.expire_at = child.lifetime_check_at = None  # acted on: never again for this child
                self._emit_child_expired(child, verdict.limit, hard=True)
                self._send_child_delete(child.child_id, now)
                return True
            if (
                verdict.action is Action.REKEY
                and child.state == ChildState.INSTALLED
                and child.soft_rekeys < MAX_SOFT_REKEYS
            ):
                child.soft_rekeys += 1
                child.rekey_at = None  # this rekey also stands for a pending rekey on time
                self._emit_child_expired(child, verdict.limit, hard=False)
                self.run(("rekey_child", child.child_id), now)
                return True
        return False

    def _emit_child_expired(self, child: ChildSa, limit: str, *, hard: bool) -> None:
        self.ctx.emit(
            ChildSaExpired(
                ike_sa_id=self.conn.ike_sa_id,
                child_id=child.child_id,
                spi_in=child.spi_in,
                spi_out=child.spi_out,
                limit=limit,
                hard=hard,
            )
        )


# Child states in which lifetimes act: an installed child, or one replaced by the peer's rekey that
# still waits for its Delete (in-flight rekeys and deletes finish first).
_LIFETIME_STATES = (ChildState.INSTALLED, ChildState.REKEYED)


def child_config(conn: IkeConnection, child: ChildSa) -> ChildConfig | None:
    for cfg in conn.config.children:
        if cfg.name == child.config_name:
            return cfg
    return None


def child_limit() -> int:
    return MAX_CHILD_SAS


def child_replay_window(conn: IkeConnection, child: ChildSa) -> int:
    for cfg in conn.config.children:
        if cfg.name == child.config_name:
            return cfg.replay_window
    return 1024
