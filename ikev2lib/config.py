"""Configuration of the engine: what a swanctl.conf `connections` entry says, as frozen dataclasses.

Proposals use strongSwan keyword strings ("aes128gcm16-prfsha256-x25519") and traffic selectors use
CIDR strings ("10.1.0.0/24"), so a strongSwan user can read a config at a glance. Everything is
validated when the object is built (`LocalProtocolError` names the bad field): proposals too, against
what the IKE SA crypto and the ESP data plane run (suites.py), so a typo or an algorithm nothing here
implements fails here, not at `initiate()` or when a peer arrives.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .addresses import parse_selector
from .exceptions import LocalProtocolError
from .identities import parse_identity
from .pki import Credential, TrustStore
from .suites import check_proposals
from .wire.enums import ProtocolId

__all__ = ["AUTH_CLASSES", "SEND_CERT_POLICIES", "RetransmitConfig", "ChildConfig", "IkeConfig"]

# strongSwan defaults (strongswan.conf: charon.retransmit_timeout/base/tries)
DEFAULT_RETRANSMIT_TIMEOUT = 4.0
DEFAULT_RETRANSMIT_BASE = 1.8
DEFAULT_RETRANSMIT_TRIES = 5
# strongSwan's charon.fragment_size default: IP packet size incl. IP/UDP headers
DEFAULT_FRAGMENT_SIZE = 1280
MIN_FRAGMENT_SIZE = 256  # smaller leaves no room for a useful fragment
DEFAULT_NATT_KEEPALIVE = 20.0  # seconds (RFC 3948 2.3; strongSwan's charon.keep_alive)
# Upper bound on any configured retransmission tries, so a request can never be retried forever.
MAX_RETRANSMIT_TRIES = 20
# Largest packet/byte limit of a Child SA: the ESP data plane counts in unsigned 64 bits.
MAX_SA_VOLUME = 2**64 - 1
# Per-resource Child SAs of one child config (RFC 9611): with the fallback and a rekey's overlap they
# stay well inside the 64 Child SAs an IKE SA holds (ike_sa.MAX_CHILD_SAS).
MAX_PER_CPU_SAS = 16
# strongSwan's default hard limit is the soft one plus 10% (life_* = rekey_* + 10%).
_LIFE_FACTOR = 1.1
# How a side authenticates (strongSwan's local/remote `auth`): a pre-shared key, or a signature by the
# key of an X.509 certificate (RSA, ECDSA or EdDSA; AUTH methods 1, 9-11 and 14)
AUTH_CLASSES = ("psk", "pubkey")
# When we send our certificate (strongSwan's `send_cert`): always, only to a peer that sent a CERTREQ
# (any CERTREQ, as strongSwan), or never (the peer holds it already)
SEND_CERT_POLICIES = ("always", "ifasked", "never")


def _hard_volume(soft: int, hard: int | None) -> int:
    if hard is not None:
        return hard
    return min(soft + max(soft // 10, 1), MAX_SA_VOLUME) if soft else 0  # at least one packet/byte after soft


@dataclass(frozen=True, kw_only=True)
class RetransmitConfig:
    """Retransmit at timeout * base**n for n = 0..tries-1, then give up after one more timeout
    (strongSwan's schedule: 4, 7.2, 13, 23.3, 42, then 75.6 s to declare the peer dead)."""

    timeout: float = DEFAULT_RETRANSMIT_TIMEOUT
    base: float = DEFAULT_RETRANSMIT_BASE
    tries: int = DEFAULT_RETRANSMIT_TRIES

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise LocalProtocolError("retransmit timeout must be > 0")
        if not self.base >= 1.0:
            raise LocalProtocolError("retransmit base must be >= 1")
        if not 0 <= self.tries <= MAX_RETRANSMIT_TRIES:
            raise LocalProtocolError(f"retransmit tries must be in 0..{MAX_RETRANSMIT_TRIES}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after transmission number `attempt` (0 = the first send)."""
        return float(self.timeout * self.base**attempt)


def _check_ts(name: str, values: tuple[str, ...]) -> None:
    if not values:
        raise LocalProtocolError(f"{name} must not be empty")
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError as exc:
            raise LocalProtocolError(f"{name}: invalid network {value!r}") from exc


@dataclass(frozen=True, kw_only=True)
class ChildConfig:
    """One Child SA (swanctl `children.<name>`)."""

    name: str = "child"
    esp_proposals: str = "aes128gcm16"  # add a group ("aes128gcm16-x25519") for PFS
    local_ts: tuple[str, ...] = ("0.0.0.0/0",)
    remote_ts: tuple[str, ...] = ("0.0.0.0/0",)
    mode: str = "tunnel"
    replay_window: int = 1024
    rekey_time: float | None = None  # seconds; None = never rekey on time
    # Hard limit on time: the Child SA is deleted when it is reached (a rekey should come first).
    # None = strongSwan's default, rekey_time + 10% (never, without rekey_time). No random jitter.
    life_time: float | None = None
    # Soft (rekey_*) and hard (life_*) limits on what either ESP SA of the child processes, in
    # packets and inner bytes (strongSwan's names). 0 = off; life_* None = rekey_* + 10% (off if 0).
    rekey_packets: int = 0
    rekey_bytes: int = 0
    life_packets: int | None = None
    life_bytes: int | None = None
    # RFC 9611 per-resource Child SAs: 0 = off. N > 0: the first Child SA asks for them (SA_RESOURCE_INFO)
    # and becomes the fallback SA; if the peer agrees, the initiator adds N more with the same selectors,
    # resource 0..N-1, each with its own sequence counter and replay window (one per worker or CPU). As
    # responder, up to N are accepted; more are refused with TS_MAX_QUEUE.
    per_cpu_sas: int = 0

    def __post_init__(self) -> None:
        check_proposals(self.esp_proposals, ProtocolId.ESP, f"esp_proposals (child {self.name!r})")
        if not isinstance(self.per_cpu_sas, int) or isinstance(self.per_cpu_sas, bool) or not (
            0 <= self.per_cpu_sas <= MAX_PER_CPU_SAS
        ):
            raise LocalProtocolError(f"per_cpu_sas must be an integer in 0..{MAX_PER_CPU_SAS}")
        if self.mode not in ("tunnel", "transport"):
            raise LocalProtocolError("mode must be 'tunnel' or 'transport'")
        _check_ts("local_ts", self.local_ts)
        _check_ts("remote_ts", self.remote_ts)
        if self.rekey_time is not None and not self.rekey_time > 0:
            raise LocalProtocolError("rekey_time must be > 0")
        if self.life_time is not None and not self.life_time > 0:
            raise LocalProtocolError("life_time must be > 0")
        hard_time = self.hard_time
        if self.rekey_time is not None and hard_time is not None and not hard_time > self.rekey_time:
            raise LocalProtocolError("life_time must be greater than rekey_time")
        for soft_name, hard_name in (("rekey_packets", "life_packets"), ("rekey_bytes", "life_bytes")):
            soft = getattr(self, soft_name)
            hard = getattr(self, hard_name)
            for name, value in ((soft_name, soft), (hard_name, hard)):
                if value is None:
                    continue
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SA_VOLUME:
                    raise LocalProtocolError(f"{name} must be an integer in 0..{MAX_SA_VOLUME}")
            if soft and hard and not hard > soft:
                raise LocalProtocolError(f"{hard_name} must be greater than {soft_name}")

    @property
    def hard_time(self) -> float | None:
        """Seconds after which the Child SA is deleted (None: never)."""
        if self.life_time is not None:
            return self.life_time
        return None if self.rekey_time is None else self.rekey_time * _LIFE_FACTOR

    @property
    def hard_packets(self) -> int:
        """Packets after which an ESP SA of the child refuses traffic and the child is deleted (0: never)."""
        return _hard_volume(self.rekey_packets, self.life_packets)

    @property
    def hard_bytes(self) -> int:
        """Inner bytes after which an ESP SA of the child refuses traffic and the child is deleted (0: never)."""
        return _hard_volume(self.rekey_bytes, self.life_bytes)


@dataclass(frozen=True, kw_only=True)
class IkeConfig:
    """One IKE connection (swanctl `connections.<name>`), used by both roles.

    `local_id`/`remote_id`: IP address, "user@fqdn" (RFC822) or FQDN strings; `remote_id=None` accepts
    any peer identity (responder). `psk` is the pre-shared key; `peer_psks` gives one key per peer
    identity (a gateway's secrets section), looked up by the peer's IDi/IDr. `encap=True` forces UDP
    encapsulation of ESP (strongSwan `encap=yes`): this side (either role) fakes its NAT_DETECTION_SOURCE_IP
    hash so that both sides see a NAT. Without it ESP is UDP-encapsulated only when a NAT is detected
    (RFC 7296 2.23, RFC 3948) and is raw ESP (IP protocol 50) otherwise (`ChildSaCreated.udp_encap`).

    Certificates: `local_auth="pubkey"` signs with a `credentials` entry (the one that chains to a CA
    the peer's CERTREQ names, else the first) and sends its certificates per `send_cert`;
    `remote_auth="pubkey"` requires the peer to sign with a certificate that validates against
    `trust` (anchors and CRLs) at the engine's wall-clock time and carries the peer's identity.
    Identities may then also be distinguished names ("C=CH, O=Example, CN=gw", see identities.py).
    """

    ike_proposals: str = "aes128gcm16-prfsha256-x25519"
    local_id: str
    # A responder's connection: chosen for a peer by these addresses (IP, subnet, range, %any; empty:
    # any), then by identities (connections.py). `name` identifies it in a ConnectionTable and events.
    name: str = ""
    local_addrs: tuple[str, ...] = ()
    remote_addrs: tuple[str, ...] = ()
    remote_id: str | None = None
    psk: bytes = field(default=b"", repr=False)
    # per-peer PSKs for a gateway serving many peers: (peer identity, key); used before `psk`
    peer_psks: tuple[tuple[str, bytes], ...] = field(default=(), repr=False)
    children: tuple[ChildConfig, ...] = (ChildConfig(),)
    retransmit: RetransmitConfig = RetransmitConfig()
    # seconds of silence before an empty INFORMATIONAL; None = off. Inbound ESP counts as a sign of
    # life (like strongSwan): the probe is skipped if a Child SA's inbound packet counter rose.
    dpd_delay: float | None = None
    rekey_time: float | None = None  # IKE SA rekey interval in seconds; None = never
    encap: bool = False
    # RFC 3948 2.3: seconds between NAT keepalives from the side behind a NAT (strongSwan's keep_alive,
    # 20 s by default), so that the NAT keeps the mapping through quiet times; None = off
    natt_keepalive: float | None = DEFAULT_NATT_KEEPALIVE
    remote_natt_port: int = 4500  # the peer's NAT-T port (not 4500 only in tests/demos)
    fragment_size: int = DEFAULT_FRAGMENT_SIZE  # RFC 7383: larger protected messages go out in SKF fragments
    local_auth: str = "psk"
    remote_auth: str = "psk"
    credentials: tuple[Credential, ...] = ()  # our keys and certificates (local_auth="pubkey")
    trust: TrustStore | None = None  # what vouches for the peer's certificate (remote_auth="pubkey")
    send_cert: str = "ifasked"
    send_certreq: bool = True  # ask for certificates from our trust anchors (remote_auth="pubkey")
    rsa_pss: bool = False  # RSA keys sign with RSASSA-PSS under RFC 7427 (PKCS#1 v1.5 otherwise)
    # RFC 4555 MOBIKE (strongSwan's `mobike`, on by default): MOBIKE_SUPPORTED in IKE_AUTH (a responder
    # answers with it only if the initiator sent it); the initiator floats IKE to port 4500 at IKE_AUTH
    # even without a NAT, and as original initiator moves the IKE SA when its address goes away
    # (`IkeEndpoint.local_addresses_changed`). ESP encapsulation still follows NAT detection.
    mobike: bool = True
    # RFC 5685 as a client: announce REDIRECT_SUPPORTED and go where a gateway redirects us (strongSwan's
    # charon.follow_redirects, on by default); at most MAX_REDIRECTS in REDIRECT_LOOP_PERIOD
    follow_redirects: bool = True

    def __post_init__(self) -> None:
        check_proposals(self.ike_proposals, ProtocolId.IKE, "ike_proposals")
        parse_identity(self.local_id)  # raises LocalProtocolError naming a malformed identity
        for selector in self.local_addrs + self.remote_addrs:
            parse_selector(selector)
        if self.remote_id is not None:
            parse_identity(self.remote_id)
        for name in ("local_auth", "remote_auth"):
            if getattr(self, name) not in AUTH_CLASSES:
                raise LocalProtocolError(f"{name} must be one of {', '.join(AUTH_CLASSES)}")
        if self.send_cert not in SEND_CERT_POLICIES:
            raise LocalProtocolError(f"send_cert must be one of {', '.join(SEND_CERT_POLICIES)}")
        uses_psk = "psk" in (self.local_auth, self.remote_auth)
        if uses_psk and not self.psk and not self.peer_psks:
            raise LocalProtocolError("psk (or peer_psks) must be given")
        if self.local_auth == "pubkey" and not self.credentials:
            raise LocalProtocolError('local_auth="pubkey" needs credentials (a key and its certificate)')
        if any(not isinstance(c, Credential) for c in self.credentials):
            raise LocalProtocolError("credentials must be pki.Credential objects")
        if self.remote_auth == "pubkey" and not isinstance(self.trust, TrustStore):
            raise LocalProtocolError('remote_auth="pubkey" needs trust (a pki.TrustStore of CA certificates)')
        for identity, key in self.peer_psks:
            if not identity or not key:
                raise LocalProtocolError("peer_psks entries need an identity and a non-empty key")
        if not 0 < self.remote_natt_port < 65536:
            raise LocalProtocolError("remote_natt_port out of range")
        if not MIN_FRAGMENT_SIZE <= self.fragment_size <= 65535:
            raise LocalProtocolError(f"fragment_size must be in {MIN_FRAGMENT_SIZE}..65535")
        for name in ("dpd_delay", "rekey_time", "natt_keepalive"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise LocalProtocolError(f"{name} must be > 0")
