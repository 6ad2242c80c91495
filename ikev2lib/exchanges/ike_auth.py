"""IKE_AUTH (RFC 7296 1.2, 2.15), both roles: identities, AUTH through `ikev2lib.auth`, and the first
Child SA (negotiated by `child_create`, created with the IKE SA's keys).

A failed authentication ends the IKE SA; a refused or unusable first Child SA does not (the IKE SA
is up and the user hears of the child's failure as an event).
"""

from __future__ import annotations

from ..auth import Authenticator, PeerProof, Verified, local_authenticator, peer_verifier
from ..config import IkeConfig
from ..crypto import signed_octets
from ..events import IkeSaEstablished
from ..exceptions import LocalProtocolError, PeerNotifyError, RemoteProtocolError
from ..identities import id_body, id_matches, id_text, own_id
from ..ike_sa import IkeSa, InitExchange, Request
from ..state import IkeInput
from ..wire import SA, Auth, Cert, ExchangeType, IDi, IDr, Notify, NotifyType, Payload
from . import child_create, mobike
from .child_create import ChildOffer
from .common import error_answer, find, find_notify, need, refusal, report_error
from .ike_init import SIGNATURE_HASHES, accepts_ike_offer, our_certreq, record_certreq

__all__ = ["start", "respond", "AuthRequest"]


def _octets(sa: IkeSa, init: InitExchange, *, ours: bool, id_payload: IDi | IDr) -> bytes:
    """The octets an AUTH payload signs: its sender's first message, the other side's nonce, and
    prf(SK_p, ID body) with the sender's SK_p (RFC 7296 2.15)."""
    keys, selected = sa.keys, sa.selected
    if keys is None or selected is None or selected.prf_id is None:
        raise LocalProtocolError("no IKE keys")
    initiator_signs = sa.is_initiator == ours
    if initiator_signs:
        return signed_octets(selected.prf_id, keys.sk_pi, init.request, init.nr, id_body(id_payload))
    return signed_octets(selected.prf_id, keys.sk_pr, init.response, init.ni, id_body(id_payload))


def _authenticated_peer(sa: IkeSa, init: InitExchange, id_payload: IDi | IDr, payloads: list[Payload]) -> Verified:
    """Check the peer's AUTH (and its certificates) and that it is who `remote_id` says. Raises
    RemoteProtocolError with AUTHENTICATION_FAILED, saying why."""
    auth = need(payloads, Auth, "AUTH")
    verifier = peer_verifier(
        sa.config, int(auth.method), wall_time=sa.ctx.wall_clock(), announced_hashes=SIGNATURE_HASHES
    )
    if verifier is None:
        raise RemoteProtocolError(
            f"AUTH method {int(auth.method)} is not allowed (remote_auth={sa.config.remote_auth})",
            notify=NotifyType.AUTHENTICATION_FAILED,
        )
    if sa.selected is None or sa.selected.prf_id is None:
        raise LocalProtocolError("no IKE keys")
    certificates = tuple(p for p in payloads if isinstance(p, Cert))
    octets = _octets(sa, init, ours=False, id_payload=id_payload)
    verified = verifier.verify(sa.selected.prf_id, octets, PeerProof(id_payload, auth, certificates))
    expected = sa.config.remote_id
    if expected is not None and not id_matches(id_payload, expected, verified.certificate):
        raise RemoteProtocolError(
            f"peer identity {id_text(id_payload, verified.certificate)!r} is not remote_id {expected!r}",
            notify=NotifyType.AUTHENTICATION_FAILED,
        )
    return verified


def _authenticator(sa: IkeSa) -> Authenticator:
    return local_authenticator(sa.config, peer_hashes=sa.peer_signature_hashes, peer_certreq=sa.peer_certreq)


def _own_auth(
    sa: IkeSa, init: InitExchange, authenticator: Authenticator, id_payload: IDi | IDr, peer: IDi | IDr | str | None
) -> Auth:
    if sa.selected is None or sa.selected.prf_id is None:
        raise LocalProtocolError("no IKE keys")
    octets = _octets(sa, init, ours=True, id_payload=id_payload)
    return Auth(authenticator.method, authenticator.sign(sa.selected.prf_id, octets, peer))


def _peer_authenticated(sa: IkeSa, id_payload: IDi | IDr, verified: Verified) -> None:
    sa.peer_certificate = verified.certificate
    sa.remote_id_text = id_text(id_payload, verified.certificate)


def _mark_established(sa: IkeSa, now: float) -> None:
    sa.established_at = now
    sa.init = None  # the IKE_SA_INIT messages and nonces are no longer needed
    if sa.config.rekey_time is not None:
        sa.rekey_at = now + sa.config.rekey_time
    sa.ctx.emit(
        IkeSaEstablished(
            ike_sa_id=sa.ike_sa_id, spi_i=sa.spi_i, spi_r=sa.spi_r, is_initiator=sa.is_initiator,
            remote_addr=sa.remote_addr, local_id=sa.config.local_id, remote_id=sa.remote_id_text,
            proposal=sa.proposal_text, udp_encap=sa.natt or sa.nat_detected, connection=sa.config.name,
        )
    )  # fmt: skip


# ---- initiator ---------------------------------------------------------------------------------


class AuthRequest(Request):
    """Our IKE_AUTH request with the offer of the first Child SA."""

    __slots__ = ("offer",)
    exchange_type = ExchangeType.IKE_AUTH

    def __init__(self, offer: ChildOffer) -> None:
        self.offer = offer

    def abandon(self, sa: IkeSa) -> None:
        child_create.release(sa, self.offer)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        init = sa.init
        offer = self.offer
        try:
            if init is None:
                raise LocalProtocolError("IKE_SA_INIT state is gone")
            if find_notify(payloads, NotifyType.AUTHENTICATION_FAILED) is not None:
                raise PeerNotifyError("peer rejected our authentication", notify=NotifyType.AUTHENTICATION_FAILED)
            idr = find(payloads, IDr)
            if idr is None or find(payloads, Auth) is None:
                raise refusal(payloads, "IKE_AUTH") or RemoteProtocolError("IKE_AUTH response without IDr/AUTH")
            try:
                verified = _authenticated_peer(sa, init, idr, payloads)
            except RemoteProtocolError:
                sa.ctx.count("authentication_failed")
                sa.send_final_notice([Notify(NotifyType.AUTHENTICATION_FAILED)])
                raise
        except (RemoteProtocolError, LocalProtocolError):
            child_create.release(sa, offer)
            raise  # the IKE SA fails
        _peer_authenticated(sa, idr, verified)
        mobike.auth_response_seen(sa, payloads)
        ni, nr = init.ni, init.nr
        sa.apply(IkeInput.RECV_AUTH_RESPONSE)
        _mark_established(sa, now)
        refused = refusal(payloads, "first Child SA")
        if refused is not None:
            child_create.release(sa, offer)
            report_error(sa, str(refused), refused)
            return
        try:
            child = child_create.accept_answer(sa, offer, payloads, ni, nr, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            child_create.release(sa, offer)
            report_error(sa, f"first Child SA unusable: {exc}", exc)
            return
        child_create.emit_created(sa, child)
        child_create.request_resources(sa, offer.cfg, child)


def start(sa: IkeSa, now: float, *, natt: bool) -> None:
    """Send our IKE_AUTH request (right after the IKE_SA_INIT response)."""
    init = sa.init
    if init is None:
        raise LocalProtocolError("IKE_SA_INIT state is gone")
    config = sa.config
    if natt:
        # RFC 7296 2.23: switch to port 4500 as soon as a NAT is seen (libipsec peers always fake one);
        # with MOBIKE offered also without one (RFC 4555 3.3)
        sa.natt = True
        sa.remote_addr = (sa.remote_addr[0], config.remote_natt_port)
    authenticator = _authenticator(sa)
    idi = own_id(IDi, config.local_id, authenticator.certificate)
    # RFC 7296 1.2: IDi, [CERT,] [CERTREQ,] [IDr,] AUTH, SAi2, TSi, TSr
    payloads: list[Payload] = [idi, *authenticator.cert_payloads(), *our_certreq(sa)]
    if config.remote_id is not None:
        payloads.append(own_id(IDr, config.remote_id))
    payloads.append(_own_auth(sa, init, authenticator, idi, config.remote_id))
    offer = child_create.make_offer(sa, config.children[0], for_auth=True, rekey_of=None)
    payloads += offer.payloads
    payloads += mobike.auth_request_payloads(sa)  # RFC 4555 3.2
    sa.send_request(AuthRequest(offer), payloads, now)


# ---- responder ---------------------------------------------------------------------------------


def _connection_for(sa: IkeSa, idi: IDi, idr: IDr | None, method: int) -> IkeConfig | None:
    """The connection an authenticating peer is for (connections.py): the best by identities among
    those that match its addresses and accept the IKE proposal IKE_SA_INIT chose."""
    selected = sa.selected
    if selected is None:
        raise LocalProtocolError("no IKE proposal selected")
    chosen = SA([selected.to_wire(b"")])
    found = sa.ctx.connections.for_identity(sa.local_addr[0], sa.remote_addr[0], idi, idr, method)
    return next((c for c in found if c is sa.config or accepts_ike_offer(c, chosen)), None)


def _refuse(sa: IkeSa, why: str, counter: str) -> list[Payload]:
    """End the half-open IKE SA with AUTHENTICATION_FAILED (RFC 7296 2.21.2) and say why in an event."""
    failure = RemoteProtocolError(why, notify=NotifyType.AUTHENTICATION_FAILED)
    sa.ctx.count(counter)
    report_error(sa, why, failure)
    sa.apply(IkeInput.AUTH_FAILED)
    return [error_answer(failure)]


def respond(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload]:
    """Our answer to the peer's IKE_AUTH request."""
    sa.check(IkeInput.RECV_AUTH_REQUEST)
    init = sa.init
    if init is None:
        raise LocalProtocolError("IKE_SA_INIT state is gone")
    idi = need(payloads, IDi, "IDi")
    auth = need(payloads, Auth, "AUTH")
    wanted_idr = find(payloads, IDr)
    record_certreq(sa, payloads)
    config = _connection_for(sa, idi, wanted_idr, int(auth.method))
    if config is None:
        hint = f", IDr {wanted_idr.display()!r}" if wanted_idr is not None else ""
        why = f"no connection for peer {idi.display()!r}{hint} with AUTH method {int(auth.method)}"
        return _refuse(sa, why, "no_matching_connection")
    sa.config = config
    try:
        verified = _authenticated_peer(sa, init, idi, payloads)
    except RemoteProtocolError as exc:
        return _refuse(sa, f"peer authentication failed: {exc}", "authentication_failed")
    try:
        authenticator = _authenticator(sa)
    except LocalProtocolError as exc:  # e.g. an Ed25519 key and a peer without RFC 7427
        return _refuse(sa, f"cannot authenticate ourselves to this peer: {exc}", "local_authentication_impossible")
    _peer_authenticated(sa, idi, verified)
    sa.apply(IkeInput.RECV_AUTH_REQUEST)
    idr = own_id(IDr, sa.config.local_id, authenticator.certificate)
    # RFC 7296 1.2: IDr, [CERT,] AUTH, SAr2, TSi, TSr
    response: list[Payload] = [idr, *authenticator.cert_payloads(), _own_auth(sa, init, authenticator, idr, idi)]
    response += mobike.auth_request_seen(sa, payloads)
    ni, nr = init.ni, init.nr
    _mark_established(sa, now)
    if find(payloads, SA) is None:
        return response
    try:
        child, answer = child_create.answer_offer(sa, payloads, ni, nr, for_auth=True, now=now, names=None)
    except RemoteProtocolError as exc:
        report_error(sa, f"first Child SA refused: {exc}", exc)
        return response + [error_answer(exc)]
    child_create.emit_created(sa, child)
    return response + answer
