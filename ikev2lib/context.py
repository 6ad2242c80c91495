"""What every IKE SA of one endpoint shares: output queues, counters, SPI allocation, the ESP factory.

`IkeEndpoint` owns one `EngineContext` and drains it; the IKE SAs and their exchanges only append to
it. SPIs are chosen here and nowhere else, so the collision checks cannot be forgotten by one caller.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from .child_sa import EspFactory, random_esp_spi
from .connections import ConnectionTable
from .events import Address, Event, Redirection
from .natt import NATT_KEEPALIVE, NON_ESP_MARKER
from .wire.redirect import Gateway

SA = TypeVar("SA")  # the IKE SA type (ike_sa.IkeSa), a parameter so that this module stays below it

__all__ = [
    "EngineContext",
    "MAX_QUEUED_EVENTS",
    "MAX_QUEUED_DATAGRAMS",
    "UNAUTHENTICATED_EVENT_SHARE",
]

MAX_QUEUED_EVENTS = 10_000  # undrained events kept (oldest dropped first)
MAX_QUEUED_DATAGRAMS = 10_000  # unsent datagrams kept (newest dropped)
# Events about unauthenticated input (a refused IKE_SA_INIT from a spoofable source) are only queued
# while the queue is below this fraction of MAX_QUEUED_EVENTS: a flood of them can never push out an
# event about a real SA, however slowly the user drains the queue.
UNAUTHENTICATED_EVENT_SHARE = 0.5


@dataclass
class EngineContext(Generic[SA]):
    local_addr: Address
    esp_factory: EspFactory
    # Seconds since the epoch, for certificate validity and CRLs only: every timer runs on the `now`
    # the caller passes (any monotonic origin). Injected so that tests can move a certificate's clock.
    wall_clock: Callable[[], float] = time.time
    connections: ConnectionTable = field(default_factory=ConnectionTable)  # what a responder serves
    events: deque[Event] = field(default_factory=deque)
    # (datagram, destination, source IP): None as the source is the endpoint's address (the driver's choice)
    outbox: list[tuple[bytes, Address, str | None]] = field(default_factory=list)
    natt_port: int = 4500  # our own NAT-T port (NAT detection hashes of MOBIKE messages, sent on it)
    local_addresses: tuple[str, ...] = ()  # the last `local_addresses_changed` list (empty: never told)
    # the local IP the datagram being received was sent to, when the driver says (None: unknown); an
    # answer leaves from it (RFC 7296 2.11), and MOBIKE learns the path from it
    arrived_at: str | None = None
    esp_spis: set[bytes] = field(default_factory=set)  # our live (or offered) inbound ESP SPIs
    ike_spis: set[bytes] = field(default_factory=set)  # our IKE SPIs in use (or offered in a rekey)
    stats: dict[str, int] = field(default_factory=dict)
    spawned: list[SA] = field(default_factory=list)  # IKE SAs born from rekeys, for the endpoint to register
    touched: set[SA] = field(default_factory=set)  # IKE SAs changed since the endpoint last settled them
    # established IKE SAs a gateway redirected (RFC 5685): the endpoint starts their successors
    redirects: list[tuple[SA, Gateway, Redirection]] = field(default_factory=list)
    _next_child_id: int = 1

    # ---- output ------------------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if len(self.events) >= MAX_QUEUED_EVENTS:  # the user is not draining next_event()
            self.events.popleft()
            self.count("events_dropped")
        self.events.append(event)

    def emit_unauthenticated(self, event: Event) -> None:
        """An event caused by input anyone can forge: dropped rather than evicting another event."""
        if len(self.events) >= MAX_QUEUED_EVENTS * UNAUTHENTICATED_EVENT_SHARE:
            self.count("unauthenticated_events_dropped")
            return
        self.events.append(event)

    def send(self, datagram: bytes, addr: Address, *, natt: bool = False, source: str | None = None) -> None:
        """Queue one IKE message (with the non-ESP marker when it goes to a NAT-T port), sent from
        `source` (an IP address of ours; None: the endpoint's)."""
        if len(self.outbox) >= MAX_QUEUED_DATAGRAMS:  # the user is not calling datagrams_to_send()
            self.count("datagrams_dropped")
            return
        self.outbox.append((NON_ESP_MARKER + datagram if natt else datagram, addr, source))

    def send_keepalive(self, addr: Address, source: str | None = None) -> None:
        """Queue one NAT keepalive (RFC 3948 2.3: a single 0xFF octet to the NAT-T port, no marker)."""
        if len(self.outbox) >= MAX_QUEUED_DATAGRAMS:
            self.count("datagrams_dropped")
            return
        self.outbox.append((NATT_KEEPALIVE, addr, source))
        self.count("natt_keepalives_sent")

    def touch(self, sa: SA) -> None:
        """`sa` changed outside its own receive/timer call: the endpoint reschedules or forgets it."""
        self.touched.add(sa)

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    # ---- identifiers -------------------------------------------------------------------------------

    def new_child_id(self) -> int:
        value = self._next_child_id
        self._next_child_id += 1
        return value

    def reserve_child_id(self, child_id: int) -> None:
        """A Child SA id taken over from another process: ours continue above it."""
        self._next_child_id = max(self._next_child_id, child_id + 1)

    def new_esp_spi(self, residue: tuple[int, int] | None = None) -> bytes:
        """A fresh inbound ESP SPI, reserved until `release_esp_spi` (`residue`: see random_esp_spi)."""
        while True:
            spi = random_esp_spi(residue)
            if spi not in self.esp_spis:
                self.esp_spis.add(spi)
                return spi

    def release_esp_spi(self, spi: bytes) -> None:
        self.esp_spis.discard(spi)

    def new_ike_spi(self) -> bytes:
        """A fresh IKE SPI of ours, reserved until `release_ike_spi`. Never starts with four zero
        octets: on port 500 such a message would read as marker-prefixed (see IkeEndpoint)."""
        while True:
            spi = os.urandom(8)
            if spi[:4] != NON_ESP_MARKER and spi not in self.ike_spis:
                self.ike_spis.add(spi)
                return spi

    def release_ike_spi(self, spi: bytes) -> None:
        self.ike_spis.discard(spi)
