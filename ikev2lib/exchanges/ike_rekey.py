"""IKE SA rekeying (RFC 7296 1.3.2, 2.18), both roles, and simultaneous rekeys (2.8.2).

A rekey creates a new IKE SA with fresh keys (SKEYSEED from the old SK_d and a new key exchange);
the Child SAs and queued requests move to it, and the rekey's initiator deletes the old IKE SA.

Collisions: when the peer's rekey request arrives while ours is in flight, we answer it as usual and
keep the SA it creates on the side (`IkeRekeyRequest.collision`). Once our own answer is in, of the
two new IKE SAs the one created with the lowest of the four nonces is redundant: its creator deletes
it, and the creator of the survivor deletes the old SA. Both ends compare the same nonces, so they
agree on the survivor, and neither keeps an IKE SA the other does not know. If our rekey fails, or
the peer deletes the old SA first (it won and never saw our answer), the peer's new SA survives.
"""

from __future__ import annotations

from ..crypto import KeyExchange, derive_rekeyed_ike_keys
from ..events import IkeSaRekeyed
from ..exceptions import LocalProtocolError, RemoteProtocolError
from ..ike_sa import IkeSa, Request
from ..negotiation import SelectedProposal, ke_groups, select_proposal, validate_chosen_proposal
from ..operations import CheckPeerAddress, DeleteIke, UpdateSaAddresses
from ..state import ChildState, IkeInput, IkeState
from ..wire import KE, SA, ExchangeType, Nonce, NotifyType, Payload, Proposal, ProtocolId
from .child_create import ChildRequest
from .common import (
    new_nonce,
    ZERO_IKE_SPI,
    describe,
    find,
    need,
    our_proposals,
    parsed_proposals,
    refusal,
    report_error,
    requested_group,
)

__all__ = ["IkeRekeyRequest", "start", "respond", "conclude_before_delete", "MAX_REKEY_KE_RETRIES"]

MAX_REKEY_KE_RETRIES = 2  # INVALID_KE_PAYLOAD answers to one IKE SA rekey we follow


def _lower_nonce(ni: bytes, nr: bytes) -> bytes:
    return min(ni, nr)


def _new_ike_sa(
    old: IkeSa, selected: SelectedProposal, shared: bytes, ni: bytes, nr: bytes, *, spi_i: bytes, spi_r: bytes,
    initiator: bool, now: float,
) -> IkeSa:
    """The IKE SA a rekey creates, registered with the endpoint but hidden (no events, no children)
    until `_succeed` makes it the successor of `old`."""
    keys, ike = old.keys, old.selected
    if keys is None or ike is None or ike.prf_id is None or selected.prf_id is None:
        raise LocalProtocolError("no keys to rekey from")
    _, new_keys = derive_rekeyed_ike_keys(
        selected.prf_id, selected.encr_id, selected.encr_key_bits, selected.integ_id, keys.sk_d, shared, ni, nr,
        spi_i, spi_r, old_prf_id=ike.prf_id,
    )  # fmt: skip
    new = IkeSa(
        ctx=old.ctx, ike_sa_id=old.ike_sa_id, config=old.config, is_initiator=initiator,
        remote_addr=old.remote_addr, spi_i=spi_i, spi_r=spi_r, now=now,
    )  # fmt: skip
    new.natt = old.natt
    new.nat_detected = old.nat_detected
    new.nat_here, new.nat_there = old.nat_here, old.nat_there
    new.peer_fragmentation = old.peer_fragmentation
    # MOBIKE state is the IKE SA's, whatever its keys (RFC 4555: the original initiator stays the one)
    new.local_addr, new.original_initiator, new.peer_mobike = old.local_addr, old.original_initiator, old.peer_mobike
    new.peer_additional_addresses, new.local_addresses = old.peer_additional_addresses, old.local_addresses
    new.remote_id_text = old.remote_id_text
    new.peer_certificate = old.peer_certificate
    new.ike_port, new.redirection, new.delete_at = old.ike_port, old.redirection, old.delete_at
    new.accepts_redirect, new.peer_accepts_redirect = old.accepts_redirect, old.peer_accepts_redirect
    new.hidden = True
    new.install_keys(selected, new_keys, describe(selected))
    new.apply(IkeInput.CREATED_BY_REKEY)
    new.established_at = now
    old.ctx.spawned.append(new)
    return new


def _succeed(old: IkeSa, new: IkeSa, now: float) -> None:
    """`new` replaces `old`: it takes the Child SAs and queued requests and becomes the one users see."""
    new.hidden = False
    new.established_at = now
    if new.config.rekey_time is not None:
        new.rekey_at = now + new.config.rekey_time
    new.children, old.children = old.children, {}
    new.take_queue(old)
    # a MOBIKE move (or a NAT's new mapping) may have changed the old SA's path during the rekey
    new.local_addr, new.remote_addr, new.mobike_old_local = old.local_addr, old.remote_addr, old.mobike_old_local
    new.nat_detected, new.nat_here, new.nat_there = old.nat_detected, old.nat_here, old.nat_there
    new.local_addresses, new.peer_additional_addresses = old.local_addresses, old.peer_additional_addresses
    if new.has_queued(CheckPeerAddress):  # a return routability check the old SA had not started yet
        new.mobike_target = old.mobike_target
    if new.mobike_old_local is not None and not new.has_queued(UpdateSaAddresses):
        new.enqueue_front(UpdateSaAddresses())  # a move not yet confirmed: the successor confirms it
    old.hidden = True
    old.apply(IkeInput.REPLACED)
    old.ctx.touch(new)  # the endpoint now resolves the ike_sa_id to `new`
    old.ctx.emit(
        IkeSaRekeyed(
            ike_sa_id=old.ike_sa_id, old_spi_i=old.spi_i, old_spi_r=old.spi_r, spi_i=new.spi_i, spi_r=new.spi_r,
            proposal=new.proposal_text,
        )
    )  # fmt: skip


def _redundant(new: IkeSa) -> None:
    """A new IKE SA that lost a collision and that the peer created: wait (hidden) for its Delete."""
    new.apply(IkeInput.REPLACED)
    new.ctx.touch(new)  # its state timer (REKEYED_SA_LIFETIME) changed


# ---- initiator ---------------------------------------------------------------------------------


class IkeRekeyRequest(Request):
    """Our CREATE_CHILD_SA that rekeys this IKE SA. `collision`: the IKE SA created by the peer's
    simultaneous rekey, kept aside until our answer settles which one survives."""

    __slots__ = ("spi", "proposals", "nonce", "ke", "ke_retries", "collision", "collision_nonce")
    exchange_type = ExchangeType.CREATE_CHILD_SA

    def __init__(self, spi: bytes, proposals: list[Proposal], ke: KeyExchange, ke_retries: int) -> None:
        self.spi = spi
        self.proposals = proposals
        self.nonce = new_nonce()
        self.ke = ke
        self.ke_retries = ke_retries
        self.collision: IkeSa | None = None
        self.collision_nonce = b""  # the lower nonce of the peer's rekey exchange

    def abandon(self, sa: IkeSa) -> None:
        sa.ctx.release_ike_spi(self.spi)
        peer = self.collision
        if peer is not None and peer.hidden and not peer.finished:
            # the old SA ends without a successor: the peer's half-settled new SA goes with it
            self.collision = None
            peer.close(peer.last_heard, reason="rekey abandoned", by_peer=False, terminal=IkeInput.FATAL_ERROR)
            sa.ctx.touch(peer)

    def _conclude_for_peer(self, sa: IkeSa, now: float) -> bool:
        """Our rekey did not complete: the peer's new SA, if there is one, survives."""
        peer, self.collision = self.collision, None
        if peer is None or peer.finished or sa.state != IkeState.ESTABLISHED:
            return False
        _succeed(sa, peer, now)
        return True

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        group = requested_group(payloads)
        if (
            group is not None
            and self.collision is None
            and sa.state == IkeState.ESTABLISHED
            and self.ke_retries < MAX_REKEY_KE_RETRIES
            and group != self.ke.group
            and group in ke_groups(self.proposals)
        ):
            # RFC 7296 1.3: retry the rekey with the group the responder asked for, if we offered it
            sa.ctx.release_ike_spi(self.spi)
            start(sa, now, ke_group=group, ke_retries=self.ke_retries + 1)
            return
        try:
            if sa.state != IkeState.ESTABLISHED:
                raise LocalProtocolError(f"the IKE SA is {sa.state.value} meanwhile")
            refused = refusal(payloads, "IKE SA rekey")
            if refused is not None:
                raise refused
            sa_payload = need(payloads, SA, "SA")
            if len(sa_payload.proposals) != 1:
                raise RemoteProtocolError("answer must hold one proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
            chosen = sa_payload.proposals[0]
            selected = validate_chosen_proposal(chosen, self.proposals)
            if len(chosen.spi) != 8 or chosen.spi == ZERO_IKE_SPI:
                raise RemoteProtocolError("invalid IKE SPI in the rekey answer")
            ke = need(payloads, KE, "KE")
            if int(ke.group) != self.ke.group or selected.ke_group != self.ke.group:
                raise RemoteProtocolError("KE group does not match", notify=NotifyType.INVALID_KE_PAYLOAD)
            nr = bytes(need(payloads, Nonce, "Nonce").data)
            shared = self.ke.shared_secret(bytes(ke.data))
            ours = _new_ike_sa(
                sa, selected, shared, self.nonce, nr, spi_i=self.spi, spi_r=bytes(chosen.spi), initiator=True, now=now
            )
        except (RemoteProtocolError, LocalProtocolError) as exc:
            sa.ctx.release_ike_spi(self.spi)
            if self._conclude_for_peer(sa, now):
                return
            report_error(sa, f"IKE SA rekey failed: {exc}", exc)
            if sa.config.rekey_time is not None:
                sa.rekey_at = now + sa.config.rekey_time
            return
        peer = self.collision
        if peer is not None and not peer.finished and _lower_nonce(self.nonce, nr) < self.collision_nonce:
            # we lost: our new SA is redundant and we delete it; the peer deletes the old one
            sa.ctx.count("ike_rekey_collisions_lost")
            ours.enqueue(DeleteIke())
            _succeed(sa, peer, now)
            return
        if peer is not None and not peer.finished:
            sa.ctx.count("ike_rekey_collisions_won")
            _redundant(peer)  # the peer deletes the SA it created
        _succeed(sa, ours, now)
        sa.enqueue_front(DeleteIke())  # the rekey initiator deletes the old IKE SA


def start(sa: IkeSa, now: float, *, ke_group: int | None = None, ke_retries: int = 0) -> None:
    """Send a CREATE_CHILD_SA that rekeys `sa`."""
    spi = sa.ctx.new_ike_spi()
    proposals = our_proposals(sa.config.ike_proposals, ProtocolId.IKE, spi)
    groups = ke_groups(proposals)
    current = sa.selected.ke_group if sa.selected is not None else None
    # first guess: the current group if still allowed; after INVALID_KE_PAYLOAD: the one asked for
    group = ke_group if ke_group in groups else current if current in groups else groups[0] if groups else None
    if group is None:
        sa.ctx.release_ike_spi(spi)
        raise LocalProtocolError("no key exchange group for the IKE rekey")
    request = IkeRekeyRequest(spi, proposals, KeyExchange.generate(group), ke_retries)
    payloads: list[Payload] = [SA(proposals), Nonce(request.nonce), KE(group, request.ke.public_bytes())]
    sa.send_request(request, payloads, now)


# ---- responder ---------------------------------------------------------------------------------


def _child_exchange_in_flight(sa: IkeSa) -> bool:
    """Our CREATE_CHILD_SA or Child SA Delete awaits its answer: it would come on the old IKE SA."""
    if isinstance(sa.pending_request, ChildRequest):
        return True
    return any(c.state in (ChildState.REKEYING, ChildState.DELETING) for c in sa.children.values())


def respond(sa: IkeSa, sa_payload: SA, ni: bytes, payloads: list[Payload], now: float) -> list[Payload]:
    """Our answer to the peer's rekey of `sa`."""
    if _child_exchange_in_flight(sa):
        # RFC 7296 2.25 (strongSwan does the same): the Child SAs would move to the new IKE SA while
        # the answer to our Child SA exchange still comes on this one; the peer retries later
        raise RemoteProtocolError("a Child SA exchange is in flight", notify=NotifyType.TEMPORARY_FAILURE)
    selected = select_proposal(sa_payload.proposals, parsed_proposals(sa.config.ike_proposals, ProtocolId.IKE))
    if len(selected.spi) != 8 or selected.spi == ZERO_IKE_SPI:
        raise RemoteProtocolError("invalid IKE SPI in the rekey proposal")
    group = selected.ke_group
    if group is None:
        raise RemoteProtocolError("IKE rekey without a key exchange", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    ke = find(payloads, KE)
    if ke is None or int(ke.group) != group:
        raise RemoteProtocolError(
            "KE payload does not use the selected group",
            notify=NotifyType.INVALID_KE_PAYLOAD,
            data=group.to_bytes(2, "big"),
        )
    ours_in_flight = sa.pending_request
    if isinstance(ours_in_flight, IkeRekeyRequest) and ours_in_flight.collision is not None:
        raise RemoteProtocolError("a second simultaneous IKE SA rekey", notify=NotifyType.TEMPORARY_FAILURE)
    our_ke, shared = KeyExchange.respond(group, bytes(ke.data))
    nr = new_nonce()
    spi_r = sa.ctx.new_ike_spi()
    try:
        new = _new_ike_sa(sa, selected, shared, ni, nr, spi_i=selected.spi, spi_r=spi_r, initiator=False, now=now)
    except LocalProtocolError:
        sa.ctx.release_ike_spi(spi_r)
        raise
    if isinstance(ours_in_flight, IkeRekeyRequest):
        # both ends rekey at once (RFC 7296 2.8.2): answer, and settle it when our answer is in
        ours_in_flight.collision = new
        ours_in_flight.collision_nonce = _lower_nonce(ni, nr)
    else:
        _succeed(sa, new, now)
    return [SA([selected.to_wire(spi_r)]), Nonce(nr), KE(group, our_ke.public_bytes())]


def conclude_before_delete(sa: IkeSa, now: float) -> None:
    """The peer deletes `sa` while our rekey of it is in flight: it won a collision and never saw
    our answer, so its new IKE SA takes over (our own new SA will never be established)."""
    request = sa.pending_request
    if isinstance(request, IkeRekeyRequest):
        request._conclude_for_peer(sa, now)
