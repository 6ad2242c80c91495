"""Shared setup of the engine-vs-strongSwan tests: charon in `right`, ikev2lib in `left`.

charon runs in the `right` namespace (192.0.2.2, inner 10.2.0.1) with kernel-libipsec (always
UDP-encapsulated ESP on 4500, no ESN); ikev2lib runs in `left` (192.0.2.1, inner 10.1.0.1) through its
asyncio driver (`ikev2lib_peer.IkeLibPeer`). `make_pair(...)` (a fixture: import it, and `peers`, into a
test module) configures both for the same PSK tunnel; `establish()` brings it up with either side
initiating and checks that both agree; `esp_both_ways()` sends real IPv4/UDP packets through the ESP
SAs: ikev2lib -> charon is received by a UDP socket in charon's namespace (and counted by charon),
charon -> ikev2lib is decapsulated by ikev2lib's inbound SA to the exact payload.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ikev2lib.child_sa import EspFactory, default_esp_factory
from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.events import ChildSaCreated, IkeSaEstablished, PeerDead, ProtocolErrorEvent
from ikev2lib.proposals import parse_proposals
from ikev2lib.wire import ProtocolId

from .fixtures import CharonFactory
from .ikev2lib_peer import IkeLibPeer, start_receiver, udp_ipv4_packet, udp_payload_of
from .netns import NamespacePair
from .strongswan import Charon, CharonSettings, ChildSA, IkeSA, SwanctlConfig, psk_connection_pair
from .traffic import udp_send

PSK = "interop-test-psk-0123456789abcdef"
LEFT_TS, RIGHT_TS = "10.1.0.0/16", "10.2.0.0/16"
LEFT_INNER, RIGHT_INNER = "10.1.0.1", "10.2.0.1"
CONN, CHILD = "conn", "net"
TRAFFIC_PORT = 5001
DATAGRAMS = 3  # per direction and check
RECEIVER_DIR = tempfile.gettempdir()  # where a receiver in charon's namespace signals that it is bound
RECEIVE_TIMEOUT = 10.0  # seconds a UDP receiver in charon's namespace waits
SEND_INTERVAL = 0.02  # seconds between datagrams sent by charon's side
TIMING_STATS = {"natt_keepalives", "retransmitted_requests", "retransmissions"}
ROLES = ("ikev2lib-initiator", "charon-initiator")
IKE_SA_INIT, IKE_AUTH = 34, 35
SK, IDI, IDR, AUTH_PAYLOAD, SKF = 46, 35, 36, 39, 53
FRAGMENT_SIZE = 300  # IKE fragment size (IP payload) both sides use in the fragmentation test


# ---- setup ----------------------------------------------------------------------------------------


@dataclass
class Pair:
    """charon (right) and ikev2lib (left), configured for the same PSK tunnel; not yet connected."""

    ns: NamespacePair
    charon: Charon
    peer: IkeLibPeer
    config: IkeConfig  # ikev2lib's (responder config and initiator config)
    charon_config: SwanctlConfig
    ike_sa_id: int | None = None
    child_id: int | None = None  # ikev2lib's current Child SA


@pytest.fixture
def peers(netns_pair: NamespacePair) -> Iterator[list[IkeLibPeer]]:
    """ikev2lib peers to close before the namespaces go away."""
    started: list[IkeLibPeer] = []
    yield started
    for peer in started:
        peer.close()


PairFactory = Callable[..., Pair]


@pytest.fixture
def make_pair(netns_pair: NamespacePair, charon_factory: CharonFactory, peers: list[IkeLibPeer]) -> PairFactory:
    def make(*, ike: str = "aes128gcm16-prfsha256-x25519", esp: str = "aes128gcm16-x25519",
             charon_ike: str | None = None, charon_esp: str | None = None,
             settings: CharonSettings | None = None, cookie_threshold: int = 1_000,
             ikev2lib_options: dict[str, Any] | None = None, esp_factory: EspFactory | None = None,
             before_load: Callable[[Charon], None] | None = None, child_options: dict[str, Any] | None = None,
             **conn_kwargs: Any) -> Pair:
        _, right_cfg = psk_connection_pair(
            netns_pair.left_addr, netns_pair.right_addr, conn=CONN, child=CHILD,
            proposals=[charon_ike or ike], esp_proposals=[charon_esp or esp], psk=PSK,
            left_ts=(LEFT_TS,), right_ts=(RIGHT_TS,), **conn_kwargs)
        charon = charon_factory(netns_pair.right, "right",
                                settings or CharonSettings(log_levels={"default": 1, "ike": 2, "cfg": 2}))
        if before_load is not None:  # e.g. certificates and keys into charon's swanctl directory
            before_load(charon)
        charon.load(right_cfg)
        config = IkeConfig(
            ike_proposals=ike, local_id="left", remote_id="right", psk=PSK.encode(), **(ikev2lib_options or {}),
            children=(ChildConfig(name=CHILD, esp_proposals=esp, local_ts=(LEFT_TS,), remote_ts=(RIGHT_TS,),
                                  **(child_options or {})),),
        )
        peer = IkeLibPeer(netns_pair.left, netns_pair.left_addr, config, cookie_threshold=cookie_threshold,
                          esp_factory=esp_factory or default_esp_factory)
        peers.append(peer)
        peer.start()
        return Pair(netns_pair, charon, peer, config, right_cfg)

    return make


def establish(pair: Pair, role: str) -> tuple[IkeSaEstablished, ChildSaCreated, IkeSA, ChildSA]:
    """Bring up IKE SA + Child SA with `role` initiating; check both sides agree."""
    if role == "ikev2lib-initiator":
        pair.peer.initiate(pair.config, pair.ns.right_addr)
    else:
        pair.charon.initiate(child=CHILD)  # blocks until IKE_AUTH ends; ikev2lib answers from its thread
    est = pair.peer.wait_for(IkeSaEstablished)
    child = pair.peer.wait_for(ChildSaCreated)
    ike = pair.charon.wait_for_ike(CONN)
    ch = pair.charon.wait_for_child(CHILD)
    assert est.is_initiator == (role == "ikev2lib-initiator") == (not ike.initiator)
    assert (ike.spi_i, ike.spi_r) == (est.spi_i.hex(), est.spi_r.hex())
    assert (est.local_id, est.remote_id) == ("left", "right")
    assert est.udp_encap and child.udp_encap and ch.encap  # libipsec fakes a NAT: UDP encapsulation
    assert est.remote_addr == (pair.ns.right_addr, 4500)
    assert (ch.spi_in, ch.spi_out) == (child.spi_out.hex(), child.spi_in.hex())
    assert (child.local_ts, child.remote_ts) == ((LEFT_TS,), (RIGHT_TS,))
    assert (ch.local_ts, ch.remote_ts) == ([RIGHT_TS], [LEFT_TS])
    assert child.mode == "tunnel" and ch.mode == "TUNNEL"
    pair.ike_sa_id, pair.child_id = est.ike_sa_id, child.child_id
    return est, child, ike, ch


# ---- ESP traffic ----------------------------------------------------------------------------------


def _charon_child(charon: Charon, spi_in: str) -> ChildSA:
    return charon.wait_for_child(CHILD, where=lambda c: c.spi_in == spi_in)


def esp_to_charon(pair: Pair, child_id: int, charon_spi_in: str, tag: str) -> None:
    """ikev2lib encapsulates IPv4/UDP packets 10.1.0.1 -> 10.2.0.1 with its outbound SA; charon
    decapsulates them and a UDP socket in its namespace receives them."""
    before = _charon_child(pair.charon, charon_spi_in).packets_in
    receiver = start_receiver(pair.ns.right, RIGHT_INNER, TRAFFIC_PORT, DATAGRAMS, RECEIVE_TIMEOUT, RECEIVER_DIR)
    payloads = [f"ikev2lib->charon {tag} {i}".encode() for i in range(DATAGRAMS)]
    for i, payload in enumerate(payloads):
        pair.peer.send_esp(child_id, udp_ipv4_packet(LEFT_INNER, RIGHT_INNER, 4000, TRAFFIC_PORT, payload, i))
    got = receiver.result(timeout=RECEIVE_TIMEOUT + 5)
    assert [data for data, _ in got] == payloads
    assert {src for _, src in got} == {LEFT_INNER}
    after = pair.charon.wait_for_child(CHILD, where=lambda c: c.spi_in == charon_spi_in
                                       and c.packets_in >= before + DATAGRAMS)
    assert after.bytes_in > 0


def esp_from_charon(pair: Pair, child_id: int, tag: str) -> None:
    """charon's namespace sends UDP 10.2.0.1 -> 10.1.0.1 into its tunnel; ikev2lib's inbound SA
    decapsulates each ESP packet to exactly that IPv4/UDP datagram."""
    start = len(pair.peer.wait_for_esp(0, timeout=0))
    payloads = [f"charon->ikev2lib {tag} {i}".encode() for i in range(DATAGRAMS)]
    pair.ns.right.call(udp_send, RIGHT_INNER, LEFT_INNER, TRAFFIC_PORT, payloads, SEND_INTERVAL)
    got = pair.peer.wait_for_esp(start + DATAGRAMS)[start:]
    assert [r.child_id for r in got] == [child_id] * DATAGRAMS
    assert all(r.next_header == 4 for r in got)  # tunnel mode: IPv4 inside
    decoded = [udp_payload_of(r.inner) for r in got]
    assert [(d[0], d[1], d[3], d[4]) if d else None for d in decoded] == [
        (RIGHT_INNER, LEFT_INNER, TRAFFIC_PORT, p) for p in payloads]


def esp_both_ways(pair: Pair, child_id: int, charon_spi_in: str, tag: str) -> None:
    esp_to_charon(pair, child_id, charon_spi_in, tag)
    esp_from_charon(pair, child_id, tag)


def same_transforms(a: str, b: str) -> bool:
    """Two single IKE proposals in strongSwan keywords name the same transforms (the engine spells
    out implied ones, e.g. `aes256-sha256` selects prfsha256 too)."""
    def key(text: str) -> set[tuple[int, int, int | None]]:
        (proposal,) = parse_proposals(text, ProtocolId.IKE)
        return {(int(t.transform_type), int(t.transform_id), t.key_length) for t in proposal.transforms}
    return key(a) == key(b)


def no_errors(pair: Pair) -> None:
    """Neither side saw a protocol error; ikev2lib dropped nothing. (Retransmissions are allowed: on a
    loaded machine a 2 s retransmission timer can fire before an answer arrives.)"""
    errors = [e for e in pair.peer.all_events() if isinstance(e, (ProtocolErrorEvent, PeerDead))]
    assert errors == []
    stats = pair.peer.call(lambda: pair.peer.endpoint.stats)
    assert {k: v for k, v in stats.items() if k not in TIMING_STATS} == {}
    assert pair.peer.call(lambda: pair.peer.driver.esp_dropped if pair.peer.driver else -1) == 0
    bad = re.compile(r"invalid|failed|unacceptable|ignor|error|discard|not supported|unknown")
    # a retransmitted request (or its duplicate answer) arriving while charon still works on the first
    benign = re.compile(r"ignoring request with ID \d+, already processing|retransmit")
    assert [line for line in pair.charon.log_text().splitlines() if bad.search(line) and not benign.search(line)] == []
