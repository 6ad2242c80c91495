"""Child SAs (RFC 7296 1.3.1, 1.3.3, 2.8, 2.9, 2.17): offers and answers for IKE_AUTH and
CREATE_CHILD_SA, new Child SAs and Child SA rekeys in both roles, and rekey collisions (2.8.1).

`make_offer` / `accept_answer` are the initiator's halves, `answer_offer` the responder's; IKE_AUTH
uses them for the first Child SA. Every Child SA is built by `_install`, whichever side we are.

RFC 9611 per-resource Child SAs (`ChildConfig.per_cpu_sas`): a new Child SA of such a config carries
SA_RESOURCE_INFO. If the answer carries it too, that SA is the group's fallback and the initiator
queues one more CREATE_CHILD_SA per resource (same selectors, SA_RESOURCE_INFO with the resource
index as its identifier). The responder numbers the SAs after the fallback with the lowest free
resource index and refuses more than `per_cpu_sas` with TS_MAX_QUEUE, after which the initiator asks
for no more. A rekey keeps the old SA's resource (as strongSwan, without resending the notify). Our
inbound SPI of resource k is k modulo per_cpu_sas (context.new_esp_spi), whichever side we are.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..child_sa import ChildSa, build_esp_pair, derive_child_keys, esp_algorithm_name
from ..config import ChildConfig
from ..crypto import KeyExchange
from ..events import ChildSaCreated, ChildSaRekeyed
from ..exceptions import LocalProtocolError, RemoteProtocolError
from ..ike_sa import MAX_CHILD_SAS, IkeSa, Request
from .. import lifetimes
from ..lifetimes import hard_deadline, volume_limits
from ..negotiation import (
    SelectedProposal,
    ke_groups,
    narrow_traffic_selectors,
    select_proposal,
    ts_from_config,
    ts_to_text,
    ts_within,
    validate_chosen_proposal,
)
from ..operations import CreateChild, DeleteChild
from ..state import ChildInput, ChildState, IkeInput
from ..wire import KE, SA, ExchangeType, Nonce, Notify, NotifyType, Payload, Proposal, ProtocolId, TrafficSelector, TSi, TSr
from .common import (
    new_nonce,
    acceptable_esp,
    describe,
    find,
    find_notify,
    need,
    our_proposals,
    refusal,
    report_error,
    requested_group,
    selectors,
    without_ke,
)

__all__ = [
    "ChildOffer",
    "ChildRequest",
    "make_offer",
    "accept_answer",
    "answer_offer",
    "release",
    "start",
    "respond",
    "emit_created",
    "MAX_CHILD_KE_RETRIES",
]

MAX_CHILD_KE_RETRIES = 2  # INVALID_KE_PAYLOAD answers to one CREATE_CHILD_SA we follow
_MIN_ESP_SPI = 256  # RFC 4303 2.1: SPIs 1..255 are reserved
# RFC 9611 leaves the Resource Identifier opaque; we keep what a peer sends up to this many octets
# (strongSwan sends a 4-octet CPU number) and refuse longer ones as malformed.
MAX_RESOURCE_INFO = 64
_RESOURCE_ID_LEN = 4  # ours: the resource index, big-endian, as strongSwan encodes its CPU IDs


@dataclass(eq=False)
class ChildOffer:
    """Our offer of one Child SA; its inbound SPI stays reserved until `release` or installation."""

    cfg: ChildConfig
    spi_in: bytes
    proposals: list[Proposal]
    tsi: list[TrafficSelector]
    tsr: list[TrafficSelector]
    payloads: list[Payload]
    nonce: bytes = b""
    ke: KeyExchange | None = None
    released: bool = False
    # RFC 9611: asked for with SA_RESOURCE_INFO (new SA), or inherited from the SA a rekey replaces
    per_resource: bool = False
    resource: int | None = None
    inherited: bool = False
    peer_resource: bytes = b""  # a rekey's: the identifier the peer gave the SA it replaces


def release(sa: IkeSa, offer: ChildOffer | None) -> None:
    if offer is not None and not offer.released:
        offer.released = True
        sa.ctx.release_esp_spi(offer.spi_in)


def _valid_esp_spi(spi: bytes) -> bool:
    return len(spi) == 4 and int.from_bytes(spi, "big") >= _MIN_ESP_SPI


def _spi_residue(cfg: ChildConfig, resource: int | None) -> tuple[int, int] | None:
    """(k, n) for the inbound SPI of resource k, when the config still has that many resources."""
    if resource is None or not 0 <= resource < cfg.per_cpu_sas:
        return None
    return resource, cfg.per_cpu_sas


def _peer_resource(notify: Notify) -> bytes:
    if len(notify.data) > MAX_RESOURCE_INFO:
        raise RemoteProtocolError("SA_RESOURCE_INFO identifier too long", notify=NotifyType.INVALID_SYNTAX)
    return bytes(notify.data)


def make_offer(
    sa: IkeSa, cfg: ChildConfig, *, for_auth: bool, rekey_of: ChildSa | None, ke_group: int | None = None,
    resource: int | None = None,
) -> ChildOffer:
    """Our offer of a new Child SA from `cfg` (`resource`: an additional RFC 9611 per-resource SA), or
    of the rekey of `rekey_of`."""
    proposals = our_proposals(cfg.esp_proposals, ProtocolId.ESP)
    if for_auth:
        without_ke(proposals)
    if rekey_of is not None:
        resource = rekey_of.resource
    spi_in = sa.ctx.new_esp_spi(_spi_residue(cfg, resource))
    for proposal in proposals:
        proposal.spi = spi_in
    if rekey_of is not None:  # a rekey keeps the selectors the old SA was narrowed to
        tsi, tsr = list(rekey_of.local_ts_wire), list(rekey_of.remote_ts_wire)
    else:
        tsi = [ts_from_config(n) for n in cfg.local_ts]
        tsr = [ts_from_config(n) for n in cfg.remote_ts]
    offer = ChildOffer(cfg=cfg, spi_in=spi_in, proposals=proposals, tsi=tsi, tsr=tsr, payloads=[],
                       resource=resource)  # fmt: skip
    payloads: list[Payload] = []
    if rekey_of is not None:
        payloads.append(Notify(NotifyType.REKEY_SA, protocol_id=ProtocolId.ESP, spi=rekey_of.spi_in))
        offer.per_resource, offer.inherited, offer.peer_resource = rekey_of.per_resource, True, rekey_of.peer_resource
    elif cfg.per_cpu_sas:
        offer.per_resource = True
        data = b"" if resource is None else resource.to_bytes(_RESOURCE_ID_LEN, "big")
        payloads.append(Notify(NotifyType.SA_RESOURCE_INFO, data))
    if cfg.mode == "transport":
        payloads.append(Notify(NotifyType.USE_TRANSPORT_MODE))
    payloads.append(SA(proposals))
    if not for_auth:
        offer.nonce = new_nonce()
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


def _install(
    sa: IkeSa,
    *,
    cfg: ChildConfig,
    spi_in: bytes,
    spi_out: bytes,
    selected: SelectedProposal,
    transport: bool,
    local_ts: list[TrafficSelector],
    remote_ts: list[TrafficSelector],
    ni: bytes,
    nr: bytes,
    shared: bytes | None,
    exchange_initiator: bool,
    now: float,
) -> ChildSa:
    """Derive the keys of a negotiated Child SA, build its ESP SAs and add it to the IKE SA."""
    keys, ike = sa.keys, sa.selected
    if keys is None or ike is None or ike.prf_id is None:
        raise LocalProtocolError("no IKE keys")
    keys_in, keys_out = derive_child_keys(
        prf_id=ike.prf_id, sk_d=keys.sk_d, selected=selected, ni=ni, nr=nr,
        is_initiator=exchange_initiator, shared_secret=shared,
    )  # fmt: skip
    child = ChildSa(
        child_id=sa.ctx.new_child_id(),
        config_name=cfg.name,
        spi_in=spi_in,
        spi_out=spi_out,
        selected=selected,
        proposal_text=describe(selected),
        mode="transport" if transport else "tunnel",
        local_ts=tuple([ts_to_text(t) for t in local_ts]),
        remote_ts=tuple([ts_to_text(t) for t in remote_ts]),
        local_ts_wire=local_ts,
        remote_ts_wire=remote_ts,
        udp_encap=sa.nat_detected,  # RFC 3948: ESP in UDP only through a NAT (or forced), not when IKE floated
        keys_in=keys_in,
        keys_out=keys_out,
        created_at=now,
        rekey_at=None if cfg.rekey_time is None else now + cfg.rekey_time,
    )
    limits = volume_limits(cfg)
    try:
        build_esp_pair(child, sa.ctx.esp_factory, cfg.replay_window, limits)
    except Exception as exc:  # the factory is the data plane (or user code): never let it kill the engine
        raise RemoteProtocolError(
            f"ESP SA could not be installed: {type(exc).__name__}", notify=NotifyType.NO_PROPOSAL_CHOSEN
        ) from exc
    child.expire_at = hard_deadline(cfg, now)
    if child.limits.active:
        child.lifetime_check_at = now + lifetimes.LIFETIME_CHECK_INTERVAL
    sa.children[child.child_id] = child
    return child


def accept_answer(sa: IkeSa, offer: ChildOffer, payloads: list[Payload], ni: bytes, nr: bytes, now: float) -> ChildSa:
    """Check the responder's answer to our Child SA offer and install the Child SA."""
    sa_payload = need(payloads, SA, "SA")
    if len(sa_payload.proposals) != 1:
        raise RemoteProtocolError("answer must hold one proposal", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    chosen = sa_payload.proposals[0]
    selected = validate_chosen_proposal(chosen, offer.proposals)
    if not _valid_esp_spi(chosen.spi):
        raise RemoteProtocolError("invalid ESP SPI in the answer")
    if esp_algorithm_name(selected) is None:
        raise RemoteProtocolError("answer selects a cipher we cannot use", notify=NotifyType.NO_PROPOSAL_CHOSEN)
    shared = None
    if selected.ke_group is not None:
        ke = need(payloads, KE, "KE")
        if offer.ke is None or int(ke.group) != offer.ke.group or selected.ke_group != offer.ke.group:
            raise RemoteProtocolError("KE group does not match", notify=NotifyType.INVALID_KE_PAYLOAD)
        shared = offer.ke.shared_secret(bytes(ke.data))
    tsi = selectors(need(payloads, TSi, "TSi"))
    tsr = selectors(need(payloads, TSr, "TSr"))
    if not ts_within(tsi, offer.tsi) or not ts_within(tsr, offer.tsr):
        raise RemoteProtocolError("narrowed selectors are not within ours", notify=NotifyType.TS_UNACCEPTABLE)
    transport = offer.cfg.mode == "transport" and find_notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
    resource_info = find_notify(payloads, NotifyType.SA_RESOURCE_INFO) if offer.per_resource else None
    peer_resource = offer.peer_resource if resource_info is None or offer.inherited else _peer_resource(resource_info)
    child = _install(
        sa, cfg=offer.cfg, spi_in=offer.spi_in, spi_out=bytes(chosen.spi), selected=selected, transport=transport,
        local_ts=tsi, remote_ts=tsr, ni=ni, nr=nr, shared=shared, exchange_initiator=True, now=now,
    )  # fmt: skip
    offer.released = True  # the SPI now belongs to the installed Child SA
    if offer.inherited or resource_info is not None:  # a peer that omits the notify made an ordinary SA
        child.per_resource, child.resource, child.peer_resource = offer.per_resource, offer.resource, peer_resource
    return child


def request_resources(sa: IkeSa, cfg: ChildConfig, child: ChildSa) -> None:
    """After a per-resource group's fallback SA: queue one CREATE_CHILD_SA per resource (RFC 9611)."""
    if child.per_resource and child.resource is None:
        for resource in range(cfg.per_cpu_sas):
            try:
                sa.enqueue(CreateChild(cfg, resource))
            except LocalProtocolError:  # the request queue is full: these SAs are not asked for
                sa.ctx.count("per_resource_requests_dropped", cfg.per_cpu_sas - resource)
                break


def _group_state(sa: IkeSa, cfg: ChildConfig) -> tuple[bool, list[int]]:
    """The per-resource group of `cfg` on this IKE SA: whether its fallback SA is up, and our resource
    indexes that no live SA of the group holds (a rekey's two SAs share theirs)."""
    live = (ChildState.INSTALLED, ChildState.REKEYING)
    used = {c.resource for c in sa.children.values() if c.per_resource and c.config_name == cfg.name and c.state in live}
    return None in used, [k for k in range(cfg.per_cpu_sas) if k not in used]


def _responder_resource(sa: IkeSa, cfg: ChildConfig, payloads: list[Payload]) -> tuple[int | None, bytes] | None:
    """RFC 9611 as responder for a new Child SA: None if it is an ordinary one, else (our resource
    index, None for the group's fallback; the peer's identifier). TS_MAX_QUEUE once the group is full.
    Resource indexes are each side's own: the peer's identifier is kept, not matched against ours."""
    notify = find_notify(payloads, NotifyType.SA_RESOURCE_INFO)
    if notify is None or not cfg.per_cpu_sas:
        return None  # without the notify (or without our support) it is just another Child SA (2.8)
    peer_resource = _peer_resource(notify)
    has_fallback, free = _group_state(sa, cfg)
    if not has_fallback:
        return None, peer_resource  # the first of the group: the fallback SA
    if not free:
        raise RemoteProtocolError(f"all {cfg.per_cpu_sas} per-resource Child SAs exist", notify=NotifyType.TS_MAX_QUEUE)
    return free[0], peer_resource


def _select(
    sa: IkeSa, sa_payload: SA, peer_tsi: list[TrafficSelector], peer_tsr: list[TrafficSelector],
    for_auth: bool, names: list[str] | None,
) -> tuple[ChildConfig, SelectedProposal, list[TrafficSelector], list[TrafficSelector]]:
    """The first of our child configs that accepts the peer's proposals and selectors."""
    error: RemoteProtocolError | None = None
    for cfg in sa.config.children:
        if names is not None and cfg.name not in names:
            continue
        try:
            selected = select_proposal(sa_payload.proposals, acceptable_esp(cfg.esp_proposals, for_auth))
            if esp_algorithm_name(selected) is None:
                raise RemoteProtocolError("cipher not supported by the data plane", notify=NotifyType.NO_PROPOSAL_CHOSEN)
            if not _valid_esp_spi(selected.spi):
                raise RemoteProtocolError("invalid ESP SPI in the proposal")
            tsi = narrow_traffic_selectors(peer_tsi, [ts_from_config(n) for n in cfg.remote_ts])
            tsr = narrow_traffic_selectors(peer_tsr, [ts_from_config(n) for n in cfg.local_ts])
        except RemoteProtocolError as exc:
            error = exc
            continue
        return cfg, selected, tsi, tsr
    raise error or RemoteProtocolError("no child config", notify=NotifyType.NO_PROPOSAL_CHOSEN)


def answer_offer(
    sa: IkeSa, payloads: list[Payload], ni: bytes, nr: bytes, *, for_auth: bool, now: float, names: list[str] | None,
    rekey_of: ChildSa | None = None,
) -> tuple[ChildSa, list[Payload]]:
    """Select, narrow and install a Child SA for a peer's offer (the rekey of `rekey_of`, if given);
    our answer's payloads."""
    sa_payload = need(payloads, SA, "SA")
    peer_tsi = selectors(need(payloads, TSi, "TSi"))
    peer_tsr = selectors(need(payloads, TSr, "TSr"))
    cfg, selected, tsi, tsr = _select(sa, sa_payload, peer_tsi, peer_tsr, for_auth, names)
    if rekey_of is not None:
        grouping = (rekey_of.resource, rekey_of.peer_resource) if rekey_of.per_resource else None
    else:
        grouping = _responder_resource(sa, cfg, payloads)
    shared = None
    our_ke: KeyExchange | None = None
    if selected.ke_group is not None:
        ke = find(payloads, KE)
        if ke is None or int(ke.group) != selected.ke_group:
            raise RemoteProtocolError(
                "KE payload does not use the selected group",
                notify=NotifyType.INVALID_KE_PAYLOAD,
                data=selected.ke_group.to_bytes(2, "big"),
            )
        our_ke, shared = KeyExchange.respond(selected.ke_group, bytes(ke.data))
    if len(sa.children) >= MAX_CHILD_SAS:
        raise RemoteProtocolError("too many Child SAs", notify=NotifyType.NO_ADDITIONAL_SAS)
    transport = cfg.mode == "transport" and find_notify(payloads, NotifyType.USE_TRANSPORT_MODE) is not None
    resource = None if grouping is None else grouping[0]
    spi_in = sa.ctx.new_esp_spi(_spi_residue(cfg, resource))
    try:
        child = _install(
            sa, cfg=cfg, spi_in=spi_in, spi_out=selected.spi, selected=selected, transport=transport,
            local_ts=tsr, remote_ts=tsi, ni=ni, nr=nr, shared=shared, exchange_initiator=False, now=now,
        )  # fmt: skip
    except RemoteProtocolError:
        sa.ctx.release_esp_spi(spi_in)
        raise
    answer: list[Payload] = []
    if grouping is not None:
        child.per_resource, (child.resource, child.peer_resource) = True, grouping
        if rekey_of is None:
            data = b"" if resource is None else resource.to_bytes(_RESOURCE_ID_LEN, "big")
            answer.append(Notify(NotifyType.SA_RESOURCE_INFO, data))
    if transport:
        answer.append(Notify(NotifyType.USE_TRANSPORT_MODE))
    answer.append(SA([selected.to_wire(spi_in)]))
    if not for_auth:
        answer.append(Nonce(nr))
    if our_ke is not None:
        answer.append(KE(our_ke.group, our_ke.public_bytes()))
    answer += [TSi(list(tsi)), TSr(list(tsr))]
    return child, answer


# ---- events ------------------------------------------------------------------------------------


def emit_created(sa: IkeSa, child: ChildSa) -> None:
    inbound, outbound = child.esp_sas()
    sa.ctx.emit(
        ChildSaCreated(
            ike_sa_id=sa.ike_sa_id, child_id=child.child_id, spi_in=child.spi_in, spi_out=child.spi_out,
            proposal=child.proposal_text, mode=child.mode, udp_encap=child.udp_encap, local_ts=child.local_ts,
            remote_ts=child.remote_ts, name=child.config_name, resource=child.resource,
            per_resource=child.per_resource, inbound=inbound, outbound=outbound,
        )
    )  # fmt: skip


def _emit_rekeyed(sa: IkeSa, old: ChildSa, child: ChildSa, *, initiator: bool) -> None:
    inbound, outbound = child.esp_sas()
    sa.ctx.emit(
        ChildSaRekeyed(
            ike_sa_id=sa.ike_sa_id, old_child_id=old.child_id, child_id=child.child_id, spi_in=child.spi_in,
            spi_out=child.spi_out, proposal=child.proposal_text, udp_encap=child.udp_encap, initiator=initiator,
            resource=child.resource, per_resource=child.per_resource, inbound=inbound, outbound=outbound,
        )
    )  # fmt: skip


# ---- CREATE_CHILD_SA, initiator ----------------------------------------------------------------


class ChildRequest(Request):
    """Our CREATE_CHILD_SA for a new Child SA, or for the rekey of `old`."""

    __slots__ = ("offer", "old", "ke_retries")
    exchange_type = ExchangeType.CREATE_CHILD_SA

    def __init__(self, offer: ChildOffer, old: ChildSa | None, ke_retries: int) -> None:
        self.offer = offer
        self.old = old
        self.ke_retries = ke_retries

    def abandon(self, sa: IkeSa) -> None:
        release(sa, self.offer)

    def on_response(self, sa: IkeSa, payloads: list[Payload], now: float) -> None:
        offer, old = self.offer, self.old
        group = requested_group(payloads)
        if group is not None and offer.ke is not None and self.ke_retries < MAX_CHILD_KE_RETRIES:
            # RFC 7296 1.3: retry with the group the responder asked for, if we offered it
            if group != offer.ke.group and group in ke_groups(offer.proposals):
                release(sa, offer)
                if old is not None:
                    if old.state != ChildState.REKEYING or old.child_id not in sa.children:
                        return  # the peer rekeyed or deleted it meanwhile: nothing left to rekey
                    old.apply(ChildInput.REKEY_FAILED)
                start(sa, offer.cfg, old, now, ke_group=group, ke_retries=self.ke_retries + 1,
                      resource=offer.resource if old is None else None)
                return
        try:
            refused = refusal(payloads, "CREATE_CHILD_SA")
            if refused is not None:
                if refused.notify == NotifyType.TS_MAX_QUEUE:  # RFC 9611: ask for no more of this group
                    sa.resource_limited.add(offer.cfg.name)
                raise refused
            nr = bytes(need(payloads, Nonce, "Nonce").data)
            child = accept_answer(sa, offer, payloads, offer.nonce, nr, now)
        except (RemoteProtocolError, LocalProtocolError) as exc:
            release(sa, offer)
            if old is not None and old.state == ChildState.REKEYING:
                old.apply(ChildInput.REKEY_FAILED)
            report_error(sa, str(exc), exc)
            return
        if old is not None and old.state == ChildState.REKEYING:
            old.apply(ChildInput.RECV_REKEY_DONE)
            _emit_rekeyed(sa, old, child, initiator=True)
            sa.enqueue_front(DeleteChild(old.child_id))  # the rekey initiator deletes the old SA (2.8)
            return
        # the old SA went away meanwhile, or the peer rekeyed it at the same time: a new SA of its own
        emit_created(sa, child)
        if old is None:
            request_resources(sa, offer.cfg, child)
        if old is not None and old.collision is not None:
            # RFC 7296 2.8.1: the SA created with the lowest of the four nonces is redundant and its
            # initiator deletes it; the initiator of the surviving SA deletes the old one.
            _, peer_ni, peer_nr = old.collision
            if min(offer.nonce, nr) < min(peer_ni, peer_nr):
                sa.enqueue_front(DeleteChild(child.child_id))
            elif old.state != ChildState.DELETED:
                sa.enqueue_front(DeleteChild(old.child_id))


def start(
    sa: IkeSa, cfg: ChildConfig, old: ChildSa | None, now: float, *, ke_group: int | None = None, ke_retries: int = 0,
    resource: int | None = None,
) -> None:
    """Send a CREATE_CHILD_SA for a new Child SA from `cfg` (`resource`: RFC 9611, see the module
    docstring), or for the rekey of `old`."""
    if old is None and cfg.per_cpu_sas:
        has_fallback, free = _group_state(sa, cfg)
        if resource is not None and (cfg.name in sa.resource_limited or not has_fallback or resource not in free):
            return  # queued after the fallback, and no longer wanted: the peer's limit, or it exists
        if resource is None and has_fallback and free:
            resource = free[0]  # a new member of an existing group takes our lowest free resource
    offer = make_offer(sa, cfg, for_auth=False, rekey_of=old, ke_group=ke_group, resource=resource)
    if old is not None:
        old.apply(ChildInput.START_REKEY)
    sa.send_request(ChildRequest(offer, old, ke_retries), offer.payloads, now)


# ---- CREATE_CHILD_SA, responder ----------------------------------------------------------------


def respond(sa: IkeSa, payloads: list[Payload], ni: bytes, now: float) -> list[Payload]:
    """Our answer to the peer's CREATE_CHILD_SA for a new Child SA or a Child SA rekey."""
    rekey = find_notify(payloads, NotifyType.REKEY_SA)
    old: ChildSa | None = None
    if rekey is not None:
        old = next((c for c in sa.children.values() if c.spi_out == bytes(rekey.spi)), None)
        if old is not None and old.state == ChildState.DELETING:
            # RFC 7296 2.25.1: we are deleting it; the peer should wait, not create a new one
            raise RemoteProtocolError("rekey of a Child SA being deleted", notify=NotifyType.TEMPORARY_FAILURE)
        if old is None or old.state not in (ChildState.INSTALLED, ChildState.REKEYING):
            raise RemoteProtocolError("rekey of an unknown Child SA", notify=NotifyType.CHILD_SA_NOT_FOUND)
    nr = new_nonce()
    names = None if old is None else [old.config_name]
    child, answer = answer_offer(sa, payloads, ni, nr, for_auth=False, now=now, names=names, rekey_of=old)
    if old is not None:
        if old.state == ChildState.REKEYING:  # we are rekeying it too: settle it by nonces later
            old.collision = (child.child_id, ni, nr)
        old.apply(ChildInput.RECV_REKEY_REQUEST)
        _emit_rekeyed(sa, old, child, initiator=False)
    else:
        emit_created(sa, child)
    return answer
