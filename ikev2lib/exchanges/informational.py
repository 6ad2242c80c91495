"""INFORMATIONAL (RFC 7296 1.4), both roles: deleting Child SAs and IKE SAs, liveness checks (DPD),
and reports of refused message IDs (3.10.1). MOBIKE's notifies (RFC 4555) go to `mobike.respond`, a
gateway's REDIRECT (RFC 5685) to `redirect`.
"""

from __future__ import annotations

from ..child_sa import ChildSa
from ..exceptions import PeerNotifyError
from ..ike_sa import IkeSa, Request
from ..state import ChildInput, ChildState, IkeInput, IkeState
from ..wire import Delete, ExchangeType, Notify, NotifyType, Payload, ProtocolId
from . import ike_rekey, mobike, redirect
from .common import find_notify, report_error

__all__ = ["start_child_delete", "start_ike_delete", "start_dpd", "start_invalid_mid_report", "respond"]

_U32 = 0xFFFFFFFF


class _ChildDeleteRequest(Request):
    __slots__ = ("child",)
    exchange_type = ExchangeType.INFORMATIONAL

    def __init__(self, child: ChildSa) -> None:
        self.child = child

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        if self.child.child_id in sa.children:
            sa.drop_child(self.child, by_peer=False, event=ChildInput.RECV_DELETE_RESPONSE)


class _IkeDeleteRequest(Request):
    __slots__ = ()
    exchange_type = ExchangeType.INFORMATIONAL

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        sa.close(now, reason="deleted", by_peer=False, terminal=IkeInput.RECV_DELETE_RESPONSE)


class _EmptyRequest(Request):
    """A request whose answer carries nothing we act on (DPD, INVALID_MESSAGE_ID report): that an
    authentic answer came is all (the message layer already noted the peer is alive)."""

    __slots__ = ()
    exchange_type = ExchangeType.INFORMATIONAL

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        return


def start_child_delete(sa: IkeSa, child_id: int, now: float) -> None:
    child = sa.children.get(child_id)
    if child is None or child.state not in (ChildState.INSTALLED, ChildState.REKEYED):
        return  # gone or busy meanwhile
    child.apply(ChildInput.SEND_DELETE)
    sa.send_request(_ChildDeleteRequest(child), [Delete(ProtocolId.ESP, [child.spi_in])], now)


def start_ike_delete(sa: IkeSa, now: float) -> None:
    if sa.state not in (IkeState.ESTABLISHED, IkeState.REKEYED):
        return
    sa.apply(IkeInput.SEND_DELETE)
    sa.send_request(_IkeDeleteRequest(), [Delete(ProtocolId.IKE, [])], now)


def start_dpd(sa: IkeSa, now: float) -> None:
    sa.send_request(_EmptyRequest(), [], now)


def start_invalid_mid_report(sa: IkeSa, message_id: int, now: float) -> None:
    notify = Notify(NotifyType.INVALID_MESSAGE_ID, data=(message_id & _U32).to_bytes(4, "big"))
    sa.send_request(_EmptyRequest(), [notify], now)


def respond(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload]:
    """Our answer to the peer's INFORMATIONAL request."""
    sa.check(IkeInput.RECV_INFORMATIONAL_REQUEST)
    moved = mobike.respond(sa, payloads, now) if sa.state == IkeState.ESTABLISHED else None
    extra: list[Payload] = moved or []
    deletes = [p for p in payloads if isinstance(p, Delete)]
    if find_notify(payloads, NotifyType.AUTHENTICATION_FAILED) is not None:
        # RFC 7296 2.21.2: the initiator could not authenticate us; the IKE SA is dead on its side
        refused = PeerNotifyError("the peer failed to authenticate us", notify=NotifyType.AUTHENTICATION_FAILED)
        report_error(sa, str(refused), refused)
        sa.peer_deleted = True
        return []
    redirect.receive_informational(sa, payloads, now)
    if any(int(d.protocol_id) == ProtocolId.IKE for d in deletes):
        # closed once the (empty) answer is out, so that the answer goes under this SA's keys
        ike_rekey.conclude_before_delete(sa, now)
        sa.peer_deleted = True
        return []
    ours: list[bytes] = []
    for delete in deletes:
        if int(delete.protocol_id) != ProtocolId.ESP:
            continue
        for spi in delete.spis:
            child = next((c for c in sa.children.values() if c.spi_out == bytes(spi)), None)
            if child is None:
                continue
            ours.append(child.spi_in)
            sa.drop_child(child, by_peer=True, event=ChildInput.RECV_DELETE)
    return ([Delete(ProtocolId.ESP, ours)] if ours else []) + extra
