"""IKE_SA_INIT (RFC 7296 1.2), both roles: proposals, key exchange, nonces, NAT detection, COOKIE and
INVALID_KE_PAYLOAD retries, fragmentation and signature-hash capabilities.

The initiator continues with IKE_AUTH (`ike_auth.start`) once the response is in; the responder's
answer is built statelessly first (anything wrong raises before the IKE SA changes), so the endpoint
can refuse a request without keeping state.
"""

from __future__ import annotations


from ..config import IkeConfig
from ..events import Address
from ..crypto import KeyExchange, decode_signature_hashes, derive_ike_keys
from ..exceptions import LocalProtocolError, ParseError, PeerNotifyError, RemoteProtocolError
from ..ike_sa import IkeSa, InitExchange, Request
from ..wire.redirect import Gateway
from ..negotiation import SelectedProposal, ke_groups, select_proposal, validate_chosen_proposal
from ..pki import certreq_data, certreq_hashes
from ..state import IkeInput
from ..wire import (
    KE, SA, CertEncoding, CertReq, ExchangeType, Message, Nonce, Notify, NotifyType, Payload, Proposal, ProtocolId,
)  # fmt: skip
from . import ike_auth, redirect
from .common import (
    nat_seen,
    natd_notifies,
    new_nonce,
    ZERO_IKE_SPI,
    describe,
    find_notify,
    need,
    our_proposals,
    parsed_proposals,
    refusal,
    requested_group,
)

__all__ = [
    "start", "accept_request", "accepts_ike_offer", "SaInitRequest", "MAX_SA_INIT_RETRIES", "MAX_COOKIE_SIZE",
]

MAX_SA_INIT_RETRIES = 3  # COOKIE / INVALID_KE_PAYLOAD round trips an initiator follows
MAX_COOKIE_SIZE = 64  # RFC 7296 2.6: a cookie is 1..64 octets
# RFC 7427 hashes we verify: SHA2-256/384/512 (as strongSwan) and Identity (8420: Ed25519/Ed448)
SIGNATURE_HASHES = (2, 3, 4, 5)
_SIGNATURE_HASHES_DATA = Notify.signature_hash_algorithms(list(SIGNATURE_HASHES)).data  # built once


# ---- shared by both roles ----------------------------------------------------------------------


def _capabilities(*, fragmentation: bool = True) -> list[Payload]:
    payloads: list[Payload] = []
    if fragmentation:  # a responder announces it only if the initiator did (RFC 7383 2.3)
        payloads.append(Notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED))
    payloads.append(Notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=_SIGNATURE_HASHES_DATA))
    return payloads


def accepts_ike_offer(config: IkeConfig, offer: SA) -> bool:
    """Whether `config`'s IKE proposals accept one of the peer's (choosing among connections)."""
    try:
        select_proposal(offer.proposals, parsed_proposals(config.ike_proposals, ProtocolId.IKE))
    except RemoteProtocolError:
        return False
    return True


def peer_capabilities(sa: IkeSa, payloads: list[Payload]) -> None:
    """Record the peer's IKEV2_FRAGMENTATION_SUPPORTED, SIGNATURE_HASH_ALGORITHMS and CERTREQs."""
    sa.peer_fragmentation = find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    hashes = find_notify(payloads, NotifyType.SIGNATURE_HASH_ALGORITHMS)
    if hashes is not None:
        try:
            sa.peer_signature_hashes = decode_signature_hashes(bytes(hashes.data))
        except ParseError:  # unusable, as if not sent: we fall back to the classic signature methods
            sa.ctx.count("malformed_signature_hashes")
    record_certreq(sa, payloads)


def record_certreq(sa: IkeSa, payloads: list[Payload]) -> None:
    """Keep the CA hashes of the peer's CERTREQs (IKE_SA_INIT response or IKE_AUTH request): our
    certificate is chosen by them. A malformed one is the peer's error (ParseError, INVALID_SYNTAX)."""
    requests = [p for p in payloads if isinstance(p, CertReq)]
    if requests:
        sa.peer_certreq = certreq_hashes(requests)


def our_certreq(sa: IkeSa) -> list[Payload]:
    """A CERTREQ naming our trust anchors, when we want the peer's certificate (RFC 7296 3.7). A
    responder does not know the peer's connection yet: it names the anchors of all of them."""
    config = sa.config
    if not sa.is_initiator and config.name in sa.ctx.connections:
        anchors = sa.ctx.connections.certreq_anchors()
    elif config.remote_auth == "pubkey" and config.send_certreq and config.trust is not None:
        anchors = config.trust.anchors
    else:
        return []
    data = certreq_data(anchors)
    return [CertReq(CertEncoding.X509_SIGNATURE, data)] if data else []


def _derive_keys(sa: IkeSa, init: InitExchange, selected: SelectedProposal, shared: bytes) -> None:
    if selected.prf_id is None:
        raise RemoteProtocolError("no PRF negotiated", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    _, keys = derive_ike_keys(
        selected.prf_id, selected.encr_id, selected.encr_key_bits, selected.integ_id, shared, init.ni, init.nr,
        sa.spi_i, sa.spi_r,
    )  # fmt: skip
    sa.install_keys(selected, keys, describe(selected))


# ---- initiator ---------------------------------------------------------------------------------


class SaInitRequest(Request):
    """Our IKE_SA_INIT request; retried in place after COOKIE or INVALID_KE_PAYLOAD."""

    __slots__ = ("offer", "ke", "cookie", "retries")
    exchange_type = ExchangeType.IKE_SA_INIT

    def __init__(self, offer: list[Proposal], ke: KeyExchange) -> None:
        self.offer = offer
        self.ke = ke
        self.cookie: bytes | None = None
        self.retries = 0

    def payloads(self, sa: IkeSa, ni: bytes) -> list[Payload]:
        payloads: list[Payload] = []
        if self.cookie is not None:
            payloads.append(Notify(NotifyType.COOKIE, data=self.cookie))  # must come first (RFC 7296 2.6)
        payloads += [
            SA(self.offer), KE(self.ke.group, self.ke.public_bytes()), Nonce(ni), *natd_notifies(sa, ZERO_IKE_SPI),
            *_capabilities(), *redirect.sa_init_notifies(sa),
        ]  # fmt: skip
        return payloads

    def answers(self, sa: IkeSa, payloads: list[Payload], addr: Address) -> bool:
        # a REDIRECT must carry our nonce and come from the gateway we asked (RFC 5685 8.1); a forged
        # or stale one (the previous gateway's retransmission after we moved on) is dropped
        if sa.init is None:
            return True
        try:
            redirect.sa_init_redirect(sa, sa.init, payloads, addr)
        except RemoteProtocolError:
            sa.ctx.count("redirects_dropped")
            return False
        return True

    def _redirected(self, sa: IkeSa, gateway: Gateway, now: float) -> None:
        """Start over at the new gateway: same SPIi and handle, fresh nonce and key share."""
        if redirect.follow_in_sa_init(sa, gateway, now) is None:
            return  # the attempt ended (a loop, or a name for the user to resolve)
        init = sa.init
        if init is None:
            raise LocalProtocolError("IKE_SA_INIT state is gone")
        self.cookie, self.retries = None, 0
        self.ke = KeyExchange.generate(self.ke.group)
        sa.spi_r = ZERO_IKE_SPI
        sa.apply(IkeInput.RECV_SA_INIT_RETRY)
        init.request = sa.restart_sa_init(self, self.payloads(sa, init.ni), now)

    def _retry(self, sa: IkeSa, init: InitExchange, now: float) -> None:
        self.retries += 1
        sa.spi_r = ZERO_IKE_SPI
        sa.apply(IkeInput.RECV_SA_INIT_RETRY)
        init.request = sa.restart_sa_init(self, self.payloads(sa, init.ni), now)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        init = sa.init
        if init is None:
            raise LocalProtocolError("IKE_SA_INIT state is gone")
        gateway = redirect.sa_init_redirect(sa, init, payloads, sa.remote_addr)  # checked by `answers`
        if gateway is not None:
            self._redirected(sa, gateway, now)
            return
        cookie = find_notify(payloads, NotifyType.COOKIE)
        if cookie is not None:
            if self.retries >= MAX_SA_INIT_RETRIES or not 1 <= len(cookie.data) <= MAX_COOKIE_SIZE:
                raise RemoteProtocolError("unusable COOKIE request")
            self.cookie = bytes(cookie.data)
            self._retry(sa, init, now)
            return
        group = requested_group(payloads)
        if group is not None:
            if self.retries >= MAX_SA_INIT_RETRIES or group not in ke_groups(self.offer) or group == self.ke.group:
                raise PeerNotifyError(
                    f"INVALID_KE_PAYLOAD asks for group {group}, which we cannot use",
                    notify=NotifyType.INVALID_KE_PAYLOAD,
                )
            self.ke = KeyExchange.generate(group)
            self._retry(sa, init, now)
            return
        refused = refusal(payloads, "IKE_SA_INIT")
        if refused is not None:
            raise refused
        if sa.spi_r == ZERO_IKE_SPI:
            raise RemoteProtocolError("IKE_SA_INIT response without a responder SPI")
        sa_payload = need(payloads, SA, "SA")
        if len(sa_payload.proposals) != 1:
            raise RemoteProtocolError("IKE_SA_INIT response must hold one proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
        selected = validate_chosen_proposal(sa_payload.proposals[0], self.offer)
        ke = need(payloads, KE, "KE")
        if selected.ke_group != self.ke.group or int(ke.group) != self.ke.group:
            raise RemoteProtocolError("KE group does not match", notify=NotifyType.INVALID_KE_PAYLOAD)
        init.nr = bytes(need(payloads, Nonce, "Nonce").data)
        _derive_keys(sa, init, selected, self.ke.shared_secret(bytes(ke.data)))
        nat = nat_seen(sa, payloads, sa.spi_r)
        # a peer that sent no NAT_DETECTION notifies (nat is None) does no NAT-T: nothing to force
        sa.nat_detected = bool(nat) or (nat is not None and sa.config.encap)
        peer_capabilities(sa, payloads)
        sa.apply(IkeInput.RECV_SA_INIT_RESPONSE)
        init.response = sa.response_data
        # RFC 4555 3.3: with MOBIKE offered, IKE floats to port 4500 also without a NAT (strongSwan too)
        ike_auth.start(sa, now, natt=nat is not None and (sa.nat_detected or sa.config.mobike))


def start(sa: IkeSa, now: float) -> None:
    """Send our IKE_SA_INIT request (the IKE SA is new, we are the initiator)."""
    offer = our_proposals(sa.config.ike_proposals, ProtocolId.IKE)
    groups = ke_groups(offer)
    if not groups:
        raise LocalProtocolError("the IKE proposals need a key exchange group")
    if not sa.config.children:
        raise LocalProtocolError("an initiator needs at least one child config")
    request = SaInitRequest(offer, KeyExchange.generate(groups[0]))
    init = sa.init = InitExchange(ni=new_nonce())
    sa.apply(IkeInput.SEND_SA_INIT)
    init.request = sa.send_request(request, request.payloads(sa, init.ni), now)


# ---- responder ---------------------------------------------------------------------------------


def accept_request(sa: IkeSa, message: Message, data: bytes, now: float) -> None:
    """Answer an IKE_SA_INIT request on a fresh responder IKE SA. Raises RemoteProtocolError (with
    the INVALID_KE_PAYLOAD group as `data`) before changing anything, so the endpoint can answer
    statelessly."""
    payloads = list(message.payloads)
    sa_payload = need(payloads, SA, "SA")
    ke = need(payloads, KE, "KE")
    nonce = need(payloads, Nonce, "Nonce")
    selected = select_proposal(sa_payload.proposals, parsed_proposals(sa.config.ike_proposals, ProtocolId.IKE))
    group = selected.ke_group
    if group is None or selected.prf_id is None:
        raise RemoteProtocolError("proposal without KE or PRF", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    if int(ke.group) != group:
        raise RemoteProtocolError(
            f"KE payload uses group {int(ke.group)}, we want {group}",
            notify=NotifyType.INVALID_KE_PAYLOAD,
            data=group.to_bytes(2, "big"),
        )
    sa.check(IkeInput.RECV_SA_INIT_REQUEST)
    ours, shared = KeyExchange.respond(group, bytes(ke.data))  # ML-KEM: encapsulates to the initiator's key
    init = InitExchange(ni=bytes(nonce.data), nr=new_nonce(), request=data)
    _derive_keys(sa, init, selected, shared)
    nat = nat_seen(sa, payloads, ZERO_IKE_SPI)
    sa.nat_detected = bool(nat) or (nat is not None and sa.config.encap)
    sa.apply(IkeInput.RECV_SA_INIT_REQUEST)
    sa.init = init
    peer_capabilities(sa, payloads)
    sa.peer_accepts_redirect = any(
        find_notify(payloads, kind) is not None for kind in (NotifyType.REDIRECT_SUPPORTED, NotifyType.REDIRECTED_FROM)
    )
    response: list[Payload] = [SA([selected.to_wire(b"")]), KE(group, ours.public_bytes()), Nonce(init.nr)]
    response += our_certreq(sa)
    if nat is not None:
        response += natd_notifies(sa, sa.spi_r)
    response += _capabilities(fragmentation=sa.peer_fragmentation)
    sa.send_response(ExchangeType.IKE_SA_INIT, 0, response, data)
    sa.expect_request(1)
    init.response = sa.response_bytes() or b""
