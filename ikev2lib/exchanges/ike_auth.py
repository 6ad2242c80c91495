"""IKE_AUTH (RFC 7296 1.2, 2.15), both roles: identities, AUTH through `ikev2lib.auth`, and the first
Child SA (negotiated by `child_create`, created with the IKE SA's keys).

A failed authentication ends the IKE SA; a refused or unusable first Child SA does not (the IKE SA
is up and the user hears of the child's failure as an event).
"""

from __future__ import annotations

from ..auth import local_authenticator, peer_authenticator
from ..crypto import signed_octets
from ..events import IkeSaEstablished
from ..exceptions import LocalProtocolError, PeerNotifyError, RemoteProtocolError
from ..identities import id_body, id_matches, own_id
from ..ike_sa import IkeSa, InitExchange, Request
from ..state import IkeInput
from ..wire import SA, Auth, ExchangeType, IDi, IDr, NotifyType, Payload
from . import child_create
from .child_create import ChildOffer
from .common import error_answer, find, find_notify, need, refusal, report_error

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


def _verify(sa: IkeSa, init: InitExchange, id_payload: IDi | IDr, auth: Auth) -> bool:
    verifier = peer_authenticator(sa.config, int(auth.method))
    if verifier is None or sa.selected is None or sa.selected.prf_id is None:
        return False
    octets = _octets(sa, init, ours=False, id_payload=id_payload)
    return verifier.verify(sa.selected.prf_id, octets, id_payload, bytes(auth.data))


def _own_auth(sa: IkeSa, init: InitExchange, id_payload: IDi | IDr, peer: IDi | IDr | str | None) -> Auth:
    authenticator = local_authenticator(sa.config)
    if sa.selected is None or sa.selected.prf_id is None:
        raise LocalProtocolError("no IKE keys")
    octets = _octets(sa, init, ours=True, id_payload=id_payload)
    return Auth(authenticator.method, authenticator.sign(sa.selected.prf_id, octets, peer))


def _mark_established(sa: IkeSa, now: float) -> None:
    sa.established_at = now
    sa.init = None  # the IKE_SA_INIT messages and nonces are no longer needed
    if sa.config.rekey_time is not None:
        sa.rekey_at = now + sa.config.rekey_time
    sa.ctx.emit(
        IkeSaEstablished(
            ike_sa_id=sa.ike_sa_id, spi_i=sa.spi_i, spi_r=sa.spi_r, is_initiator=sa.is_initiator,
            remote_addr=sa.remote_addr, local_id=sa.config.local_id, remote_id=sa.remote_id_text,
            proposal=sa.proposal_text, udp_encap=sa.natt or sa.nat_detected,
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
            auth = find(payloads, Auth)
            if idr is None or auth is None:
                raise refusal(payloads, "IKE_AUTH") or RemoteProtocolError("IKE_AUTH response without IDr/AUTH")
            if sa.config.remote_id is not None and not id_matches(idr, sa.config.remote_id):
                raise RemoteProtocolError("peer identity does not match remote_id", notify=NotifyType.AUTHENTICATION_FAILED)
            if not _verify(sa, init, idr, auth):
                raise RemoteProtocolError("peer AUTH payload does not verify", notify=NotifyType.AUTHENTICATION_FAILED)
        except (RemoteProtocolError, LocalProtocolError):
            child_create.release(sa, offer)
            raise  # the IKE SA fails
        sa.remote_id_text = idr.display()
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


def start(sa: IkeSa, now: float, *, natt: bool) -> None:
    """Send our IKE_AUTH request (right after the IKE_SA_INIT response)."""
    init = sa.init
    if init is None:
        raise LocalProtocolError("IKE_SA_INIT state is gone")
    config = sa.config
    if natt:
        # RFC 7296 2.23: switch to port 4500 as soon as a NAT is seen (libipsec peers always fake one)
        sa.natt = True
        sa.remote_addr = (sa.remote_addr[0], config.remote_natt_port)
    idi = own_id(IDi, config.local_id)
    payloads: list[Payload] = [idi]
    if config.remote_id is not None:
        payloads.append(own_id(IDr, config.remote_id))
    payloads.append(_own_auth(sa, init, idi, config.remote_id))
    offer = child_create.make_offer(sa, config.children[0], for_auth=True, rekey_of=None)
    payloads += offer.payloads
    sa.send_request(AuthRequest(offer), payloads, now)


# ---- responder ---------------------------------------------------------------------------------


def respond(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload]:
    """Our answer to the peer's IKE_AUTH request."""
    sa.check(IkeInput.RECV_AUTH_REQUEST)
    init = sa.init
    if init is None:
        raise LocalProtocolError("IKE_SA_INIT state is gone")
    idi = need(payloads, IDi, "IDi")
    auth = need(payloads, Auth, "AUTH")
    wanted_idr = find(payloads, IDr)
    ok = _verify(sa, init, idi, auth)
    if sa.config.remote_id is not None and not id_matches(idi, sa.config.remote_id):
        ok = False
    if wanted_idr is not None and not id_matches(wanted_idr, sa.config.local_id):
        ok = False
    if not ok:
        failure = RemoteProtocolError("peer authentication failed", notify=NotifyType.AUTHENTICATION_FAILED)
        sa.ctx.count("authentication_failed")
        report_error(sa, str(failure), failure)
        sa.apply(IkeInput.AUTH_FAILED)
        return [error_answer(failure)]
    sa.remote_id_text = idi.display()
    sa.apply(IkeInput.RECV_AUTH_REQUEST)
    idr = own_id(IDr, sa.config.local_id)
    response: list[Payload] = [idr, _own_auth(sa, init, idr, idi)]
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
