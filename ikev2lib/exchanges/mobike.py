"""MOBIKE (RFC 4555), both roles: moving an IKE SA and its Child SAs to a new address pair.

    IKE_AUTH        MOBIKE_SUPPORTED both ways (the responder answers it only if the initiator sent it,
                    and only if its own connection has `mobike`), with our address list when known
    initiator       `local_addresses_changed`: the original initiator whose address went away picks
                    the first listed address of its family and sends UPDATE_SA_ADDRESSES, NAT_DETECTION_*
                    for the new path, COOKIE2 and its address list from there (3.5). The SA sends from the
                    new address at once (also the retransmissions of a request already in flight, 3.5);
                    the authentic answer echoing COOKIE2 commits the move (NAT re-check, event).
                    Unanswered on the peer's address, the update tries the peer's additional addresses
                    in turn (PATH_TRIES transmissions each, 3.5 "picks a working path").
    either role     only the list changed: ADDITIONAL_*_ADDRESS / NO_ADDITIONAL_ADDRESSES (3.6)
    responder       UPDATE_SA_ADDRESSES, from the original initiator only: NO_NATS_ALLOWED
                    (UNEXPECTED_NAT_DETECTED), `remote_addrs` (UNACCEPTABLE_ADDRESSES), NAT re-check, our
                    NAT_DETECTION_* and the COOKIE2 echo, answered to where it came from. A new peer
                    address is first checked (return routability, 3.7 / 5.2): our own INFORMATIONAL with a
                    fresh COOKIE2 goes there, and only its authentic answer echoing it, from there,
                    moves the IKE SA and its Child SAs. Until then both stay on the old path.

Decisions where the RFC leaves room (strongSwan's ike_mobike.c for reference):
- A return routability check that is never answered gives up after ROUTABILITY_CHECK_TRIES
  retransmissions and the IKE SA stays where it was, alive (a forged or rewritten source address
  cannot kill it); a ProtocolErrorEvent says so. strongSwan does no such check as responder.
- A byte-identical retransmission of the last UPDATE_SA_ADDRESSES from yet another address (when no
  check runs) starts a check of that address: if an on-path attacker rewrote the source of the first
  copy, the peer's own retransmission still gets its path checked and followed.
- The NAT state after a move comes from the answer that commits it (the initiator: the update's
  answer; the responder: the check's answer, whose NAT_DETECTION_* describe exactly that path).
- An answer with a wrong or missing COOKIE2 commits nothing and ends nothing (strongSwan closes the
  IKE SA): a ProtocolErrorEvent reports it.
- UPDATE_SA_ADDRESSES from the original responder, or on an SA without MOBIKE, is ignored (counted).
- Retransmissions of one update to the peer's other addresses carry the same message, whose
  NAT_DETECTION_DESTINATION_IP was computed for the peer's first address (as strongSwan's do).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Iterable

from ..addresses import parse_address, selectors_rank
from ..events import Address, IkeSaAddressesUpdated
from ..exceptions import LocalProtocolError, PeerNotifyError, RemoteProtocolError
from ..ike_sa import IkeSa, Request
from ..operations import CheckPeerAddress, SendAddressList, UpdateSaAddresses
from ..wire import ExchangeType, Notify, NotifyType, Payload
from .common import error_notifies, find_notify, nat_seen, natd_notifies, report_error

__all__ = [
    "MAX_PEER_ADDRESSES",
    "MAX_LISTED_ADDRESSES",
    "COOKIE2_SIZE",
    "PATH_TRIES",
    "ROUTABILITY_CHECK_TRIES",
    "usable_addresses",
    "auth_request_payloads",
    "auth_request_seen",
    "auth_response_seen",
    "local_addresses_changed",
    "start_update",
    "start_address_list",
    "start_check",
    "respond",
    "update_retransmitted",
]

MAX_PEER_ADDRESSES = 16  # the peer's ADDITIONAL_*_ADDRESS kept (more are counted and ignored)
MAX_SENT_ADDRESSES = 8  # ours we announce (strongSwan announces 8 and accepts no more than that)
MAX_LISTED_ADDRESSES = 64  # addresses of `local_addresses_changed` looked at
COOKIE2_SIZE = 16  # our COOKIE2 (as strongSwan); RFC 4555 3.10: 8 to 64 octets
MIN_COOKIE2, MAX_COOKIE2 = 8, 64
PATH_TRIES = 2  # transmissions of an UPDATE_SA_ADDRESSES to each peer address before the next one
ROUTABILITY_CHECK_TRIES = 3  # retransmissions of a return routability check before it gives up

_U = NotifyType
_ADDRESS_SIZES = {int(_U.ADDITIONAL_IP4_ADDRESS): 4, int(_U.ADDITIONAL_IP6_ADDRESS): 16}
# an INFORMATIONAL request with one of these is (also) MOBIKE's (strongSwan's list)
_REQUEST_NOTIFIES = frozenset(int(t) for t in (
    _U.UPDATE_SA_ADDRESSES, _U.ADDITIONAL_IP4_ADDRESS, _U.ADDITIONAL_IP6_ADDRESS, _U.NO_ADDITIONAL_ADDRESSES,
    _U.COOKIE2, _U.NO_NATS_ALLOWED, _U.NAT_DETECTION_SOURCE_IP, _U.NAT_DETECTION_DESTINATION_IP,
))  # fmt: skip


# ---- addresses -----------------------------------------------------------------------------------


def usable_addresses(addresses: Iterable[object]) -> tuple[str, ...]:
    """The IP addresses of a user's list, normalised, in order, without duplicates or unspecified
    addresses (at most MAX_LISTED_ADDRESSES; anything that is no IP address string is skipped)."""
    found: dict[str, None] = {}
    for value in addresses:
        if len(found) >= MAX_LISTED_ADDRESSES:
            break
        if not isinstance(value, str):
            continue
        try:
            ip = ipaddress.ip_address(value.strip())
        except ValueError:
            continue
        if not ip.is_unspecified:
            found.setdefault(str(ip), None)
    return tuple(found)


def _version(ip: str) -> int:
    return 6 if ":" in ip else 4


def _others(listed: tuple[str, ...], current: str) -> tuple[str, ...]:
    return tuple(a for a in listed if a != current)[:MAX_SENT_ADDRESSES]


def _address_list(sa: IkeSa) -> list[Payload]:
    """ADDITIONAL_IP4/IP6_ADDRESS for our listed addresses other than the SA's, or NO_ADDITIONAL_ADDRESSES."""
    others = _others(sa.local_addresses, sa.local_addr[0])
    if not others:
        return [Notify(_U.NO_ADDITIONAL_ADDRESSES)]
    return [
        Notify(_U.ADDITIONAL_IP6_ADDRESS if _version(a) == 6 else _U.ADDITIONAL_IP4_ADDRESS,
               data=ipaddress.ip_address(a).packed)
        for a in others
    ]  # fmt: skip


def _record_addresses(sa: IkeSa, payloads: list[Payload]) -> None:
    """The peer's ADDITIONAL_*_ADDRESS / NO_ADDITIONAL_ADDRESSES replace its list (RFC 4555 3.6).
    A malformed address is counted and skipped; beyond MAX_PEER_ADDRESSES they are ignored."""
    listed: list[str] | None = None
    for p in payloads:
        if not isinstance(p, Notify):
            continue
        kind = int(p.notify_type)
        if kind == _U.NO_ADDITIONAL_ADDRESSES:
            listed = listed if listed is not None else []
        elif kind in _ADDRESS_SIZES:
            listed = listed if listed is not None else []
            data = bytes(p.data)
            if len(data) != _ADDRESS_SIZES[kind]:
                sa.ctx.count("mobike_malformed_addresses")
                continue
            if len(listed) >= MAX_PEER_ADDRESSES:
                sa.ctx.count("mobike_addresses_ignored")
                continue
            ip = str(ipaddress.ip_address(data))
            if ip not in listed and ip != sa.remote_addr[0]:
                listed.append(ip)
    if listed is not None:
        sa.peer_additional_addresses = tuple(listed)


def _our_address(sa: IkeSa, natt: bool | None = None) -> Address:
    """Our address as the peer sends to it: the SA's IP, on the NAT-T port when IKE runs there."""
    on_natt = sa.natt if natt is None else natt
    return (sa.local_addr[0], sa.ctx.natt_port if on_natt else sa.local_addr[1])


def _first_of_family(listed: tuple[str, ...], like: str, skip: tuple[str, ...] = ()) -> str | None:
    return next((a for a in listed if _version(a) == _version(like) and a not in skip), None)


def _acceptable(sa: IkeSa, ip: str) -> bool:
    try:
        return selectors_rank(sa.config.remote_addrs, parse_address(ip)) > 0
    except ValueError:
        return False


# ---- IKE_AUTH ------------------------------------------------------------------------------------


def auth_request_payloads(sa: IkeSa) -> list[Payload]:
    """What our IKE_AUTH request adds: MOBIKE_SUPPORTED (and our address list, when known)."""
    if not sa.config.mobike:
        return []
    return [Notify(_U.MOBIKE_SUPPORTED), *(_address_list(sa) if sa.local_addresses else [])]


def auth_request_seen(sa: IkeSa, payloads: list[Payload]) -> list[Payload]:
    """Responder, once the connection is chosen: MOBIKE if both want it; what our answer adds."""
    sa.peer_mobike = sa.config.mobike and find_notify(payloads, _U.MOBIKE_SUPPORTED) is not None
    if not sa.peer_mobike:
        return []
    _record_addresses(sa, payloads)
    return [Notify(_U.MOBIKE_SUPPORTED), *(_address_list(sa) if sa.local_addresses else [])]


def auth_response_seen(sa: IkeSa, payloads: list[Payload]) -> None:
    sa.peer_mobike = sa.config.mobike and find_notify(payloads, _U.MOBIKE_SUPPORTED) is not None
    if sa.peer_mobike:
        _record_addresses(sa, payloads)


# ---- moving (both roles commit here) ------------------------------------------------------------


def _move_local(sa: IkeSa, ip: str) -> None:
    if sa.mobike_old_local is None:
        sa.mobike_old_local = sa.local_addr
    sa.local_addr = (ip, sa.local_addr[1])
    sa.next_keepalive = None  # keepalives (if any) restart from the new address


def _commit(sa: IkeSa, remote: Address) -> None:
    """The move is confirmed: the new address pair and the NAT state (already set) take effect."""
    old_local = sa.mobike_old_local or sa.local_addr
    old_remote = sa.remote_addr
    sa.remote_addr = remote
    sa.mobike_old_local = None
    encap = sa.nat_detected
    encap_changed = False
    for child in sa.children.values():
        if child.udp_encap != encap:
            child.udp_encap = encap
            encap_changed = True
    sa.next_keepalive = None  # rescheduled by the next pump if we are now behind a NAT
    if old_local == sa.local_addr and old_remote == remote and not encap_changed:
        return
    sa.ctx.count("mobike_moves")
    sa.ctx.touch(sa)
    if not sa.hidden:
        sa.ctx.emit(
            IkeSaAddressesUpdated(
                ike_sa_id=sa.ike_sa_id, old_local_addr=old_local, local_addr=sa.local_addr,
                old_remote_addr=old_remote, remote_addr=remote, udp_encap=encap,
            )
        )  # fmt: skip


def _nat_recheck(sa: IkeSa, payloads: list[Payload], local: Address, remote: Address) -> None:
    nat = nat_seen(sa, payloads, sa.spi_r, local, remote)
    if nat is not None:  # without NAT_DETECTION_* the NAT state stays as it was
        sa.nat_detected = nat or sa.config.encap


def _cookie_echoed(payloads: list[Payload], cookie: bytes) -> bool:
    echo = find_notify(payloads, _U.COOKIE2)
    return echo is not None and hmac.compare_digest(bytes(echo.data), cookie)


# ---- initiator -----------------------------------------------------------------------------------


def local_addresses_changed(sa: IkeSa, listed: tuple[str, ...], now: float) -> None:
    """The user's new list of our addresses (`IkeEndpoint.local_addresses_changed`)."""
    old = sa.local_addresses
    sa.local_addresses = listed
    if not sa.peer_mobike:
        return
    current = sa.local_addr[0]
    if current not in listed:
        if not sa.original_initiator:
            return  # RFC 4555 3.1: the initiator decides; we wait for its update
        candidate = _first_of_family(listed, current)
        if candidate is None:
            sa.ctx.count("mobike_no_usable_address")  # nothing to send from: a later list may have one
            return
        _move_local(sa, candidate)
        if not sa.has_queued(UpdateSaAddresses):
            sa.enqueue_front(UpdateSaAddresses())
        return
    if _others(old, current) != _others(listed, current) and not sa.has_queued(SendAddressList):
        try:
            sa.enqueue(SendAddressList())
        except LocalProtocolError:  # the queue is full: the next list change tells the peer
            sa.ctx.count("mobike_address_list_dropped")


class _UpdateRequest(Request):
    """Our UPDATE_SA_ADDRESSES (RFC 4555 3.5)."""

    __slots__ = ("cookie", "paths", "tried")
    exchange_type = ExchangeType.INFORMATIONAL

    def __init__(self, cookie: bytes, paths: list[Address], tried: tuple[str, ...]) -> None:
        self.cookie = cookie
        self.paths = paths  # the peer's address first, then its additional addresses
        self.tried = tried

    def destination(self, sa: IkeSa, attempt: int) -> Address | None:
        return self.paths[(attempt // PATH_TRIES) % len(self.paths)]

    def tries(self, sa: IkeSa) -> int:
        return max(sa.config.retransmit.tries, PATH_TRIES * len(self.paths) - 1)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        errors = error_notifies(payloads)
        if any(int(e.notify_type) == _U.UNACCEPTABLE_ADDRESSES for e in errors):
            tried = self.tried + (sa.local_addr[0],)
            candidate = _first_of_family(sa.local_addresses, sa.local_addr[0], tried)
            sa.ctx.count("mobike_unacceptable_addresses")
            if candidate is not None:
                _move_local(sa, candidate)
                sa.enqueue_front(UpdateSaAddresses(tried))
                return
        if errors:
            refused = PeerNotifyError(f"UPDATE_SA_ADDRESSES refused: {errors[0]!r}", notify=int(errors[0].notify_type))
            report_error(sa, str(refused), refused)
            return
        if not _cookie_echoed(payloads, self.cookie):
            sa.ctx.count("mobike_cookie2_mismatch")
            report_error(sa, "UPDATE_SA_ADDRESSES answer without our COOKIE2: the IKE SA does not move")
            return
        remote = sa.response_source or sa.remote_addr  # the path that answered
        _nat_recheck(sa, payloads, _our_address(sa), remote)
        _record_addresses(sa, payloads)
        _commit(sa, remote)


def _paths(sa: IkeSa) -> list[Address]:
    port = sa.config.remote_natt_port if sa.natt else 500
    others = [(ip, port) for ip in sa.peer_additional_addresses
              if ip != sa.remote_addr[0] and _version(ip) == _version(sa.local_addr[0])]
    return [sa.remote_addr, *others]


def start_update(sa: IkeSa, operation: UpdateSaAddresses, now: float) -> None:
    cookie = os.urandom(COOKIE2_SIZE)
    payloads: list[Payload] = [
        Notify(_U.UPDATE_SA_ADDRESSES), *natd_notifies(sa, sa.spi_r, _our_address(sa), sa.remote_addr),
        Notify(_U.COOKIE2, data=cookie), *_address_list(sa),
    ]  # fmt: skip
    sa.ctx.count("mobike_updates_sent")
    sa.send_request(_UpdateRequest(cookie, _paths(sa), operation.tried), payloads, now)


class _AddressListRequest(Request):
    __slots__ = ()
    exchange_type = ExchangeType.INFORMATIONAL

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        return


def start_address_list(sa: IkeSa, now: float) -> None:
    sa.send_request(_AddressListRequest(), _address_list(sa), now)


# ---- responder -----------------------------------------------------------------------------------


def _nat_between(data: bytes, source: Address, local: Address) -> bool:
    """NO_NATS_ALLOWED (RFC 4555 3.9): the addresses and ports the peer sent from and to, against
    the packet's. RemoteProtocolError(INVALID_SYNTAX) if its length fits neither family."""
    size = {12: 4, 36: 16}.get(len(data))
    if size is None:
        raise RemoteProtocolError("malformed NO_NATS_ALLOWED", notify=NotifyType.INVALID_SYNTAX)
    src = str(ipaddress.ip_address(data[:size]))
    dst = str(ipaddress.ip_address(data[size : 2 * size]))
    sport = int.from_bytes(data[2 * size : 2 * size + 2], "big")
    dport = int.from_bytes(data[2 * size + 2 :], "big")
    return (src, sport) != (source[0], source[1]) or (dst, dport) != (local[0], local[1])


def _check_address(sa: IkeSa, addr: Address, local_ip: str) -> None:
    """Check the peer's new address `addr` (reached from our `local_ip`) before moving there. A check
    already queued or in flight is retargeted: its next transmissions go to the newest address."""
    pending = sa.mobike_target is not None
    if sa.mobike_target == (addr, local_ip):
        return
    sa.mobike_target = (addr, local_ip)
    sa.ctx.count("mobike_routability_checks")
    if not pending:
        sa.enqueue_front(CheckPeerAddress(addr))


def respond(sa: IkeSa, payloads: list[Payload], now: float) -> list[Payload] | None:
    """The MOBIKE part of our answer to an INFORMATIONAL request; None if it has none."""
    kinds = {int(p.notify_type) for p in payloads if isinstance(p, Notify)}
    if not kinds & _REQUEST_NOTIFIES:
        return None
    if not sa.peer_mobike:
        sa.ctx.count("mobike_not_negotiated")
        return None
    cookie = find_notify(payloads, _U.COOKIE2)
    if cookie is not None and not MIN_COOKIE2 <= len(cookie.data) <= MAX_COOKIE2:
        raise RemoteProtocolError("COOKIE2 of a wrong length", notify=NotifyType.INVALID_SYNTAX)
    source, natt, arrived_at = sa.request_source or (sa.remote_addr, sa.natt, None)
    local_ip = arrived_at or sa.local_addr[0]
    local = (local_ip, sa.ctx.natt_port if natt else sa.local_addr[1])
    answer: list[Payload] = []
    update = _U.UPDATE_SA_ADDRESSES in kinds
    if update and sa.original_initiator:
        sa.ctx.count("mobike_update_from_responder")  # RFC 4555 3.1: only the initiator moves the SA
        update = False
    if update:
        no_nats = find_notify(payloads, _U.NO_NATS_ALLOWED)
        if no_nats is not None and _nat_between(bytes(no_nats.data), source, local):
            raise RemoteProtocolError("NO_NATS_ALLOWED, and a NAT is on the path",
                                      notify=NotifyType.UNEXPECTED_NAT_DETECTED)
        if source[0] != sa.remote_addr[0] and not _acceptable(sa, source[0]):
            raise RemoteProtocolError(f"{source[0]} is not in the connection's remote_addrs",
                                      notify=NotifyType.UNACCEPTABLE_ADDRESSES)
        sa.mobike_update_mid = sa.answering_message_id
        if source == sa.remote_addr and local_ip == sa.local_addr[0]:
            _nat_recheck(sa, payloads, local, source)
            sa.mobike_target = None  # the peer is back where it was: a pending check is moot
            _commit(sa, source)
        else:
            _check_address(sa, source, local_ip)
    if update or (_U.NAT_DETECTION_SOURCE_IP in kinds and _U.NAT_DETECTION_DESTINATION_IP in kinds):
        # our NAT_DETECTION_* for the path the request took (strongSwan's DPD probes mappings so)
        answer += natd_notifies(sa, sa.spi_r, local, source)
    _record_addresses(sa, payloads)
    if cookie is not None:
        answer.append(Notify(_U.COOKIE2, data=bytes(cookie.data)))
    return answer


def update_retransmitted(sa: IkeSa, addr: Address, local_ip: str | None, now: float) -> None:
    """A byte-identical copy of the last UPDATE_SA_ADDRESSES we answered came from `addr` (answered
    from the cache): if that is a new path, check it (a check in progress follows it), so that an
    on-path attacker who rewrote the first copy's source cannot keep the SA from the real path."""
    path = (addr, local_ip or sa.local_addr[0])
    if not sa.peer_mobike or sa.original_initiator or sa.mobike_target == path:
        return
    if sa.mobike_target is None and path == (sa.remote_addr, sa.local_addr[0]):
        return
    if addr[0] != sa.remote_addr[0] and not _acceptable(sa, addr[0]):
        return
    _check_address(sa, *path)


class _CheckRequest(Request):
    """Our return routability check (RFC 4555 3.7): an INFORMATIONAL with COOKIE2 to the peer's new
    address (`sa.mobike_target`, read at every transmission: a newer update retargets it)."""

    __slots__ = ("cookie", "last")
    exchange_type = ExchangeType.INFORMATIONAL

    def __init__(self, cookie: bytes, target: tuple[Address, str]) -> None:
        self.cookie = cookie
        self.last = target  # where the latest transmission went

    def destination(self, sa: IkeSa, attempt: int) -> Address | None:
        if sa.mobike_target is not None:
            self.last = sa.mobike_target
        return self.last[0]

    def source(self, sa: IkeSa) -> str | None:
        return self.last[1]  # from our address the peer's update came to

    def tries(self, sa: IkeSa) -> int:
        return min(sa.config.retransmit.tries, ROUTABILITY_CHECK_TRIES)

    def on_timeout(self, sa: IkeSa, now: float) -> bool:
        sa.mobike_target = None
        sa.ctx.count("mobike_routability_failed")
        addr = self.last[0]
        report_error(sa, f"return routability check of {addr[0]}:{addr[1]} unanswered: "
                         f"the IKE SA stays at {sa.remote_addr[0]}:{sa.remote_addr[1]}")
        return True  # the IKE SA lives on, on its old path

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        target = sa.mobike_target
        if target is None:
            return  # moot: the peer came back to the SA's path meanwhile
        sa.mobike_target = None
        source = sa.response_source
        addr, local_ip = target
        if not _cookie_echoed(payloads, self.cookie) or source is None or source[0] != addr[0]:
            sa.ctx.count("mobike_routability_failed")
            report_error(sa, f"return routability check of {addr[0]} failed (COOKIE2 or source)")
            return
        if sa.mobike_old_local is None and local_ip != sa.local_addr[0]:
            sa.mobike_old_local = sa.local_addr
        sa.local_addr = (local_ip, sa.local_addr[1])
        _nat_recheck(sa, payloads, _our_address(sa), addr)
        _commit(sa, addr)


def start_check(sa: IkeSa, operation: CheckPeerAddress, now: float) -> None:
    target = sa.mobike_target
    if target is None:
        return  # moot before it started
    cookie = os.urandom(COOKIE2_SIZE)
    addr, local_ip = target
    local = (local_ip, sa.ctx.natt_port if sa.natt else sa.local_addr[1])
    payloads: list[Payload] = [Notify(_U.COOKIE2, data=cookie), *natd_notifies(sa, sa.spi_r, local, addr)]
    sa.send_request(_CheckRequest(cookie, target), payloads, now)
