"""Prometheus metrics of `ikev2lib run` (`--metrics ADDR:PORT`).

Two sources, both read without per-packet Python work:

* `GatewayMetrics.observe(event, now, endpoint)`: the gateway hands over every engine event. Counters
  of state transitions, rekeys, rekey failures and the handshake latency histogram come from there
  (a few dict updates per IKE/Child SA event, never per packet).
* `collect()`, at scrape time: IKE and Child SAs by state straight from the endpoints, the engine's
  counters (`IkeEndpoint.stats`), and the data path's counters (`Gateway.tunnel_counters()`,
  `Gateway.datapath_drops()`, maintained by the data plane in C batches).

Labels stay bounded: connection and child names come from the configuration; state, role, reason,
direction and limit come from fixed sets. No label ever holds an SPI, an ike_sa_id or an address.

Rekey failures (what is counted, since no event says "rekey failed" by itself):

* Child SA: a soft `ChildSaExpired` starts our rekey of that Child SA (exchanges/timed.py). It
  succeeded if `ChildSaRekeyed(old_child_id=...)` follows; it failed if, before that, a
  `ProtocolErrorEvent` arrives on the IKE SA while the Child SA is no longer REKEYING (the engine
  sets it back to INSTALLED on a refused or unusable answer), the Child SA is deleted, or another
  soft expiry starts a new attempt.
* IKE SA: the `ProtocolErrorEvent` whose description starts with `IKE_REKEY_FAILURE_PREFIX`
  (exchanges/ike_rekey.py reports a refused or unusable answer that way). A rekey whose
  retransmissions run out ends the IKE SA instead: it shows in `ikev2lib_peers_dead_total`.

Handshake latency: the engine stamps each IkeSa with `created_at` (initiator: `initiate`, before
IKE_SA_INIT is sent; responder: when the IKE_SA_INIT request arrived) and `established_at` (IKE_AUTH
done), both on the driver's clock; the histogram observes their difference at `IkeSaEstablished`,
for both roles (label `role`). The initiator's figure includes COOKIE and INVALID_KE_PAYLOAD
round trips; the responder's spans from its IKE_SA_INIT answer to the IKE_AUTH request.

The HTTP endpoint (`serve`) runs on the gateway's asyncio loop, so a scrape reads the engine's
state on the thread that changes it: no locks, no torn reads.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..config import IkeConfig
from ..endpoint import IkeEndpoint
from ..events import (
    ChildSaCreated,
    ChildSaDeleted,
    ChildSaExpired,
    ChildSaRekeyed,
    Event,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    PeerDead,
    ProtocolErrorEvent,
)
from ..exceptions import LocalProtocolError
from ..ike_sa import IkeSa
from ..state import ChildState, IkeState
from .counters import DROP_REASONS, TunnelCounters

__all__ = [
    "GatewayMetrics",
    "HANDSHAKE_BUCKETS",
    "IKE_REKEY_FAILURE_PREFIX",
    "ListenAddressError",
    "MetricsServer",
    "parse_listen",
]

log = logging.getLogger("ikev2lib.gateway.metrics")

PREFIX = "ikev2lib"
# seconds; an IKE_SA_INIT + IKE_AUTH on a LAN takes milliseconds, with retransmissions many seconds
HANDSHAKE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# how exchanges/ike_rekey.py begins the ProtocolErrorEvent of a failed IKE SA rekey (a test holds them equal)
IKE_REKEY_FAILURE_PREFIX = "IKE SA rekey failed"

# IkeSaDeleted.reason is free text (it may quote a peer's error): folded into this fixed set
_DELETE_CAUSES = {
    "deleted": "local",
    "deleted by peer": "peer",
    "replaced": "replaced",
    "rekey abandoned": "replaced",
    "delete not answered": "timeout",
    "peer dead (retransmissions exhausted)": "dead_peer",
    "abandoned locally": "abandoned",
}
_OTHER_DELETE_CAUSE = "error"  # a failed negotiation, authentication or exchange
_DELETE_CAUSE_NAMES = tuple(dict.fromkeys([*_DELETE_CAUSES.values(), _OTHER_DELETE_CAUSE]))
_EXPIRY_KINDS = tuple((limit, kind) for limit in ("time", "bytes", "packets") for kind in ("soft", "hard"))
_IKE_STATES = tuple(s.value for s in IkeState if s not in (IkeState.DELETED, IkeState.FAILED))
_CHILD_STATES = tuple(s.value for s in ChildState if s is not ChildState.DELETED)
# engine counters always exported (0 until they happen) so that dashboards and alerts find them
_ENGINE_COUNTERS = {
    "retransmissions": "IKE requests of ours sent again because no answer came",
    "retransmitted_requests": "retransmitted requests of peers answered from the response cache",
    "half_open_expired": "responder IKE SAs dropped because IKE_AUTH never came",
    "sa_init_refused": "IKE_SA_INIT requests refused (no proposal, wrong KE group, ...)",
    "authentication_failed": "IKE_AUTH exchanges whose authentication failed",
    "cookies_sent": "COOKIE challenges sent (many half-open SAs)",
    "no_matching_connection": "IKE_SA_INIT requests no configured connection accepts",
    "dropped": "IKE datagrams dropped as unparsable or unexpected",
}
_ENGINE_COUNTER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_UNKNOWN_DROP_REASON = "error"  # a reason outside DROP_REASONS is a bug of the data path: count it as one

# ---- the HTTP endpoint ---------------------------------------------------------------------------------
MAX_REQUEST_HEAD = 8192  # bytes of request line and headers read from a scraper
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request and read the answer
MAX_CLIENTS = 16  # concurrent connections; more are closed at once (a scraper needs one)
METRICS_PATHS = ("/metrics", "/")
# the classic text format generate_latest writes (names are plain ASCII): what every Prometheus reads
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Listener(Protocol):
    @property
    def driver(self) -> _Driver: ...


class _Driver(Protocol):
    @property
    def endpoint(self) -> IkeEndpoint: ...


class _Connection(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def config(self) -> IkeConfig: ...


class _Config(Protocol):
    @property
    def connections(self) -> Sequence[_Connection]: ...


class MetricsSource(Protocol):
    """What the collector reads of a running gateway (`run.Gateway`). The data path's counters,
    `tunnel_counters() -> dict[str, TunnelCounters]` and `datapath_drops() -> dict[str, int]`, are
    looked up by name: a gateway without them exports no tunnel metrics."""

    @property
    def listeners(self) -> Sequence[_Listener]: ...

    @property
    def config(self) -> _Config | None: ...


class _Histogram:
    """Cumulative bucket counts as the exposition wants them, per label tuple."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.bounds) + 1))  # the last one is +Inf
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                counts[index] += 1
        counts[-1] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def family(self, name: str, documentation: str, label_names: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for labels, counts in sorted(self.counts.items()):
            buckets = [(repr(float(b)), float(c)) for b, c in zip(self.bounds, counts)]
            buckets.append(("+Inf", float(counts[-1])))
            family.add_metric(list(labels), buckets, self.sums[labels])
        return family


class GatewayMetrics(Collector):
    """Metrics of one gateway on a registry of its own (`self.registry`), so that tests and programs
    can build many gateways in one process."""

    def __init__(self, gateway: MetricsSource | None = None) -> None:
        self.gateway = gateway
        self.registry = CollectorRegistry(auto_describe=False)
        # (scope, ike_sa_id) -> connection name; scope tells endpoints apart (each counts ids from 1)
        self._connection_of: dict[tuple[int, int], str] = {}
        # (scope, ike_sa_id, child_id) -> child name, for the events that carry only the child_id
        self._child_of: dict[tuple[int, int, int], str] = {}
        self._rekeying: set[tuple[int, int, int]] = set()  # Child SAs whose rekey we started
        self._ike_sas: Counter[tuple[str, ...]] = Counter()  # (connection, event)
        self._ike_deleted: Counter[tuple[str, ...]] = Counter()  # (connection, cause)
        self._child_sas: Counter[tuple[str, ...]] = Counter()  # (connection, child, event)
        self._child_expired: Counter[tuple[str, ...]] = Counter()  # (connection, child, limit, kind)
        self._rekey_failures: Counter[tuple[str, ...]] = Counter()  # (connection, sa)
        self._protocol_errors: Counter[tuple[str, ...]] = Counter()  # (connection, origin)
        self._peers_dead: Counter[tuple[str, ...]] = Counter()
        self._handshake = _Histogram(HANDSHAKE_BUCKETS)
        self.registry.register(self)

    # ---- events ------------------------------------------------------------------------------------

    def observe(self, event: Event, now: float, endpoint: IkeEndpoint | None = None) -> None:
        """Count one engine event. `endpoint` is the one that emitted it (its IKE SAs are looked up
        for names and timestamps); `now` is the driver's clock, used when the IKE SA is gone."""
        # Each endpoint counts ike_sa_ids from 1: keys carry the endpoint's identity. Entries go at the
        # IKE SA's IkeSaDeleted, so none outlives its endpoint (whose id() could then be reused).
        scope = id(endpoint)
        ike_sa_id = event.ike_sa_id
        sa = _find(endpoint, ike_sa_id)
        if isinstance(event, IkeSaEstablished):
            name = event.connection or (sa.config.name if sa is not None else "")
            self._connection_of[(scope, event.ike_sa_id or 0)] = name
            self._ike_sas[(name, "established")] += 1
            if sa is not None:
                finished = sa.established_at if sa.established_at is not None else now
                role = "initiator" if event.is_initiator else "responder"
                self._handshake.observe((name, role), max(finished - sa.created_at, 0.0))
            return
        connection = self._name(scope, ike_sa_id, sa)
        if isinstance(event, IkeSaRekeyed):
            self._ike_sas[(connection, "rekeyed")] += 1
        elif isinstance(event, IkeSaDeleted):
            self._ike_sas[(connection, "deleted")] += 1
            self._ike_deleted[(connection, _DELETE_CAUSES.get(event.reason, _OTHER_DELETE_CAUSE))] += 1
            self._forget_ike_sa(scope, ike_sa_id or 0)
        elif isinstance(event, ChildSaCreated):
            key = (scope, ike_sa_id or 0, event.child_id)
            self._child_of[key] = event.name
            self._child_sas[(connection, event.name, "created")] += 1
        elif isinstance(event, ChildSaRekeyed):
            old = (scope, ike_sa_id or 0, event.old_child_id)
            child = self._child_name(old, sa)
            self._child_of[(scope, ike_sa_id or 0, event.child_id)] = child
            self._rekeying.discard(old)
            self._child_sas[(connection, child, "rekeyed")] += 1
        elif isinstance(event, ChildSaExpired):
            key = (scope, ike_sa_id or 0, event.child_id)
            child = self._child_name(key, sa)
            self._child_expired[(connection, child, event.limit, "hard" if event.hard else "soft")] += 1
            if not event.hard:
                if key in self._rekeying:  # a new attempt: the previous one did not succeed
                    self._rekey_failures[(connection, "child")] += 1
                self._rekeying.add(key)
        elif isinstance(event, ChildSaDeleted):
            key = (scope, ike_sa_id or 0, event.child_id)
            child = self._child_name(key, sa)
            self._child_sas[(connection, child, "deleted")] += 1
            if key in self._rekeying:  # gone before its rekey succeeded
                self._rekeying.discard(key)
                self._rekey_failures[(connection, "child")] += 1
            self._child_of.pop(key, None)
        elif isinstance(event, ProtocolErrorEvent):
            self._protocol_errors[(connection, "peer" if event.received else "local")] += 1
            if event.description.startswith(IKE_REKEY_FAILURE_PREFIX):
                self._rekey_failures[(connection, "ike")] += 1
            self._settle_child_rekeys(scope, ike_sa_id or 0, connection, sa)
        elif isinstance(event, PeerDead):
            self._peers_dead[(connection,)] += 1

    def _settle_child_rekeys(self, scope: int, ike_sa_id: int, connection: str, sa: IkeSa | None) -> None:
        # Window size 1: an error on an IKE SA whose rekeyed Child SA is no longer REKEYING is that
        # rekey's answer (refused or unusable); one still REKEYING is still waiting for its answer.
        for key in [k for k in self._rekeying if k[0] == scope and k[1] == ike_sa_id]:
            child = sa.children.get(key[2]) if sa is not None else None
            if child is None or child.state is not ChildState.REKEYING:
                self._rekeying.discard(key)
                self._rekey_failures[(connection, "child")] += 1

    def _name(self, scope: int, ike_sa_id: int | None, sa: IkeSa | None) -> str:
        if ike_sa_id is None:
            return ""  # before any IKE SA exists (a refused IKE_SA_INIT): no connection yet
        known = self._connection_of.get((scope, ike_sa_id))
        if known is not None:
            return known
        return sa.config.name if sa is not None else ""

    def _child_name(self, key: tuple[int, int, int], sa: IkeSa | None) -> str:
        known = self._child_of.get(key)
        if known is not None:
            return known
        child = sa.children.get(key[2]) if sa is not None else None
        return child.config_name if child is not None else ""

    def _forget_ike_sa(self, scope: int, ike_sa_id: int) -> None:
        self._connection_of.pop((scope, ike_sa_id), None)
        for key in [k for k in self._child_of if k[0] == scope and k[1] == ike_sa_id]:
            del self._child_of[key]
        # its ChildSaDeleted events came first and settled its rekeys; this is a safety net
        self._rekeying = {k for k in self._rekeying if not (k[0] == scope and k[1] == ike_sa_id)}

    # ---- scrape ------------------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        # Every configured connection (and child) gets its series at 0 from the start: rate() and
        # absence alerts need a series before the first event.
        names = self._configured()
        children = [(name, child) for name, childs in names.items() for child in childs]
        yield from self._sa_gauges(names)
        yield _counter(f"{PREFIX}_ike_sa_events", "IKE SA transitions: established, rekeyed, deleted",
                       ("connection", "event"),
                       _zeros(self._ike_sas, names, ("established", "rekeyed", "deleted")))
        yield _counter(f"{PREFIX}_ike_sas_deleted", "IKE SAs gone, by cause (local, peer, replaced, timeout, "
                       "dead_peer, abandoned, error)", ("connection", "cause"),
                       _zeros(self._ike_deleted, names, _DELETE_CAUSE_NAMES))
        yield _counter(f"{PREFIX}_child_sa_events", "Child SA transitions: created, rekeyed, deleted",
                       ("connection", "child", "event"),
                       _zeros(self._child_sas, children, ("created", "rekeyed", "deleted")))
        yield _counter(f"{PREFIX}_child_sas_expired", "Child SA lifetime limits reached (soft: a rekey starts; "
                       "hard: deleted)", ("connection", "child", "limit", "kind"),
                       _zeros(self._child_expired, children, _EXPIRY_KINDS))
        yield _counter(f"{PREFIX}_rekey_failures", "rekeys of ours that did not complete (sa: ike or child)",
                       ("connection", "sa"), _zeros(self._rekey_failures, names, ("ike", "child")))
        yield _counter(f"{PREFIX}_protocol_errors", "failed exchanges, negotiations and authentications "
                       "(origin peer: the peer sent an error Notify)", ("connection", "origin"),
                       _zeros(self._protocol_errors, names, ("local", "peer")))
        yield _counter(f"{PREFIX}_peers_dead", "IKE SAs ended because our retransmissions were exhausted",
                       ("connection",), _zeros(self._peers_dead, names, ((),)))
        yield self._handshake.family(f"{PREFIX}_handshake_duration_seconds",
                                     "IKE_SA_INIT + IKE_AUTH: from the IKE SA's creation to its establishment",
                                     ("connection", "role"))
        yield from self._engine_counters()
        yield from self._tunnel_metrics()

    def _endpoints(self) -> list[IkeEndpoint]:
        return [listener.driver.endpoint for listener in self.gateway.listeners] if self.gateway is not None else []

    def _configured(self) -> dict[str, tuple[str, ...]]:
        """Connection name -> its children's names, from the configuration in force."""
        config = self.gateway.config if self.gateway is not None else None
        if config is None:
            return {}
        return {c.name: tuple(child.name for child in c.config.children) for c in config.connections}

    def _sa_gauges(self, names: Mapping[str, tuple[str, ...]]) -> Iterator[Metric]:
        ike: Counter[tuple[str, ...]] = Counter({(n, s): 0 for n in names for s in _IKE_STATES})
        children: Counter[tuple[str, ...]] = Counter(
            {(n, c, s): 0 for n, childs in names.items() for c in childs for s in _CHILD_STATES})
        encapsulated: Counter[tuple[str, ...]] = Counter({(n,): 0 for n in names})
        for endpoint in self._endpoints():
            for sa in endpoint.connections():
                if sa.hidden or sa.finished:  # a rekey's half, or about to be forgotten: not a SA of its own
                    continue
                name = sa.config.name
                ike[(name, sa.state.value)] += 1
                encapsulated[(name,)] += 1 if (sa.natt or sa.nat_detected) else 0
                for child in list(sa.children.values()):
                    children[(name, child.config_name, child.state.value)] += 1
        yield _gauge(f"{PREFIX}_ike_sas", "IKE SAs by state", ("connection", "state"), ike)
        yield _gauge(f"{PREFIX}_child_sas", "Child SAs by state", ("connection", "child", "state"), children)
        yield _gauge(f"{PREFIX}_ike_sas_udp_encap", "IKE SAs using NAT traversal (UDP 4500, ESP in UDP)",
                     ("connection",), encapsulated)

    def _engine_counters(self) -> Iterator[Metric]:
        totals: Counter[str] = Counter({name: 0 for name in _ENGINE_COUNTERS})
        for endpoint in self._endpoints():
            totals.update(endpoint.stats)
        for name, value in sorted(totals.items()):
            if not _ENGINE_COUNTER_NAME.match(name):
                continue  # never turn an unexpected string into a metric name
            help_text = _ENGINE_COUNTERS.get(name, f"IKE engine counter {name!r} (IkeEndpoint.stats)")
            family = CounterMetricFamily(f"{PREFIX}_engine_{name}", help_text)
            family.add_metric([], float(value))
            yield family

    def _tunnel_metrics(self) -> Iterator[Metric]:
        tunnels = _call(self.gateway, "tunnel_counters")
        if isinstance(tunnels, Mapping):
            packets: Counter[tuple[str, ...]] = Counter()
            octets: Counter[tuple[str, ...]] = Counter()
            drops: Counter[tuple[str, ...]] = Counter()
            for name, counters in tunnels.items():
                if not isinstance(counters, TunnelCounters):
                    continue
                packets[(name, "in")] += counters.packets_in
                packets[(name, "out")] += counters.packets_out
                octets[(name, "in")] += counters.bytes_in
                octets[(name, "out")] += counters.bytes_out
                for reason, value in _drop_counts(counters.drops).items():
                    drops[(name, reason)] += value
            yield _counter(f"{PREFIX}_tunnel_packets", "inner packets through a connection's tunnels",
                           ("connection", "direction"), packets)
            yield _counter(f"{PREFIX}_tunnel_bytes", "inner (plaintext) bytes through a connection's tunnels",
                           ("connection", "direction"), octets)
            yield _counter(f"{PREFIX}_tunnel_drops", "packets of a connection's tunnels dropped, by reason",
                           ("connection", "reason"), drops)
        gateway_drops = _call(self.gateway, "datapath_drops")
        if isinstance(gateway_drops, Mapping):
            yield _counter(f"{PREFIX}_datapath_drops", "packets dropped before any connection was found, by reason",
                           ("reason",), {(reason,): value for reason, value in _drop_counts(gateway_drops).items()})

    # ---- exposition --------------------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format (version 0.0.4) of everything on `registry`."""
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> MetricsServer:
        """Answer `GET /metrics` on host:port (port 0: any free port) on the running asyncio loop."""
        server = MetricsServer(self)
        await server.start(host, port)
        return server


def _find(endpoint: IkeEndpoint | None, ike_sa_id: int | None) -> IkeSa | None:
    if endpoint is None or ike_sa_id is None:
        return None
    try:
        return endpoint.connection(ike_sa_id)
    except LocalProtocolError:  # forgotten already (the event waited in the driver's queue)
        return None


def _call(gateway: object, method: str) -> object:
    # The data path's counters arrive with the data-path work; until then a gateway lacks them.
    function = getattr(gateway, method, None)
    return function() if callable(function) else None


def _zeros(counts: Counter[tuple[str, ...]], heads: Iterable[str | tuple[str, ...]],
           tails: Iterable[str | tuple[str, ...]]) -> Counter[tuple[str, ...]]:
    """`counts` plus a 0 for every head + tail label combination it lacks."""
    filled = Counter({_labels(head) + _labels(tail): 0 for head in heads for tail in tails})
    filled.update(counts)
    return filled


def _labels(part: str | tuple[str, ...]) -> tuple[str, ...]:
    return (part,) if isinstance(part, str) else part


def _drop_counts(drops: Mapping[str, int]) -> Counter[str]:
    """Every reason of DROP_REASONS (0 until it happens, so rates work), unknown ones folded in."""
    counts: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
    for reason, value in drops.items():
        counts[reason if reason in DROP_REASONS else _UNKNOWN_DROP_REASON] += int(value)
    return counts


def _counter(name: str, documentation: str, labels: Sequence[str],
             values: Mapping[tuple[str, ...], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), float(value))
    return family


def _gauge(name: str, documentation: str, labels: Sequence[str],
           values: Mapping[tuple[str, ...], int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), float(value))
    return family


# ---- the HTTP endpoint ---------------------------------------------------------------------------------


class MetricsServer:
    """A minimal HTTP/1.1 server for scrapers: one request per connection, `GET` or `HEAD` of
    `/metrics` (or `/`). It runs on the gateway's loop, so a scrape sees a consistent engine."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self._server: asyncio.Server | None = None
        self._clients = 0
        self.address: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._client, host, port, limit=MAX_REQUEST_HEAD)
        bound = self._server.sockets[0].getsockname()
        self.address = (str(bound[0]), int(bound[1]))
        log.info("metrics on http://%s/metrics", format_listen(*self.address))

    @property
    def port(self) -> int:
        return self.address[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            await asyncio.wait_for(self._answer(reader, writer), REQUEST_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError, ValueError,
                ConnectionError):
            pass  # a slow, oversized or vanished client only loses its connection
        finally:
            self._clients -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            status, body, content_type = "400 Bad Request", b"bad request\n", "text/plain"
        elif parts[0] not in ("GET", "HEAD"):
            status, body, content_type = "405 Method Not Allowed", b"GET only\n", "text/plain"
        elif parts[1].split("?", 1)[0] not in METRICS_PATHS:
            status, body, content_type = "404 Not Found", b"see /metrics\n", "text/plain"
        else:
            status, body, content_type = "200 OK", self.metrics.exposition(), TEXT_CONTENT_TYPE
        header = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                  "Connection: close\r\n\r\n").encode("ascii")
        writer.write(header if parts[0] == "HEAD" else header + body)
        await writer.drain()


# ---- the --metrics argument ----------------------------------------------------------------------------


class ListenAddressError(ValueError):
    """`--metrics` was not ADDR:PORT."""


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
MAX_PORT = 65535


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:9100", "[::1]:9100", "0.0.0.0:9100" or "localhost:9100" -> (host, port).
    Port 0 asks for any free port. ListenAddressError says what is wrong."""
    usage = "expected ADDR:PORT, e.g. 127.0.0.1:9100 or [::1]:9100"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ListenAddressError(f"{text!r}: {usage}")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ListenAddressError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ListenAddressError(f"{text!r}: {usage}")
        if ":" in host:
            raise ListenAddressError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:9100")
        if not _HOSTNAME.match(host):
            raise ListenAddressError(f"{text!r}: {host!r} is not an address or host name")
    if not port_text.isdigit() or int(port_text) > MAX_PORT:
        raise ListenAddressError(f"{text!r}: the port must be a number from 0 to {MAX_PORT}")
    return host, int(port_text)


def format_listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

