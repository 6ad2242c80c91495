"""Events the sans-IO engine hands to its user (`IkeEndpoint.next_event()`).

Frozen keyword-only dataclasses, as in h11/h2: an event is a fact about the past, never a request.
Key material is never part of an event; the ESP SA objects carry their keys internally and are kept
out of `repr` so that logging an event cannot leak anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from .dataplane import DataPlaneSA

Address = tuple[str, int]

__all__ = [
    "Address",
    "Event",
    "IkeSaEstablished",
    "IkeSaRekeyed",
    "IkeSaRestored",
    "IkeSaDeleted",
    "ChildSaCreated",
    "ChildSaRekeyed",
    "ChildSaDeleted",
    "ChildSaExpired",
    "PeerAddressChanged",
    "IkeSaAddressesUpdated",
    "IkeSaRedirected",
    "Redirection",
    "PeerDead",
    "ProtocolErrorEvent",
]


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base class of every engine event. `ike_sa_id` is the engine's stable handle of the IKE SA
    (it survives IKE SA rekeying, unlike the SPIs); None when no IKE SA exists yet."""

    ike_sa_id: int | None


@dataclass(frozen=True, kw_only=True)
class IkeSaEstablished(Event):
    spi_i: bytes
    spi_r: bytes
    is_initiator: bool
    remote_addr: Address
    local_id: str
    remote_id: str
    proposal: str  # strongSwan keywords of the selected transforms
    udp_encap: bool  # NAT-T (port 4500, non-ESP marker) in use
    connection: str = ""  # the name of the IkeConfig the SA runs under (a responder chose it)


@dataclass(frozen=True, kw_only=True)
class IkeSaRekeyed(Event):
    old_spi_i: bytes
    old_spi_r: bytes
    spi_i: bytes
    spi_r: bytes
    proposal: str


@dataclass(frozen=True, kw_only=True)
class IkeSaRestored(Event):
    """An IKE SA another process established was taken over from its snapshot (`ikev2lib.ha`); one
    ChildSaCreated per Child SA follows, with fresh ESP SA objects."""

    spi_i: bytes
    spi_r: bytes
    is_initiator: bool
    remote_addr: Address
    remote_id: str
    connection: str
    children: int


@dataclass(frozen=True, kw_only=True)
class IkeSaDeleted(Event):
    spi_i: bytes
    spi_r: bytes
    reason: str
    by_peer: bool


@dataclass(frozen=True, kw_only=True)
class ChildSaCreated(Event):
    child_id: int
    spi_in: bytes  # our inbound SPI (the peer sends with it)
    spi_out: bytes
    proposal: str
    mode: str  # "tunnel" or "transport"
    # RFC 3948: ESP goes UDP-encapsulated on the NAT-T port iff a NAT was detected (RFC 7296 2.23) or
    # `IkeConfig.encap` forced it; False: raw ESP, IP protocol 50
    udp_encap: bool
    local_ts: tuple[str, ...]
    remote_ts: tuple[str, ...]
    name: str = ""  # the ChildConfig's name
    # RFC 9611: None for an ordinary Child SA and for a per-resource group's fallback SA; k for the
    # group's SA of resource k (a data path sends on it from worker k only; its inbound SPI is k modulo
    # ChildConfig.per_cpu_sas). `per_resource` tells the fallback from an ordinary Child SA.
    resource: int | None = None
    per_resource: bool = False
    # ready-to-use ESP SA objects (ikev2lib.esp.EspSA, or what the endpoint's esp factory built)
    inbound: DataPlaneSA = field(repr=False, compare=False)
    outbound: DataPlaneSA = field(repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class ChildSaRekeyed(Event):
    """A Child SA replaced `old_child_id`. The old ESP SAs stay usable (inbound) until the matching
    ChildSaDeleted event for `old_child_id`, which follows when the delete exchange completes.

    `initiator`: we started the rekey, so the peer had the new inbound SA before we did and we can send
    on the new SA at once. As the responder, the peer installs the new SA only when our answer arrives:
    a data path keeps sending on the old SA until the peer uses the new one or deletes the old one
    (RFC 7296 2.8, what strongSwan does too), so that nothing is sent to an SA the peer lacks."""

    old_child_id: int
    child_id: int
    spi_in: bytes
    spi_out: bytes
    proposal: str
    udp_encap: bool  # as ChildSaCreated.udp_encap
    initiator: bool
    resource: int | None = None  # as ChildSaCreated.resource: a rekey keeps the old SA's
    per_resource: bool = False
    inbound: DataPlaneSA = field(repr=False, compare=False)
    outbound: DataPlaneSA = field(repr=False, compare=False)


@dataclass(frozen=True, kw_only=True)
class ChildSaDeleted(Event):
    child_id: int
    spi_in: bytes
    spi_out: bytes
    by_peer: bool


@dataclass(frozen=True, kw_only=True)
class ChildSaExpired(Event):
    """A Child SA reached a lifetime limit: `limit` is "packets", "bytes" (of one of its ESP SAs) or
    "time". Soft (`hard=False`): a rekey starts; ChildSaRekeyed follows if it succeeds. Hard: its ESP
    SAs refuse traffic (packets/bytes) and it is deleted; ChildSaDeleted follows."""

    child_id: int
    spi_in: bytes
    spi_out: bytes
    limit: str
    hard: bool


@dataclass(frozen=True, kw_only=True)
class PeerAddressChanged(Event):
    """The peer is behind a NAT whose mapping changed (RFC 7296 2.23): its authenticated IKE message,
    or authenticated ESP that the user reported (`IkeEndpoint.peer_address_seen`), came from
    `remote_addr`, and IKE now goes there. A data path moves every Child SA of this IKE SA there too."""

    old_addr: Address
    remote_addr: Address


@dataclass(frozen=True, slots=True)
class Redirection:
    """How a client came to its gateway (RFC 5685): the address of the gateway that sent it there
    (its REDIRECTED_FROM) and when each redirect of the chain came, on the engine's clock (loop
    detection). Pass it to `IkeEndpoint.initiate(..., redirection=)` to follow a redirect yourself."""

    from_gateway: str
    times: tuple[float, ...]


@dataclass(frozen=True, kw_only=True)
class IkeSaRedirected(Event):
    """The gateway sent us elsewhere (RFC 5685). `remote_addr` is where the engine went on: the same
    IKE SA handle (`new_ike_sa_id == ike_sa_id`) when the redirect answered IKE_SA_INIT, a new IKE SA
    of the same connection when it came on an established one (which is deleted). `gateway` is an
    address or a DNS name; for a name `remote_addr` and `new_ike_sa_id` are None: resolve it and call
    `IkeEndpoint.initiate(config, address, now, redirection=redirection)` (the asyncio driver does)."""

    gateway: str
    old_addr: Address
    remote_addr: Address | None
    new_ike_sa_id: int | None
    redirection: Redirection


@dataclass(frozen=True, kw_only=True)
class IkeSaAddressesUpdated(Event):
    """MOBIKE (RFC 4555) moved the IKE SA and its Child SAs to a new address pair: as original
    initiator after the peer's authentic answer to our UPDATE_SA_ADDRESSES, as responder after the
    return routability check of the peer's new address. `udp_encap`: the Child SAs' ESP
    encapsulation after the NAT re-check (as ChildSaCreated.udp_encap). A data path moves every Child
    SA of this IKE SA to `remote_addr` (sent from `local_addr`) with that encapsulation."""

    old_local_addr: Address
    local_addr: Address
    old_remote_addr: Address
    remote_addr: Address
    udp_encap: bool


@dataclass(frozen=True, kw_only=True)
class PeerDead(Event):
    """Retransmissions of a request were exhausted. An IkeSaDeleted event follows."""

    remote_addr: Address


@dataclass(frozen=True, kw_only=True)
class ProtocolErrorEvent(Event):
    """Something went wrong with the peer: a received error Notify, a failed negotiation or
    authentication, or invalid input that made the engine drop an exchange. `notify` is the Notify type
    involved (sent or received), if any."""

    remote_addr: Address | None
    description: str
    notify: int | None = None
    received: bool = False  # True: the peer sent us the notify; False: we detected the problem
