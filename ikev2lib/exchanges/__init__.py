"""The exchanges of an IKE SA, one module each, and the routing between them and the message layer.

    ike_init        IKE_SA_INIT, both roles
    ike_auth        IKE_AUTH, both roles (authentication methods: ikev2lib.auth)
    child_create    Child SAs: create and rekey, both roles, in IKE_AUTH and CREATE_CHILD_SA
    ike_rekey       IKE SA rekey, both roles, with simultaneous-rekey resolution
    informational   Delete, DPD, INVALID_MESSAGE_ID reports, both roles
    mobike          RFC 4555: address updates, address lists, return routability checks, both roles
    redirect        RFC 5685 redirects, gateway and client
    timed           rekeys on time, Child SA lifetimes, DPD scheduling

The endpoint calls only the functions below. A request from the peer goes to the responder of its
exchange type (`_RESPONDERS`); a queued local operation to the starter of its type (`start_operation`).
Errors from a responder become the Notify of our answer here, in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from ..events import Address, ProtocolErrorEvent
from ..exceptions import LocalProtocolError, RemoteProtocolError
from ..ike_sa import IkeSa, IncomingRequest
from ..operations import (
    CheckPeerAddress,
    CreateChild,
    DeleteChild,
    DeleteIke,
    Operation,
    RekeyChild,
    Redirect,
    RekeyIke,
    ReportInvalidMessageId,
    SendAddressList,
    SendDpd,
    UpdateSaAddresses,
)
from ..state import ChildState, IkeInput, IkeState
from ..wire import SA, EncryptedFragment, ExchangeType, Message, Nonce, NotifyType, Payload, ProtocolId
from . import child_create, ike_auth, ike_init, ike_rekey, informational, mobike, redirect, timed
from .common import error_answer, need

__all__ = [
    "initiate",
    "accept_sa_init",
    "accepts_ike_offer",
    "receive",
    "pump",
    "start_operation",
    "next_deadline",
    "on_timer",
]


def initiate(sa: IkeSa, now: float) -> None:
    """Start a new IKE SA as initiator (IKE_SA_INIT, then IKE_AUTH with the first Child SA)."""
    ike_init.start(sa, now)


accepts_ike_offer = ike_init.accepts_ike_offer


def accept_sa_init(sa: IkeSa, message: Message, data: bytes, now: float) -> None:
    """Answer an IKE_SA_INIT request on a fresh responder IKE SA (raises before changing anything)."""
    ike_init.accept_request(sa, message, data, now)


# ---- requests from the peer --------------------------------------------------------------------


def _respond_create_child_sa(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload]:
    if sa.state in (IkeState.REKEYED, IkeState.DELETING):
        # RFC 7296 2.25: an IKE SA being replaced or deleted takes no new work
        raise RemoteProtocolError("IKE SA is going away", notify=NotifyType.TEMPORARY_FAILURE)
    sa.check(IkeInput.RECV_CREATE_CHILD_REQUEST)
    sa_payload = need(payloads, SA, "SA")
    ni = bytes(need(payloads, Nonce, "Nonce").data)
    if sa_payload.proposals and all(int(p.protocol_id) == ProtocolId.IKE for p in sa_payload.proposals):
        return ike_rekey.respond(sa, sa_payload, ni, payloads, now)
    return child_create.respond(sa, payloads, ni, now)


Responder = Callable[[IkeSa, list[Payload], float], list[Payload]]
_RESPONDERS: dict[int, Responder] = {
    ExchangeType.IKE_AUTH: ike_auth.respond,
    ExchangeType.CREATE_CHILD_SA: _respond_create_child_sa,
    ExchangeType.INFORMATIONAL: informational.respond,
}


def receive(sa: IkeSa, data: bytes, message: Message, addr: Address, natt: bool, now: float) -> None:
    """One message for `sa`: answers reach their request object inside the message layer; a new
    request from the peer is answered here. Raises only RemoteProtocolError (the datagram is dropped)."""
    incoming = sa.receive(data, message, addr, natt, now)
    if incoming is not None:
        _answer(sa, incoming, now)
    elif not message.is_response and message.message_id == sa.mobike_update_mid:
        last = message.payloads[-1] if message.payloads else None
        if not isinstance(last, EncryptedFragment):  # a whole message: answered from the cache, so authentic
            mobike.update_retransmitted(sa, addr, sa.ctx.arrived_at, now)


def _answer(sa: IkeSa, request: IncomingRequest, now: float) -> None:
    exchange = request.exchange_type
    was_established = sa.state == IkeState.ESTABLISHED
    try:
        responder = _RESPONDERS.get(exchange)
        if responder is None:
            raise RemoteProtocolError(f"unsupported exchange type {exchange}")
        sa.request_source = (request.addr, request.natt, request.local_ip)
        response = responder(sa, request.payloads, now)
    except (RemoteProtocolError, LocalProtocolError) as exc:
        notify = error_answer(exc)
        response = [notify]
        sa.ctx.emit(
            ProtocolErrorEvent(
                ike_sa_id=sa.ike_sa_id, remote_addr=sa.remote_addr, description=str(exc), notify=int(notify.notify_type)
            )
        )
        # a failed IKE_AUTH ends the SA it was setting up (with the deletion events if the user saw
        # it); a stray IKE_AUTH on an SA that was already established only gets the error answer
        if exchange == ExchangeType.IKE_AUTH and not was_established:
            sa.fail(now, reason=str(exc))
    finally:
        sa.request_source = None
    sa.send_response(
        exchange, request.message_id, response, request.data, to=(request.addr, request.natt), source=request.local_ip
    )
    if sa.peer_deleted:
        sa.close(now, reason="deleted by peer", by_peer=True, terminal=IkeInput.RECV_DELETE)


# ---- our own requests --------------------------------------------------------------------------


def start_operation(sa: IkeSa, operation: Operation, now: float) -> None:
    """Start one queued local request (skipped if it no longer applies)."""
    if isinstance(operation, DeleteIke):
        informational.start_ike_delete(sa, now)  # also an old (rekeyed) IKE SA sends its own Delete
        return
    if sa.state != IkeState.ESTABLISHED:
        return
    match operation:
        case CreateChild(config=config, resource=resource):
            child_create.start(sa, config, None, now, resource=resource)
        case RekeyChild(child_id=child_id):
            child = sa.children.get(child_id)
            child_config = None if child is None else sa.find_child_config(child.config_name)
            if child is not None and child_config is not None and child.state == ChildState.INSTALLED:
                child_create.start(sa, child_config, child, now)
        case DeleteChild(child_id=child_id):
            informational.start_child_delete(sa, child_id, now)
        case RekeyIke():
            ike_rekey.start(sa, now)
        case SendDpd():
            informational.start_dpd(sa, now)
        case ReportInvalidMessageId(message_id=message_id):
            informational.start_invalid_mid_report(sa, message_id, now)
        case UpdateSaAddresses():
            mobike.start_update(sa, operation, now)
        case SendAddressList():
            mobike.start_address_list(sa, now)
        case CheckPeerAddress():
            mobike.start_check(sa, operation, now)
        case Redirect(gateway=gateway):
            redirect.start(sa, gateway, now)
        case _:
            assert_never(operation)


def pump(sa: IkeSa, now: float) -> None:
    """Start queued requests, then timed work, while the request window is free. NAT keepalives are
    no requests: they go out whatever the window."""
    if sa.state == IkeState.ESTABLISHED:
        sa.send_keepalive_if_due(now)
    while sa.window_free and sa.state in (IkeState.ESTABLISHED, IkeState.REKEYED):
        operation = sa.next_operation()
        if operation is None:
            break
        start_operation(sa, operation, now)
    if sa.window_free and sa.state == IkeState.ESTABLISHED:
        timed.start_due_work(sa, now)


# ---- timers ------------------------------------------------------------------------------------


def next_deadline(sa: IkeSa) -> float | None:
    deadline = sa.message_deadline()
    if sa.state == IkeState.ESTABLISHED:
        candidates = [sa.keepalive_deadline(), timed.next_deadline(sa) if sa.window_free else None]
        for work in candidates:
            if work is not None and (deadline is None or work < deadline):
                deadline = work
    return deadline


def on_timer(sa: IkeSa, now: float) -> None:
    if sa.handle_message_timer(now):
        pump(sa, now)
