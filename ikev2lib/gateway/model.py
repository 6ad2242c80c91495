"""What a gateway runs, whatever file it came from: connections (an `IkeConfig` each, plus what the
running gateway does with it) and the errors configuration loaders raise.

Both loaders (`toml_config.py`, the native format with templates, and `swanctl.py`, strongSwan's
swanctl.conf) produce a `GatewayConfig`; `run.py` runs one. Every error names the file, the key (a
dotted path such as `connections.hub.children.net.esp_proposals`) and what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ipaddress
from dataclasses import dataclass, field

from ..config import MAX_PER_CPU_SAS, IkeConfig
from ..endpoint import MAX_SAS_PER_PEER
from ..exceptions import LocalProtocolError
from ..wire.redirect import Gateway

__all__ = [
    "ConfigError",
    "Connection",
    "DataPathConfig",
    "GatewayConfig",
    "HaConfig",
    "RedirectPolicy",
    "START_ACTIONS",
    "decode_secret",
    "parse_duration",
    "per_cpu_sas_for",
]

# what a connection does when the gateway starts (strongSwan's child start_action; trap needs kernel
# policies, which this userland gateway does not install)
START_ACTIONS = ("none", "start")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
XDP_MODES = ("native", "skb")


def per_cpu_sas_for(enabled: bool) -> int:
    """`per_cpu_sas = yes` (strongSwan's RFC 9611 switch): one per-resource Child SA per CPU, which is
    the data path's default worker count (a worker sends on and decrypts its own member)."""
    return min(os.cpu_count() or 1, MAX_PER_CPU_SAS) if enabled else 0


class ConfigError(LocalProtocolError):
    """A configuration file is wrong: `path` (the file), `key` (dotted), and what was wrong."""

    def __init__(self, path: str, key: str, message: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.path = path
        self.key = key
        self.line = line
        self.detail = message

    def __reduce__(self) -> str | tuple[object, ...]:
        return (type(self), (self.path, self.key, self.detail, self.line))


def parse_duration(value: object, *, path: str, key: str, line: int | None = None) -> float:
    """Seconds from strongSwan's time notation ("90", "30s", "10m", "4h", "1d") or a number."""
    if isinstance(value, bool):
        raise ConfigError(path, key, f"{value!r} is not a duration", line)
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ConfigError(path, key, f"{value!r} is not a duration (a number with s, m, h or d)", line)
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds < 0:
        raise ConfigError(path, key, "a duration cannot be negative", line)
    return seconds


def decode_secret(raw: bytes) -> bytes:
    """strongSwan's notation for secrets: 0x... hex, 0s... base64, else the bytes themselves.
    ValueError (saying which) when what follows 0x or 0s does not decode."""
    if raw.startswith(b"0x"):
        try:
            return bytes.fromhex(raw[2:].decode("ascii"))
        except ValueError:  # UnicodeDecodeError is one
            raise ValueError("not hexadecimal after 0x") from None
    if raw.startswith(b"0s"):
        try:
            return base64.b64decode(raw[2:], validate=True)
        except binascii.Error:
            raise ValueError("not base64 after 0s") from None
    return raw


@dataclass(frozen=True, kw_only=True)
class Connection:
    """One connection of a gateway: the engine's `IkeConfig` (name, addresses, identities,
    authentication, children) and how the gateway uses it."""

    config: IkeConfig
    start_action: str = "none"  # "start": initiate when the gateway starts (and after a reload adds it)
    # where to initiate to: the first exact address of remote_addrs (None: responder only)
    remote_host: str | None = None
    remote_port: int = 500
    source: str = ""  # the file that defined it, for messages

    def __post_init__(self) -> None:
        if self.start_action not in START_ACTIONS:
            raise LocalProtocolError(f"start_action must be one of {', '.join(START_ACTIONS)}")
        if self.start_action == "start" and self.remote_host is None:
            raise LocalProtocolError(f"connection {self.config.name!r}: start_action=start needs a remote address")

    @property
    def name(self) -> str:
        return self.config.name


MAX_WORKERS = 64  # data-path worker threads (one TUN queue and one socket each)
DEFAULT_PATH_MTU = 1500


@dataclass(frozen=True, kw_only=True)
class DataPathConfig:
    """The gateway's packet path: a TUN device whose traffic goes through the Child SAs."""

    tun: str = "ikev2lib0"  # the TUN device's name
    addresses: tuple[str, ...] = ()  # the gateway's inner addresses on it ("10.1.0.1/24")
    workers: int = 0  # worker threads; 0: one per CPU
    path_mtu: int = DEFAULT_PATH_MTU  # outer MTU towards the peers; the TUN MTU is derived from it
    mss_clamp: bool = True  # lower the MSS of TCP SYNs crossing the tunnel to fit its MTU
    offload: bool = True  # TUN TSO/GRO (IFF_VNET_HDR): TCP super-packets split and merged in C
    # AF_XDP: receive ESP on this outer interface's queues through XSKs ("" = sockets only); sending
    # stays on the sockets. Unavailable (no XDP, no permission, not built) falls back to the sockets.
    xdp: str = ""
    xdp_mode: str = "native"  # "native" (the driver's XDP) or "skb" (generic XDP, any device)

    def __post_init__(self) -> None:
        if self.xdp_mode not in XDP_MODES:
            raise LocalProtocolError(f"datapath xdp_mode must be one of {', '.join(XDP_MODES)}")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise LocalProtocolError(f"datapath workers must be 0 (one per CPU) to {MAX_WORKERS}")
        if not 576 <= self.path_mtu <= 65535:
            raise LocalProtocolError("datapath path_mtu must be 576 to 65535")


@dataclass(frozen=True, kw_only=True)
class RedirectPolicy:
    """RFC 5685, gateway side: new clients (that announce REDIRECT_SUPPORTED) are sent to `to` once
    this gateway holds `above` IKE SAs; `above = 0` sends every new one (maintenance: drain the
    gateway; the established clients move with `ikev2lib redirect`)."""

    to: str  # an IP address or a DNS name
    above: int = 0

    def __post_init__(self) -> None:
        try:
            Gateway.parse(self.to)
        except ValueError as exc:
            raise LocalProtocolError(f"redirect to: {exc}") from None
        if self.above < 0:
            raise LocalProtocolError("redirect above must be >= 0")


HA_KEY_SIZE = 32  # AES-256: the key sealing every replicated record


@dataclass(frozen=True, kw_only=True)
class HaConfig:
    """Active-passive high availability (`gateway/ha.py`): the gateways of one `cluster` share a
    service address and replicate their SAs to etcd; the leader holds the address, the standby takes
    it over when the leader's heartbeat is `dead_after` seconds old or its lease lapsed."""

    etcd: tuple[str, ...]  # client endpoints, host:port
    cluster: str  # keys under /ikev2lib/<cluster>/
    node: str  # this gateway's name, unique in the cluster
    key: bytes = field(repr=False)  # HA_KEY_SIZE octets, the same on every node
    service_address: str  # "192.0.2.1/24": added to service_interface by the leader
    service_interface: str
    lease: int = 2  # seconds: the etcd lease of the leader key (etcd's own minimum is 1)
    dead_after: float = 1.0  # seconds without a heartbeat after which the standby deposes the leader
    heartbeat: float = 0.1  # seconds between the leader's heartbeats

    def __post_init__(self) -> None:
        if not self.etcd:
            raise LocalProtocolError("ha: etcd needs at least one endpoint")
        if len(self.key) != HA_KEY_SIZE:
            raise LocalProtocolError(f"ha: the key must be {HA_KEY_SIZE} octets, not {len(self.key)}")
        for name, value in (("cluster", self.cluster), ("node", self.node)):
            if not value or not value.isprintable() or "/" in value:
                raise LocalProtocolError(f"ha: {name} must be printable text without '/'")
        try:
            ipaddress.ip_interface(self.service_address)
        except ValueError:
            raise LocalProtocolError(f"ha: service_address {self.service_address!r} is not an address with a prefix")
        if self.lease < 1:
            raise LocalProtocolError("ha: lease must be at least 1 s")
        if not 0 < self.heartbeat < self.dead_after:
            raise LocalProtocolError("ha: heartbeat must be shorter than dead_after")

    @property
    def service_ip(self) -> str:
        return str(ipaddress.ip_interface(self.service_address).ip)


@dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    connections: tuple[Connection, ...]
    listen: tuple[str, ...] = ()  # local addresses to bind (from local_addrs unless given)
    source: str = ""
    datapath: DataPathConfig | None = None  # None: no packet path (IKE only; ESP is counted, not forwarded)
    max_sas_per_peer: int = MAX_SAS_PER_PEER  # IKE SAs one remote address may hold (spokes behind one NAT share one)
    redirect: RedirectPolicy | None = None  # send new clients to another gateway (load, maintenance)
    ha: HaConfig | None = None  # active-passive high availability on etcd

    def __post_init__(self) -> None:
        names = [c.name for c in self.connections]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise LocalProtocolError(f"connection names must be distinct: {', '.join(duplicates)}")
        if self.max_sas_per_peer < 1:
            raise LocalProtocolError("max_sas_per_peer must be at least 1")

    def connection(self, name: str) -> Connection | None:
        return next((c for c in self.connections if c.name == name), None)
