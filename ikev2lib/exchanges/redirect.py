"""RFC 5685 redirect, both roles: a gateway sends its client to another gateway, during IKE_SA_INIT
(unauthenticated, bound to the client's nonce) or on an established IKE SA (an authenticated
INFORMATIONAL); the client goes there, naming where it came from (REDIRECTED_FROM).

Client: IKE_SA_INIT carries REDIRECT_SUPPORTED (or REDIRECTED_FROM after a redirect) when
`IkeConfig.follow_redirects`. A REDIRECT in the IKE_SA_INIT response must carry our Ni and come from
the address we sent to, otherwise it is not an answer to us and is dropped (anyone can forge an
unprotected message); the same IKE SA (same handle) then starts over towards the new gateway. A
REDIRECT in an INFORMATIONAL is answered, the old IKE SA is deleted and a new one starts towards the
new gateway with the same connection (break before make, as a client that leaves a gateway should:
the old gateway deletes it anyway). An FQDN cannot be resolved by a sans-IO engine: the attempt ends
and `IkeSaRedirected` carries what the user needs to initiate there (`redirection`). More than
MAX_REDIRECTS within REDIRECT_LOOP_PERIOD seconds is a loop: the client stops following (strongSwan's
defaults).

Gateway: `IkeEndpoint(redirect=...)` decides per IKE_SA_INIT (the endpoint answers statelessly);
`IkeEndpoint.redirect_ike_sa` redirects an established client that announced support. A client
that does not delete its IKE SA within REDIRECT_DELETE_DELAY seconds after answering is deleted.
"""

from __future__ import annotations

import hmac

from ..events import Address, IkeSaRedirected, ProtocolErrorEvent, Redirection
from ..exceptions import ParseError, RemoteProtocolError
from ..ike_sa import IkeSa, InitExchange, Request
from ..operations import DeleteIke
from ..wire import ExchangeType, Notify, NotifyType, Payload
from ..wire.redirect import Gateway, decode, encode
from .common import find_notify, new_nonce

__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_LOOP_PERIOD",
    "REDIRECT_DELETE_DELAY",
    "sa_init_notifies",
    "sa_init_redirect",
    "sa_init_answer",
    "follow_in_sa_init",
    "receive_informational",
    "start",
]

MAX_REDIRECTS = 5  # redirects a client follows within REDIRECT_LOOP_PERIOD (strongSwan: max_redirects)
REDIRECT_LOOP_PERIOD = 300.0  # seconds (strongSwan's redirect loop detection period)
REDIRECT_DELETE_DELAY = 30.0  # seconds a redirected client has to delete its IKE SA before we do


# ---- client ------------------------------------------------------------------------------------


def sa_init_notifies(sa: IkeSa) -> list[Payload]:
    """What our IKE_SA_INIT request says about redirects (RFC 5685 4.1, 4.3)."""
    if not sa.config.follow_redirects:
        return []
    sa.accepts_redirect = True
    if sa.redirection is not None:
        data = encode(Gateway.parse(sa.redirection.from_gateway))
        return [Notify(NotifyType.REDIRECTED_FROM, data=data)]
    return [Notify(NotifyType.REDIRECT_SUPPORTED)]


def sa_init_redirect(sa: IkeSa, init: InitExchange, payloads: list[Payload], addr: Address) -> Gateway | None:
    """The gateway of a REDIRECT in an IKE_SA_INIT response, if the response carries one. Raises
    RemoteProtocolError for one that is not an answer to our request (wrong source, wrong nonce,
    malformed): the caller drops it and keeps waiting for the real answer."""
    notify = find_notify(payloads, NotifyType.REDIRECT)
    if notify is None:
        return None
    if not sa.accepts_redirect:
        raise RemoteProtocolError("REDIRECT although we did not announce REDIRECT_SUPPORTED")
    if addr[0] != sa.remote_addr[0]:
        raise RemoteProtocolError(f"REDIRECT from {addr[0]}, not from the gateway we asked")
    gateway, nonce = decode(bytes(notify.data))
    if not hmac.compare_digest(nonce, init.ni):  # RFC 5685 8.1: binds the redirect to our request
        raise RemoteProtocolError("REDIRECT without our nonce")
    return gateway


def _recent(sa: IkeSa, now: float) -> tuple[float, ...]:
    times = sa.redirection.times if sa.redirection is not None else ()
    return tuple(t for t in times if now - t < REDIRECT_LOOP_PERIOD)


def _loop(sa: IkeSa, gateway: Gateway, now: float) -> bool:
    if len(_recent(sa, now)) < MAX_REDIRECTS:
        return False
    sa.ctx.count("redirect_loops")
    sa.ctx.emit(
        ProtocolErrorEvent(
            ike_sa_id=sa.ike_sa_id, remote_addr=sa.remote_addr, notify=int(NotifyType.REDIRECT), received=True,
            description=f"redirect to {gateway} refused: {MAX_REDIRECTS} redirects within {REDIRECT_LOOP_PERIOD:.0f} s",
        )
    )  # fmt: skip
    return True


def _redirection(sa: IkeSa, now: float) -> Redirection:
    return Redirection(from_gateway=sa.remote_addr[0], times=(*_recent(sa, now), now))


def follow_in_sa_init(sa: IkeSa, gateway: Gateway, now: float) -> Address | None:
    """A valid REDIRECT answered our IKE_SA_INIT: the address to start over at, or None when the
    attempt ends here (a loop; or an FQDN, which the user resolves: see IkeSaRedirected)."""
    sa.ctx.count("redirects_followed")
    if _loop(sa, gateway, now):
        sa.fail(now, reason=f"redirect loop (not following to {gateway})")
        return None
    redirection = _redirection(sa, now)
    old = sa.remote_addr
    target = (gateway.value, sa.ike_port) if gateway.is_address else None
    sa.ctx.emit(
        IkeSaRedirected(
            ike_sa_id=sa.ike_sa_id, gateway=gateway.value, old_addr=old, remote_addr=target,
            new_ike_sa_id=sa.ike_sa_id if target is not None else None, redirection=redirection,
        )
    )  # fmt: skip
    if target is None:
        sa.fail(now, reason=f"redirected to {gateway}")
        return None
    sa.redirection = redirection
    sa.remote_addr = target
    sa.natt = False
    sa.init = InitExchange(ni=new_nonce())
    return target


def receive_informational(sa: IkeSa, payloads: list[Payload], now: float) -> None:
    """A REDIRECT in the gateway's INFORMATIONAL request (authenticated: it came through SK). Our
    answer is empty either way; following means deleting this IKE SA and starting one there."""
    notify = find_notify(payloads, NotifyType.REDIRECT)
    if notify is None:
        return
    if not sa.accepts_redirect:
        sa.ctx.count("redirects_ignored")  # we never offered to follow one
        return
    try:
        gateway, _ = decode(bytes(notify.data))
    except ParseError:
        sa.ctx.count("malformed_redirects")
        return
    sa.ctx.count("redirects_followed")
    if _loop(sa, gateway, now):
        return
    redirection = _redirection(sa, now)
    sa.enqueue_front(DeleteIke())
    sa.ctx.redirects.append((sa, gateway, redirection))  # the endpoint starts the new IKE SA


# ---- gateway -----------------------------------------------------------------------------------


def sa_init_answer(gateway: Gateway, ni: bytes) -> Notify:
    """The REDIRECT answering an IKE_SA_INIT request (RFC 5685 8.1: with the initiator's nonce)."""
    return Notify(NotifyType.REDIRECT, data=encode(gateway, ni))


class _RedirectRequest(Request):
    __slots__ = ()
    exchange_type = ExchangeType.INFORMATIONAL

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        # the client acknowledged; it should delete this IKE SA now, and if not, we do
        sa.delete_at = now + REDIRECT_DELETE_DELAY


def start(sa: IkeSa, gateway: Gateway, now: float) -> None:
    """Redirect an established client (RFC 5685 6: an INFORMATIONAL with REDIRECT, no nonce)."""
    sa.ctx.count("redirects_sent")
    sa.send_request(_RedirectRequest(), [Notify(NotifyType.REDIRECT, data=encode(gateway))], now)
