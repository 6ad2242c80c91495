"""An in-memory network for engine tests (aioquic's client_and_server idea, plus loss).

Endpoints are attached by IP; each has an IKE port and a NAT-T port. Datagrams that start with the
non-ESP marker travel between NAT-T ports, others between IKE ports. A seeded `random.Random` drops,
duplicates and delays (hence reorders) datagrams. Time is simulated: `run` jumps to the next delivery
or engine timer, so tests never depend on wall-clock timing. Every loop is bounded.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.natt import NATT_KEEPALIVE, NON_ESP_MARKER
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import Event

MAX_STEPS = 20_000  # bound on deliveries + timer firings per `run`


@dataclass
class Nat:
    """A NAPT in front of one node: what it sends leaves from `public_ip` and a port of the mapping; only
    datagrams to a mapped port come back in. `rebind()` forgets every mapping (a NAT reboot or a
    conntrack flush): the next datagram out gets a new port."""

    inside_ip: str
    public_ip: str
    next_port: int = 40000
    out: dict[int, int] = field(default_factory=dict)  # inside source port -> public port
    back: dict[int, int] = field(default_factory=dict)

    def outbound(self, port: int) -> int:
        if port not in self.out:
            self.out[port] = self.next_port
            self.back[self.next_port] = port
            self.next_port += 1
        return self.out[port]

    def rebind(self) -> None:
        self.out.clear()
        self.back.clear()


@dataclass
class Node:
    endpoint: IkeEndpoint
    ip: str
    ike_port: int
    natt_port: int
    events: list[Event] = field(default_factory=list)
    addresses: set[str] = field(default_factory=set)  # every IP it owns (MOBIKE tests add and remove some)

    def drain(self) -> None:
        while (event := self.endpoint.next_event()) is not None:
            self.events.append(event)

    def of_type(self, kind: type) -> list[Event]:
        self.drain()
        return [e for e in self.events if isinstance(e, kind)]


class Network:
    def __init__(
        self,
        *,
        seed: int = 0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        max_delay: float = 0.0,
        start: float = 1000.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.max_delay = max_delay
        self.now = start
        self.nodes: dict[str, Node] = {}
        self._queue: list[tuple[float, int, bytes, tuple[str, int], tuple[str, int]]] = []
        self._seq = 0
        self.delivered = 0
        self.dropped = 0
        self.tap: list[tuple[bytes, tuple[str, int], str]] = []  # every datagram sent (for replay tests)
        # tests that need one particular datagram lost: return True to drop it
        self.drop: Callable[[bytes, tuple[str, int], str], bool] | None = None
        self.nat: Nat | None = None  # one inside address behind a NAT
        self.nat_dropped = 0  # datagrams to the NAT's public address that matched no mapping
        self.owners: dict[str, Node] = {}  # IP -> the node that has it
        self.unroutable = 0  # datagrams from an address the node no longer has, or to one nobody has

    def add(self, endpoint: IkeEndpoint, *, natt_port: int = 4500) -> Node:
        ip, port = endpoint.ctx.local_addr
        node = Node(endpoint, ip, port, natt_port, addresses={ip})
        self.nodes[ip] = node
        self.owners[ip] = node
        return node

    def add_address(self, node: Node, ip: str) -> None:
        node.addresses.add(ip)
        self.owners[ip] = node

    def remove_address(self, node: Node, ip: str) -> None:
        node.addresses.discard(ip)
        if self.owners.get(ip) is node:
            del self.owners[ip]

    def _collect(self) -> bool:
        sent = False
        for node in self.nodes.values():
            for data, (dst_ip, dst_port), source in node.endpoint.datagrams_with_source(self.now):
                sent = True
                natt = data[:4] == NON_ESP_MARKER or data == NATT_KEEPALIVE
                src_port = node.natt_port if natt else node.ike_port
                src_ip = node.ip if source is None else source
                if src_ip not in node.addresses:  # a kernel cannot send from an address it lacks
                    self.unroutable += 1
                    continue
                src = (src_ip, src_port)
                if self.nat is not None and src_ip == self.nat.inside_ip:
                    src = (self.nat.public_ip, self.nat.outbound(src_port))
                self.tap.append((data, src, dst_ip))
                copies = 1
                if self.drop is not None and self.drop(data, src, dst_ip):
                    copies = 0
                    self.dropped += 1
                elif self.rng.random() < self.loss:
                    copies = 0
                    self.dropped += 1
                elif self.rng.random() < self.duplicate:
                    copies = 2
                for _ in range(copies):
                    delay = self.rng.uniform(0.0, self.max_delay) if self.max_delay else 0.0
                    self._seq += 1
                    heapq.heappush(self._queue, (self.now + delay, self._seq, data, src, (dst_ip, dst_port)))
        return sent

    def inject(self, data: bytes, src: tuple[str, int], dst_ip: str, dst_port: int = 0) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (self.now, self._seq, data, src, (dst_ip, dst_port)))

    def _deliver_to(self, dst: tuple[str, int]) -> Node | None:
        if self.nat is not None and dst[0] == self.nat.public_ip:
            if dst[1] not in self.nat.back:
                self.nat_dropped += 1
                return None
            return self.owners.get(self.nat.inside_ip)
        node = self.owners.get(dst[0])
        if node is None:
            self.unroutable += 1
        return node

    def _next_timer(self) -> float | None:
        timers = [t for t in (n.endpoint.get_timer() for n in self.nodes.values()) if t is not None]
        return min(timers) if timers else None

    def run(self, *, until: float | None = None, max_time: float = 600.0, idle_stop: bool = True) -> None:
        """Deliver datagrams and fire timers until nothing is in flight (and, with idle_stop, no
        timer is due before `until`), or until `until` / `max_time` simulated seconds pass."""
        deadline = self.now + max_time if until is None else until
        for _ in range(MAX_STEPS):
            self._collect()
            next_delivery = self._queue[0][0] if self._queue else None
            timer = self._next_timer()
            candidates = [t for t in (next_delivery, timer) if t is not None]
            if not candidates:
                return
            step = min(candidates)
            if step > deadline:
                self.now = max(self.now, deadline)
                return
            if next_delivery is None and idle_stop and until is None:
                # only timers left: stop unless something is still being retransmitted
                if not self._retransmitting():
                    return
            self.now = max(self.now, step)
            if next_delivery is not None and next_delivery <= self.now:
                _, _, data, src, dst = heapq.heappop(self._queue)
                node = self._deliver_to(dst)
                if node is not None:
                    self.delivered += 1
                    natted = self.nat is not None and dst[0] == self.nat.public_ip
                    local_ip = self.nat.inside_ip if natted and self.nat is not None else dst[0]
                    node.endpoint.receive_datagram(data, src, self.now, local_ip=local_ip)
            else:
                for node in self.nodes.values():
                    node.endpoint.handle_timer(self.now)
        raise AssertionError("network did not settle within MAX_STEPS")

    def _retransmitting(self) -> bool:
        for node in self.nodes.values():
            for conn in node.endpoint.connections():
                if not conn.window_free:
                    return True
        return False


def ike_config(
    *,
    local_id: str,
    remote_id: str | None = None,
    psk: bytes = b"correct horse battery staple",
    ike: str = "aes128gcm16-prfsha256-x25519",
    esp: str = "aes128gcm16",
    local_ts: tuple[str, ...] = ("10.1.0.0/16",),
    remote_ts: tuple[str, ...] = ("10.2.0.0/16",),
    **extra: object,
) -> IkeConfig:
    return IkeConfig(
        ike_proposals=ike,
        local_id=local_id,
        remote_id=remote_id,
        psk=psk,
        children=(ChildConfig(esp_proposals=esp, local_ts=local_ts, remote_ts=remote_ts),),
        **extra,  # type: ignore[arg-type]
    )


INITIATOR_IP = "192.0.2.1"
RESPONDER_IP = "192.0.2.2"


def pair(
    *,
    initiator: IkeConfig | None = None,
    responder: IkeConfig | None = None,
    seed: int = 0,
    loss: float = 0.0,
    duplicate: float = 0.0,
    max_delay: float = 0.0,
    **endpoint_args: object,
) -> tuple[Network, Node, Node, IkeConfig]:
    """A network with an initiator endpoint and a responder endpoint; returns the initiator config."""
    icfg = initiator or ike_config(local_id="alice@example.org", remote_id="gw.example.org")
    rcfg = responder or ike_config(
        local_id="gw.example.org", remote_id="alice@example.org", local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",)
    )
    net = Network(seed=seed, loss=loss, duplicate=duplicate, max_delay=max_delay)
    a = net.add(IkeEndpoint(local_addr=(INITIATOR_IP, 500), **endpoint_args))  # type: ignore[arg-type]
    b = net.add(IkeEndpoint(rcfg, local_addr=(RESPONDER_IP, 500), **endpoint_args))  # type: ignore[arg-type]
    return net, a, b, icfg
