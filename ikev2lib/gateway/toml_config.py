"""The native configuration format: TOML (standard library `tomllib`) with reusable templates, so
that one policy (suites, lifetimes, rekeying, DPD, authentication) applies alike to many connections.

    listen = ["192.0.2.1"]                # optional: addresses to bind (default: the local_addrs)
    max_sas_per_peer = 32                 # optional: IKE SAs one remote address may hold (anti-DoS)

    [ha]                                  # optional: active-passive HA on etcd (gateway/ha.py)
    etcd = ["192.0.2.250:2379"]           # etcd client endpoints
    cluster = "hub"                       # the gateways that stand in for each other
    node = "gw-a"                         # this one (unique)
    key_file = "ha.key"                   # 32 octets (raw, or 0x hex / 0s base64 text); or key = "0x..."
    service_address = "192.0.2.1/24"      # the leader holds it on service_interface
    service_interface = "eth0"
    lease = "2s"                          # the leader's etcd lease
    dead_after = "1s"                     # the standby deposes a leader whose heartbeat is this old
    heartbeat = "0.1s"

    [redirect]                            # optional, RFC 5685: send new clients to another gateway
    to = "192.0.2.2"                      # an IP address or a DNS name
    above = 0                             # once this gateway holds that many IKE SAs (0: every new one)

    [datapath]                            # optional: carry the Child SAs' traffic through a TUN device
    tun = "ikev2lib0"                     # its name
    addresses = ["10.0.0.1/16"]           # the gateway's inner addresses on it
    workers = 0                           # worker threads, 0: one per CPU
    path_mtu = 1500                       # outer MTU; the TUN and tunnel MTUs are derived from it
    mss_clamp = true                      # lower the MSS of TCP SYNs to fit the tunnel
    offload = true                        # TUN TSO/GRO: TCP super-packets split and merged in C
    xdp = "eth0"                          # optional: ESP in and out there through AF_XDP (ikev2lib.xdp)
    xdp_mode = "native"                   # or "skb" (generic XDP)

    [templates.site]                      # any connection key; `template` chains templates
    ike_proposals = ["aes256gcm16-prfsha384-ecp384"]   # a string, or an array joined with ","
    rekey_time = "4h"                     # seconds, or "30s" / "10m" / "4h" / "1d"
    dpd_delay = "30s"
    natt_keepalive = "20s"                # behind a NAT: keepalives that hold its mapping (0: off)
    follow_redirects = true               # as a client: go where a gateway redirects us (RFC 5685)
    local_auth = "pubkey"
    remote_auth = "pubkey"
    cert = "x509/hub.pem"                 # with key, key_passphrase or passphrase_file, chain
    key = "private/hub.pem"
    cacerts = ["x509ca"]                  # files or directories: one TrustStore
    crls = ["x509crl"]                    # files or directories
    revocation = "relaxed"                # or "strict"
    [templates.site.child]                # defaults for every child of the connection
    esp_proposals = ["aes256gcm16"]
    rekey_time = "1h"

    [connections.spoke1]                  # the table key is the connection's name
    template = "site"                     # or an array, applied in order (later wins)
    local_addrs = ["192.0.2.1"]
    remote_addrs = ["198.51.100.7"]       # its first exact address is where start_action=start goes
    local_id = "hub.example.org"
    remote_id = "spoke1.example.org"      # "%any" (or no remote_id): any identity
    start_action = "start"                # none | start; also per child: any child's start counts
    [connections.spoke1.children.net]     # children in file order; IKE_AUTH negotiates the first
    local_ts = ["10.0.0.0/16"]
    remote_ts = ["10.1.0.0/16"]

Connection keys: those above, and `remote_port` (500), `psk` ("0x..." hex, "0s..." base64, else
the UTF-8 text, as strongSwan), `psk_file` (its bytes without trailing line breaks, read the same
way), `peer_psks` (a table identity -> secret), `credentials` (an array of tables, each `cert` +
`key` [+ `chain`] or `pkcs12`, with `passphrase` or `passphrase_file` if encrypted; they follow
the one of the connection's own cert/key/pkcs12), `send_cert`, `send_certreq`, `rsa_pss`, `encap`,
`fragment_size`, `remote_natt_port`, `mobike` (RFC 4555, default true), `retransmit = {timeout, base,
tries}`, `child`, `children`.
Child keys: `esp_proposals`, `local_ts`, `remote_ts`, `mode`, `replay_window`, `rekey_time`,
`life_time`, `rekey_packets`, `rekey_bytes`, `life_packets`, `life_bytes`, `per_cpu_sas` (RFC 9611:
true = one per CPU, or a number), `start_action`. They mean
what the IkeConfig / ChildConfig fields of the same name mean; lists of addresses, selectors and
files may be one string. A duration of 0 turns dpd_delay, rekey_time and natt_keepalive off and gives life_time its
default, so that a connection can undo a template's value. Relative paths are taken from the file's
directory. Every connection needs `local_id` and a child (no implicit 0.0.0.0/0 child).

Merging: a connection is its templates (in order, each resolved through its own `template` chain)
merged, then its own keys. Tables (`child`, `children`, each child, `retransmit`, `peer_psks`) merge
key by key; arrays and other values replace. A layer giving one of psk / psk_file, key_passphrase /
passphrase_file, cert+key+chain / pkcs12 hides the other one of the layers below. The `child` table
applies to every child, under the child's own keys. Children keep the order in which they first
appear (a template's before the connection's own).

Errors: every problem is a `ConfigError(file, dotted key, message)`: a TOML syntax error (with its
line and column), an unknown key (the message lists the allowed ones), a wrong type, a file that
cannot be read or parsed, and whatever IkeConfig / ChildConfig / Connection refuse (key
`connections.NAME`). An error in a value a connection inherits names the connection's key and the
template. Every template is also checked on its own (keys, types, that its files exist), so nothing
in the file goes unchecked, even where every connection overrides it.

Files load once per call: connections with the same cacerts, crls and revocation share one
TrustStore, and the same credential is one Credential object.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509

from ..addresses import EXACT_RANK, parse_address, parse_selector
from ..config import MAX_PER_CPU_SAS, MAX_SA_VOLUME, ChildConfig, IkeConfig, RetransmitConfig
from ..endpoint import MAX_IKE_SAS
from ..esp import MAX_REPLAY_WINDOW
from ..exceptions import LocalProtocolError
from ..pki import (
    Credential,
    Passphrase,
    PrivateKey,
    Revocation,
    TrustStore,
    load_certificate_dir,
    load_certificates,
    load_crl_dir,
    load_crls,
    load_pkcs12,
    load_private_key,
)
from .model import (
    MAX_WORKERS,
    START_ACTIONS,
    ConfigError,
    Connection,
    DataPathConfig,
    HA_KEY_SIZE,
    GatewayConfig,
    HaConfig,
    RedirectPolicy,
    decode_secret,
    parse_duration,
    per_cpu_sas_for,
)

__all__ = ["MAX_CONFIG_FILE", "MAX_CONNECTIONS", "MAX_TEMPLATE_DEPTH", "load_toml", "load_toml_text"]

MAX_CONFIG_FILE = 4 * 1024 * 1024  # bytes; far above any real gateway, stops a mistyped path
MAX_TEMPLATE_DEPTH = 16  # templates in one chain (connection -> t1 -> ... -> t16)
MAX_CONNECTIONS = 10_000
# tomllib's time and memory grow with the square of the parts of one dotted key (8000 parts take a
# second and 250 MB); no key of this format has more than a handful
MAX_KEY_PARTS = 32
MAX_SECRET_FILE = 64 * 1024  # bytes of a psk_file or passphrase_file
# strongSwan keeps times in 32-bit seconds; a bound keeps the engine's time arithmetic finite
MAX_DURATION = float(2**32 - 1)
DEFAULT_REMOTE_PORT = 500

_Key = tuple[str | int, ...]  # a dotted key below a scope, array indexes as ints
_Table = dict[str, Any]
_T = TypeVar("_T")

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_PART = r"""(?:[A-Za-z0-9_-]++|"(?:[^"\\\n]|\\.)*+"|'[^'\n]*+')"""
# a run of MAX_KEY_PARTS dotted parts; starting only where no part ends keeps the scan linear
_LONG_KEY = re.compile(rf"""(?<![A-Za-z0-9_\-"'.])(?:{_KEY_PART}[ \t]*+\.[ \t]*+){{{MAX_KEY_PARTS},}}""")
_TOML_LINE = re.compile(r"at line (\d+)")
_FIELD = re.compile(r"[a-z_]+")

_REVOCATIONS = tuple(r.value for r in Revocation)
_TOP_KEYS = frozenset({"listen", "templates", "connections", "datapath", "max_sas_per_peer", "redirect", "ha"})
_HA_KEYS = frozenset({"etcd", "cluster", "node", "key", "key_file", "service_address", "service_interface", "lease",
                      "dead_after", "heartbeat"})
_REDIRECT_KEYS = frozenset({"to", "above"})
_DATAPATH_KEYS = frozenset({"tun", "addresses", "workers", "path_mtu", "mss_clamp", "offload", "xdp", "xdp_mode"})
_RETRANSMIT_KEYS = frozenset({"timeout", "base", "tries"})
_CREDENTIAL_KEYS = frozenset({"cert", "key", "chain", "pkcs12", "passphrase", "passphrase_file"})
# keys that name one of several ways to give the same thing: a layer giving one hides the others below
_ALTERNATIVES = (
    (frozenset({"psk"}), frozenset({"psk_file"})),
    (frozenset({"key_passphrase"}), frozenset({"passphrase_file"})),
    (frozenset({"cert", "key", "chain"}), frozenset({"pkcs12"})),
)


# --- errors and value checks ---------------------------------------------------------------------


def _dotted(parts: _Key) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        name = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
        text = f"{text}.{name}" if text else name
    return text


def _own_value(at: _Key) -> str:
    return ""


@dataclass
class _Scope:
    """A table being converted: its file and key (`connections.NAME`), and for a merged connection
    which template gave the value at a key ("" for the table's own), so that errors name both."""

    file: str
    prefix: _Key
    origin: Callable[[_Key], str] = _own_value

    def error(self, at: _Key, message: str, *, template: str | None = None) -> ConfigError:
        template = self.origin(at) if template is None else template
        inherited = f" (from template {template!r})" if template else ""
        return ConfigError(self.file, _dotted(self.prefix + at), message + inherited)

    def refused(self, within: _Key, exc: LocalProtocolError, context: str = "") -> ConfigError:
        """What IkeConfig, ChildConfig or Connection refused, under this scope's own key. Their
        messages start with the field's name, which tells where it came from."""
        message = str(exc)
        name = _FIELD.match(message)
        template = self.origin(within + (name.group(),)) if name else ""
        return self.error((), context + message, template=template)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date or time"


def _check_keys(scope: _Scope, at: _Key, table: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for key in table:
        if key not in allowed:
            raise scope.error(at + (key,), f"unknown key; allowed: {', '.join(sorted(allowed))}")


def _table(scope: _Scope, at: _Key, value: object, allowed: frozenset[str] | None = None) -> _Table:
    if not isinstance(value, dict):
        raise scope.error(at, f"expected a table, got {_kind(value)}")
    if allowed is not None:
        _check_keys(scope, at, value, allowed)
    return value


def _array(scope: _Scope, at: _Key, value: object) -> list[tuple[_Key, Any]]:
    if not isinstance(value, list):
        raise scope.error(at, f"expected an array, got {_kind(value)}")
    return [(at + (index,), item) for index, item in enumerate(value)]


def _str(scope: _Scope, at: _Key, value: object) -> str:
    if not isinstance(value, str):
        raise scope.error(at, f"expected a string, got {_kind(value)}")
    return value


def _entries(scope: _Scope, at: _Key, value: object) -> list[tuple[_Key, str]]:
    """A string (one entry) or an array of strings, each with its key."""
    if isinstance(value, str):
        return [(at, value)]
    if not isinstance(value, list):
        raise scope.error(at, f"expected a string or an array of strings, got {_kind(value)}")
    return [(key, _str(scope, key, item)) for key, item in _array(scope, at, value)]


def _strings(scope: _Scope, at: _Key, value: object) -> tuple[str, ...]:
    return tuple(text for _, text in _entries(scope, at, value))


def _proposals(scope: _Scope, at: _Key, value: object) -> str:
    return ",".join(_strings(scope, at, value))


def _bool(scope: _Scope, at: _Key, value: object) -> bool:
    if not isinstance(value, bool):
        raise scope.error(at, f"expected true or false, got {_kind(value)}")
    return value


def _int(scope: _Scope, at: _Key, value: object, low: int | None = None, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise scope.error(at, f"expected an integer, got {_kind(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise scope.error(at, f"must be in {low}..{high}")
    return value


def _number(scope: _Scope, at: _Key, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise scope.error(at, f"expected a number, got {_kind(value)}")
    if not math.isfinite(value):
        raise scope.error(at, "must be a finite number")
    return float(value)


def _duration(scope: _Scope, at: _Key, value: object) -> float:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise scope.error(at, f"expected a duration (seconds, or a string such as \"30s\"), got {_kind(value)}")
    try:
        seconds = parse_duration(value, path=scope.file, key="")
    except ConfigError as exc:
        raise scope.error(at, exc.detail) from None
    if not seconds <= MAX_DURATION:  # also refuses nan and inf
        raise scope.error(at, f"must be at most {MAX_DURATION:.0f} seconds")
    return seconds


def _optional_duration(scope: _Scope, at: _Key, value: object) -> float | None:
    return _duration(scope, at, value) or None  # 0: off (dpd_delay, rekey_time) or the default (life_time)


def _choice(scope: _Scope, at: _Key, value: object, choices: tuple[str, ...]) -> str:
    text = _str(scope, at, value)
    if text not in choices:
        raise scope.error(at, f"expected one of {', '.join(choices)}, got {text!r}")
    return text


def _starts(scope: _Scope, at: _Key, value: object) -> bool:
    return _choice(scope, at, value, START_ACTIONS) == "start"


def _remote_id(scope: _Scope, at: _Key, value: object) -> str | None:
    text = _str(scope, at, value)
    return None if text == "%any" else text  # strongSwan's spelling of "any identity"


def _check_name(scope: _Scope, at: _Key, name: str) -> None:
    if not name or not name.isprintable():
        raise scope.error(at, "a name must be printable text, not empty")


def _secret(scope: _Scope, at: _Key, raw: bytes) -> bytes:
    try:
        return decode_secret(raw)
    except ValueError as exc:
        raise scope.error(at, str(exc)) from None


def _pki(scope: _Scope, at: _Key, load: Callable[[], _T]) -> _T:
    try:
        return load()
    except LocalProtocolError as exc:  # pki's messages name the file
        raise scope.error(at, str(exc)) from exc


Converter = Callable[[_Scope, _Key, Any], object]

# connection keys that are one IkeConfig field each
_IKE_FIELDS: dict[str, Converter] = {
    "ike_proposals": _proposals,
    "local_id": _str,
    "remote_id": _remote_id,
    "local_addrs": _strings,
    "remote_addrs": _strings,
    "local_auth": _str,
    "remote_auth": _str,
    "send_cert": _str,
    "send_certreq": _bool,
    "rsa_pss": _bool,
    "encap": _bool,
    "mobike": _bool,
    "fragment_size": _int,
    "remote_natt_port": _int,
    "dpd_delay": _optional_duration,
    "rekey_time": _optional_duration,
    "natt_keepalive": _optional_duration,
    "follow_redirects": _bool,
}
# child keys that are one ChildConfig field each
_CHILD_FIELDS: dict[str, Converter] = {
    "esp_proposals": _proposals,
    "local_ts": _strings,
    "remote_ts": _strings,
    "mode": _str,
    "replay_window": lambda s, k, v: _int(s, k, v, 0, MAX_REPLAY_WINDOW),
    "rekey_time": _optional_duration,
    "life_time": _optional_duration,
    "rekey_packets": lambda s, k, v: _int(s, k, v, 0, MAX_SA_VOLUME),
    "rekey_bytes": lambda s, k, v: _int(s, k, v, 0, MAX_SA_VOLUME),
    "life_packets": lambda s, k, v: _int(s, k, v, 0, MAX_SA_VOLUME),
    "life_bytes": lambda s, k, v: _int(s, k, v, 0, MAX_SA_VOLUME),
    "per_cpu_sas": lambda s, k, v: per_cpu_sas_for(v) if isinstance(v, bool) else _int(s, k, v, 0, MAX_PER_CPU_SAS),
}
_CHILD_KEYS = frozenset(_CHILD_FIELDS) | {"start_action"}
_CONNECTION_KEYS = frozenset(_IKE_FIELDS) | {
    "template", "remote_port", "start_action", "psk", "psk_file", "peer_psks", "retransmit",
    "cert", "key", "chain", "pkcs12", "key_passphrase", "passphrase_file", "credentials",
    "cacerts", "crls", "revocation", "child", "children",
}  # fmt: skip


# --- merging templates ---------------------------------------------------------------------------


def _merges(at: _Key) -> bool:
    """Whether the value at `at` is one of the format's tables, merged key by key."""
    return at in (("child",), ("children",), ("retransmit",), ("peer_psks",)) or (
        len(at) == 2 and at[0] == "children"
    )


def _overlay(base: _Table, top: Mapping[str, Any], at: _Key = ()) -> None:
    """Merge `top` into `base` (a dict of the caller's, changed in place; the values of `top` are
    shared, never changed)."""
    if not at:
        for group in _ALTERNATIVES:
            for given in group:
                if given & top.keys():
                    for key in frozenset().union(*group) - given:
                        base.pop(key, None)
    for key, value in top.items():
        path = at + (key,)
        old = base.get(key)
        if _merges(path) and isinstance(old, dict) and isinstance(value, dict):
            base[key] = merged = dict(old)
            _overlay(merged, value, path)
        else:
            base[key] = value


def _gives(table: _Table, at: _Key) -> bool:
    """Whether the layer `table` gives the value at `at` (itself, or a whole value holding it)."""
    node: object = table
    for end, part in enumerate(at, 1):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
        if not _merges(at[:end]):
            return True
    return True


def _template_names(table: _Table) -> list[str]:
    """The templates a table names, leaving out what is not a name (to look up where a value came
    from, also while reporting that `template` itself is wrong)."""
    names = table.get("template", [])
    names = [names] if isinstance(names, str) else names if isinstance(names, list) else []
    return [name for name in names if isinstance(name, str)]


@dataclass(frozen=True)
class _Layer:
    """A template merged with its own templates."""

    table: _Table
    chain: tuple[str, ...]  # the longest chain of templates from this one down, for the depth limit


def _own(table: _Table) -> _Table:
    return {key: value for key, value in table.items() if key != "template"}


@dataclass
class _Settings:
    ike: dict[str, Any]  # IkeConfig keyword arguments
    children: tuple[ChildConfig, ...]
    start: bool
    remote_port: int


# --- the loader ----------------------------------------------------------------------------------


class _Loader:
    """One load: the document's templates, and the files already loaded (shared by connections)."""

    def __init__(self, file: str, base_dir: Path | None) -> None:
        self.file = file
        self.base_dir = base_dir
        self.templates: dict[str, _Table] = {}
        self._layers: dict[str, _Layer] = {}
        self._certs: dict[Path, tuple[x509.Certificate, ...]] = {}
        self._crls: dict[Path, tuple[x509.CertificateRevocationList, ...]] = {}
        self._keys: dict[tuple[Path, Passphrase], PrivateKey] = {}
        self._credentials: dict[tuple[object, ...], Credential] = {}
        self._trust: dict[tuple[object, ...], TrustStore] = {}
        self._secrets: dict[Path, bytes] = {}
        self._peer_tables: dict[int, tuple[object, tuple[tuple[str, bytes], ...]]] = {}

    def load(self, document: _Table) -> GatewayConfig:
        top = _Scope(self.file, ())
        _check_keys(top, (), document, _TOP_KEYS)
        templates = _table(top, ("templates",), document.get("templates", {}))
        connections = _table(top, ("connections",), document.get("connections", {}))
        if len(connections) > MAX_CONNECTIONS:
            raise top.error(("connections",), f"more than {MAX_CONNECTIONS} connections")
        self.templates = {name: _table(top, ("templates", name), t) for name, t in templates.items()}
        addresses = _entries(top, ("listen",), document.get("listen", []))
        listen = tuple(self._address(top, at, text) for at, text in addresses)
        built = tuple(
            self._connection(name, _table(top, ("connections", name), table)) for name, table in connections.items()
        )
        for name, table in self.templates.items():  # also those no connection uses, or whose values all are overridden
            scope = _Scope(self.file, ("templates", name))
            self._template(name, (), scope)
            self._settings(scope, _own(table), template=True)
        datapath = self._datapath(top, document["datapath"]) if "datapath" in document else None
        limits: dict[str, Any] = {}
        if "ha" in document:
            limits["ha"] = self._ha(top, document["ha"])
        if "redirect" in document:
            limits["redirect"] = self._redirect(top, document["redirect"])
        if "max_sas_per_peer" in document:
            limits["max_sas_per_peer"] = _int(top, ("max_sas_per_peer",), document["max_sas_per_peer"], 1,
                                              MAX_IKE_SAS)
        try:
            return GatewayConfig(connections=built, listen=listen, source=self.file, datapath=datapath, **limits)
        except LocalProtocolError as exc:
            raise top.error(("connections",), str(exc)) from exc

    def _ha(self, scope: _Scope, value: object) -> HaConfig:
        at: _Key = ("ha",)
        table = _table(scope, at, value, _HA_KEYS)
        for required in ("etcd", "cluster", "node", "service_address", "service_interface"):
            if required not in table:
                raise scope.error(at, f"needs `{required}`")
        if ("key" in table) == ("key_file" in table):
            raise scope.error(at, "needs exactly one of `key` and `key_file`")
        if "key" in table:
            key = _secret(scope, at + ("key",), _str(scope, at + ("key",), table["key"]).encode())
        else:
            path = self._path(scope, at + ("key_file",), table["key_file"])
            raw = path.read_bytes()[: MAX_SECRET_FILE + 1]
            key = raw if len(raw) == HA_KEY_SIZE else _secret(scope, at + ("key_file",), raw.strip())
        settings: dict[str, Any] = {
            "etcd": _strings(scope, at + ("etcd",), table["etcd"]), "key": key,
            **{name: _str(scope, at + (name,), table[name])
               for name in ("cluster", "node", "service_address", "service_interface")},
        }
        if "lease" in table:
            settings["lease"] = max(1, round(parse_duration(table["lease"], path=self.file, key="ha.lease")))
        for name in ("dead_after", "heartbeat"):
            if name in table:
                settings[name] = parse_duration(table[name], path=self.file, key=f"ha.{name}")
        try:
            return HaConfig(**settings)
        except LocalProtocolError as exc:
            raise scope.error(at, str(exc)) from exc

    @staticmethod
    def _redirect(scope: _Scope, value: object) -> RedirectPolicy:
        at: _Key = ("redirect",)
        table = _table(scope, at, value, _REDIRECT_KEYS)
        if "to" not in table:
            raise scope.error(at, "needs `to` (the gateway to send clients to)")
        to = _str(scope, at + ("to",), table["to"])
        above = _int(scope, at + ("above",), table["above"], 0, MAX_IKE_SAS) if "above" in table else 0
        try:
            return RedirectPolicy(to=to, above=above)
        except LocalProtocolError as exc:
            raise scope.error(at + ("to",), str(exc)) from exc

    @staticmethod
    def _datapath(scope: _Scope, value: object) -> DataPathConfig:
        at: _Key = ("datapath",)
        table = _table(scope, at, value, _DATAPATH_KEYS)
        settings: dict[str, Any] = {}
        if "tun" in table:
            settings["tun"] = _str(scope, at + ("tun",), table["tun"])
        if "addresses" in table:
            for key, text in _entries(scope, at + ("addresses",), table["addresses"]):
                try:
                    ipaddress.ip_interface(text)
                except ValueError:
                    raise scope.error(key, f"{text!r} is not an address with a prefix (10.1.0.1/24)") from None
            settings["addresses"] = _strings(scope, at + ("addresses",), table["addresses"])
        if "workers" in table:
            settings["workers"] = _int(scope, at + ("workers",), table["workers"], 0, MAX_WORKERS)
        if "path_mtu" in table:
            settings["path_mtu"] = _int(scope, at + ("path_mtu",), table["path_mtu"], 576, 65535)
        for flag in ("mss_clamp", "offload"):
            if flag in table:
                settings[flag] = _bool(scope, at + (flag,), table[flag])
        for name in ("xdp", "xdp_mode"):
            if name in table:
                settings[name] = _str(scope, at + (name,), table[name])
        try:
            return DataPathConfig(**settings)
        except LocalProtocolError as exc:
            raise scope.error(at, str(exc)) from exc

    @staticmethod
    def _address(scope: _Scope, at: _Key, text: str) -> str:
        try:
            return str(parse_address(text))
        except ValueError:
            raise scope.error(at, f"{text!r} is not an IP address") from None

    # -- templates

    def _template(self, name: str, stack: tuple[str, ...], referrer: _Scope) -> _Layer:
        """Template `name`, resolved; `stack`: the templates being resolved that lead to it."""
        if name in stack:
            chain = stack[stack.index(name) :] + (name,)
            raise referrer.error(("template",), f"template cycle: {' -> '.join(chain)}")
        if name not in self.templates:
            via = f" (via {' -> '.join(stack)})" if stack else ""
            raise referrer.error(("template",), f"unknown template {name!r}{via}")
        layer = self._layers.get(name)
        if layer is None:
            if len(stack) >= MAX_TEMPLATE_DEPTH:
                raise self._too_deep(referrer, stack + (name,))
            scope = _Scope(self.file, ("templates", name))
            table = self.templates[name]
            parents = [self._template(parent, stack + (name,), scope) for parent in self._parents(scope, table)]
            merged: _Table = {}
            for parent in parents:
                _overlay(merged, parent.table)
            _overlay(merged, _own(table))
            layer = _Layer(merged, (name,) + max((p.chain for p in parents), key=len, default=()))
            self._layers[name] = layer
        if len(stack) + len(layer.chain) > MAX_TEMPLATE_DEPTH:  # through templates resolved earlier
            raise self._too_deep(referrer, stack + layer.chain)
        return layer

    @staticmethod
    def _parents(scope: _Scope, table: _Table) -> tuple[str, ...]:
        return _strings(scope, ("template",), table.get("template", []))

    @staticmethod
    def _too_deep(scope: _Scope, chain: tuple[str, ...]) -> ConfigError:
        return scope.error(("template",), f"templates nested more than {MAX_TEMPLATE_DEPTH} deep: {' -> '.join(chain)}")

    # -- connections

    def _origin(self, table: _Table, at: _Key) -> str | None:
        """Which layer of a connection gives the value at `at`: "" the connection's `table` itself,
        else the name of the template (looked up last first, as later ones win), None: no layer."""
        found: dict[str, str | None] = {}  # each template once, however many paths lead to it

        def search(layer: _Table, label: str) -> str | None:
            if _gives(layer, at):
                return label
            for parent in reversed(_template_names(layer)):
                if parent not in self.templates:
                    continue
                if parent not in found:
                    found[parent] = None  # stays None while being searched
                    found[parent] = search(self.templates[parent], parent)
                if found[parent] is not None:
                    return found[parent]
            return None

        return search(table, "")

    def _connection(self, name: str, table: _Table) -> Connection:
        def origin(at: _Key) -> str:
            given = self._origin(table, at)
            if given is None and len(at) > 2 and at[0] == "children":  # from the `child` defaults
                given = self._origin(table, ("child",) + at[2:])
            return given or ""

        scope = _Scope(self.file, ("connections", name), origin)
        _check_name(scope, (), name)
        merged: _Table = {}
        for template in self._parents(scope, table):
            _overlay(merged, self._template(template, (), scope).table)
        _overlay(merged, _own(table))
        settings = self._settings(scope, merged, template=False)
        if "local_id" not in settings.ike:
            raise scope.error(("local_id",), "missing: every connection needs its local_id")
        if not settings.children:
            raise scope.error(("children",), "missing: every connection needs a child (children.NAME)")
        try:
            config = IkeConfig(name=name, children=settings.children, **settings.ike)
        except LocalProtocolError as exc:
            raise scope.refused((), exc) from exc
        exact = (s for s in config.remote_addrs if parse_selector(s).rank == EXACT_RANK)
        # an exact selector may be written as a /32 or /128: initiate to the address itself
        remote_host = next((str(ipaddress.ip_network(s.strip(), strict=False).network_address) for s in exact), None)
        try:
            return Connection(
                config=config, start_action="start" if settings.start else "none", remote_host=remote_host,
                remote_port=settings.remote_port, source=self.file,
            )  # fmt: skip
        except LocalProtocolError as exc:
            raise scope.refused((), exc) from exc

    def _settings(self, scope: _Scope, table: _Table, *, template: bool) -> _Settings:
        """A connection's merged table (or, with `template`, a template's own one, which is only
        checked: certificate, key and CRL files are looked up, not loaded, as other layers may
        complete them, with a key's passphrase for example)."""
        _check_keys(scope, (), table, _CONNECTION_KEYS)
        ike = {key: convert(scope, (key,), table[key]) for key, convert in _IKE_FIELDS.items() if key in table}
        psk = self._psk(scope, table)
        if psk is not None:
            ike["psk"] = psk
        if "peer_psks" in table:
            ike["peer_psks"] = self._peer_psks(scope, table["peer_psks"])
        if "retransmit" in table:
            ike["retransmit"] = self._retransmit(scope, table["retransmit"])
        credentials = self._credentials_of(scope, table, template)
        if credentials:
            ike["credentials"] = credentials
        trust = self._trust_of(scope, table, template)
        if trust is not None:
            ike["trust"] = trust
        children, child_starts = self._children(scope, table, template)
        starts = _starts(scope, ("start_action",), table.get("start_action", "none"))
        port = _int(scope, ("remote_port",), table.get("remote_port", DEFAULT_REMOTE_PORT), 1, 65535)
        return _Settings(ike, children, starts or child_starts, port)

    def _psk(self, scope: _Scope, table: _Table) -> bytes | None:
        if "psk" in table and "psk_file" in table:
            raise scope.error(("psk_file",), "give psk or psk_file, not both")
        if "psk" in table:
            return _secret(scope, ("psk",), _str(scope, ("psk",), table["psk"]).encode())
        if "psk_file" in table:
            return _secret(scope, ("psk_file",), self._secret_file(scope, ("psk_file",), table["psk_file"]))
        return None

    def _peer_psks(self, scope: _Scope, value: object) -> tuple[tuple[str, bytes], ...]:
        # a template's table (thousands of peers, perhaps) is shared by its connections: convert it
        # once; the table is kept with its result, so that its id cannot be reused by another
        shared = self._peer_tables.get(id(value))
        if shared is not None and shared[0] is value:
            return shared[1]
        secrets = tuple(
            (peer, _secret(scope, ("peer_psks", peer), _str(scope, ("peer_psks", peer), text).encode()))
            for peer, text in _table(scope, ("peer_psks",), value).items()
        )
        self._peer_tables[id(value)] = (value, secrets)
        return secrets

    @staticmethod
    def _retransmit(scope: _Scope, value: object) -> RetransmitConfig:
        at: _Key = ("retransmit",)
        table = _table(scope, at, value, _RETRANSMIT_KEYS)
        options: dict[str, Any] = {}
        if "timeout" in table:
            options["timeout"] = _duration(scope, at + ("timeout",), table["timeout"])
        if "base" in table:
            options["base"] = _number(scope, at + ("base",), table["base"])
        if "tries" in table:
            options["tries"] = _int(scope, at + ("tries",), table["tries"])
        try:
            return RetransmitConfig(**options)
        except LocalProtocolError as exc:
            raise scope.error(at, str(exc)) from exc

    def _children(self, scope: _Scope, table: _Table, template: bool) -> tuple[tuple[ChildConfig, ...], bool]:
        defaults = _table(scope, ("child",), table.get("child", {}), _CHILD_KEYS)
        for key, convert in _CHILD_FIELDS.items():  # checked here once, and named where they are written
            if key in defaults:
                convert(scope, ("child", key), defaults[key])
        starts = _starts(scope, ("child", "start_action"), defaults.get("start_action", "none"))
        children = []
        for name, value in _table(scope, ("children",), table.get("children", {})).items():
            at: _Key = ("children", name)
            _check_name(scope, at, name)
            own = _table(scope, at, value, _CHILD_KEYS)
            merged = {**defaults, **own}
            options: dict[str, Any] = {
                key: convert(scope, at + (key,), merged[key]) for key, convert in _CHILD_FIELDS.items() if key in merged
            }
            starts |= _starts(scope, at + ("start_action",), merged.get("start_action", "none"))
            if template:
                continue
            try:
                children.append(ChildConfig(name=name, **options))
            except LocalProtocolError as exc:
                context = "" if f"child {name!r}" in str(exc) else f"child {name!r}: "
                raise scope.refused(at, exc, context) from exc
        return tuple(children), starts

    # -- files

    def _path(self, scope: _Scope, at: _Key, value: object, *, directory: bool = False) -> Path:
        text = _str(scope, at, value)
        if not text:
            raise scope.error(at, "a path must not be empty")
        path = Path(text)
        if not path.is_absolute():
            if self.base_dir is None:
                raise scope.error(at, f"{text!r}: a relative path needs the configuration's directory (base_dir)")
            path = self.base_dir / path
        path = Path(os.path.normpath(path))  # one cache entry per file, however it is spelled
        try:
            mode = path.stat().st_mode
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
            raise scope.error(at, f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
        if not (stat.S_ISREG(mode) or (directory and stat.S_ISDIR(mode))):
            # a FIFO or a device would block or never end
            raise scope.error(at, f"{path}: not a regular file{' or directory' if directory else ''}")
        return path

    def _paths(self, scope: _Scope, at: _Key, value: object, *, directory: bool = False) -> list[tuple[_Key, Path]]:
        return [(key, self._path(scope, key, text, directory=directory)) for key, text in _entries(scope, at, value)]

    def _secret_file(self, scope: _Scope, at: _Key, value: object) -> bytes:
        path = self._path(scope, at, value)
        if path not in self._secrets:
            try:
                with open(path, "rb") as handle:
                    data = handle.read(MAX_SECRET_FILE + 1)
            except OSError as exc:
                raise scope.error(at, f"{path}: cannot read ({exc.strerror or exc})") from None
            if len(data) > MAX_SECRET_FILE:
                raise scope.error(at, f"{path}: larger than {MAX_SECRET_FILE} bytes, not a secret")
            self._secrets[path] = data.rstrip(b"\r\n")  # the line break an editor adds is not part of it
        return self._secrets[path]

    def _certificates(self, scope: _Scope, at: _Key, path: Path) -> tuple[x509.Certificate, ...]:
        if path not in self._certs:
            load = load_certificate_dir if path.is_dir() else load_certificates
            self._certs[path] = _pki(scope, at, lambda: load(path))
        return self._certs[path]

    def _crl_files(self, scope: _Scope, at: _Key, path: Path) -> tuple[x509.CertificateRevocationList, ...]:
        if path not in self._crls:
            load = load_crl_dir if path.is_dir() else load_crls
            self._crls[path] = _pki(scope, at, lambda: load(path))
        return self._crls[path]

    def _trust_of(self, scope: _Scope, table: _Table, template: bool) -> TrustStore | None:
        """The TrustStore of cacerts (none without them), with crls and revocation."""
        revocation = Revocation(_choice(scope, ("revocation",), table.get("revocation", "relaxed"), _REVOCATIONS))
        cacerts = self._paths(scope, ("cacerts",), table.get("cacerts", []), directory=True)
        crls = self._paths(scope, ("crls",), table.get("crls", []), directory=True)
        if template or not cacerts:
            return None
        cache_key = (tuple(p for _, p in cacerts), tuple(p for _, p in crls), revocation)
        if cache_key not in self._trust:
            anchors = [cert for at, path in cacerts for cert in self._certificates(scope, at, path)]
            if not anchors:
                raise scope.error(("cacerts",), "holds no certificates")
            revoked = [crl for at, path in crls for crl in self._crl_files(scope, at, path)]
            try:
                store = TrustStore(anchors, revoked, revocation=revocation)
            except LocalProtocolError as exc:
                raise scope.error(("crls",) if "CRL" in str(exc) else ("cacerts",), str(exc)) from exc
            self._trust[cache_key] = store
        return self._trust[cache_key]

    def _credentials_of(self, scope: _Scope, table: _Table, template: bool) -> tuple[Credential, ...]:
        """The credential of cert/key/pkcs12, then those of `credentials`."""
        found = []
        if {"cert", "key", "chain", "pkcs12"} & table.keys():
            found.append(self._credential(scope, (), table, "key_passphrase", template))
        if "credentials" in table:
            for at, entry in _array(scope, ("credentials",), table["credentials"]):
                entry = _table(scope, at, entry, _CREDENTIAL_KEYS)
                found.append(self._credential(scope, at, entry, "passphrase", template))
        return tuple(c for c in found if c is not None)

    def _credential(
        self, scope: _Scope, at: _Key, entry: _Table, passphrase_key: str, template: bool
    ) -> Credential | None:
        passphrase = self._passphrase(scope, at, entry, passphrase_key)
        files = {key: self._path(scope, at + (key,), entry[key]) for key in ("cert", "key", "pkcs12") if key in entry}
        chain = self._paths(scope, at + ("chain",), entry.get("chain", []))
        if template:
            return None
        if "pkcs12" in files:
            extra = next((key for key in ("cert", "key", "chain") if key in entry), None)
            if extra is not None:
                raise scope.error(at + (extra,), "a pkcs12 bundle holds key and certificates: give it, or cert and key")
            bundle = files["pkcs12"]
            cache_key: tuple[object, ...] = ("pkcs12", bundle, passphrase)
            if cache_key not in self._credentials:
                self._credentials[cache_key] = _pki(scope, at + ("pkcs12",), lambda: load_pkcs12(bundle, passphrase))
            return self._credentials[cache_key]
        if "cert" not in files:
            raise scope.error(at + ("key" if "key" in entry else "chain",), "needs cert (the certificate of the key)")
        if "key" not in files:
            raise scope.error(at + ("cert",), "needs key (the private key of the certificate)")
        cache_key = ("pem", files["key"], files["cert"], tuple(p for _, p in chain), passphrase)
        if cache_key not in self._credentials:
            key_file = files["key"]
            if (key_file, passphrase) not in self._keys:
                self._keys[key_file, passphrase] = _pki(
                    scope, at + ("key",), lambda: load_private_key(key_file, passphrase)
                )
            certs = self._certificates(scope, at + ("cert",), files["cert"])
            extra_certs = tuple(cert for k, path in chain for cert in self._certificates(scope, k, path))
            private = self._keys[key_file, passphrase]
            self._credentials[cache_key] = _pki(
                scope, at + ("cert",), lambda: Credential(private, certs[0], certs[1:] + extra_certs)
            )
        return self._credentials[cache_key]

    def _passphrase(self, scope: _Scope, at: _Key, entry: _Table, key: str) -> Passphrase:
        if key in entry and "passphrase_file" in entry:
            raise scope.error(at + ("passphrase_file",), f"give {key} or passphrase_file, not both")
        if key in entry:
            return _str(scope, at + (key,), entry[key])
        if "passphrase_file" in entry:
            return self._secret_file(scope, at + ("passphrase_file",), entry["passphrase_file"])
        return None


# --- entry points --------------------------------------------------------------------------------


def _parse(text: str, file: str) -> _Table:
    long_key = _LONG_KEY.search(text)
    if long_key is not None:
        line = text.count("\n", 0, long_key.start()) + 1
        raise ConfigError(file, "", f"a dotted key of more than {MAX_KEY_PARTS} parts", line=line)
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more digits than Python converts
        found = _TOML_LINE.search(str(exc))
        raise ConfigError(file, "", f"not valid TOML: {exc}", line=int(found.group(1)) if found else None) from None
    except RecursionError:
        raise ConfigError(file, "", "not valid TOML: arrays or inline tables nested too deeply") from None


def load_toml_text(
    text: str | bytes, *, path: str = "<string>", base_dir: str | os.PathLike[str] | None = None
) -> GatewayConfig:
    """A GatewayConfig from TOML text; relative file names are taken from `base_dir` (an error
    without it). `path` names the text in messages."""
    try:
        data = text if isinstance(text, bytes) else text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(path, "", "not valid Unicode text (a lone surrogate)") from None
    if len(data) > MAX_CONFIG_FILE:
        raise ConfigError(path, "", f"larger than {MAX_CONFIG_FILE} bytes")
    if isinstance(text, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(path, "", f"not UTF-8 text (byte {exc.start})") from None
    document = _parse(text, path)
    return _Loader(path, None if base_dir is None else Path(base_dir)).load(document)


def load_toml(path: str | os.PathLike[str]) -> GatewayConfig:
    """A GatewayConfig from a TOML file; relative file names in it are taken from its directory."""
    source = os.fspath(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before open: a FIFO would block
            raise ConfigError(source, "", "not a regular file")
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_FILE + 1)
    except (OSError, ValueError) as exc:
        raise ConfigError(source, "", f"cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return load_toml_text(data, path=source, base_dir=Path(os.path.abspath(source)).parent)
