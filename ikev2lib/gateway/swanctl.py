"""strongSwan's swanctl directory as a `GatewayConfig`: `swanctl.conf` (its syntax: swanctl_syntax.py)
with `x509/`, `x509ca/`, `x509crl/` and `private/` beside it, as `swanctl --load-all` reads them.

The supported subset, every key of which means here what it means to strongSwan. Any other key, and
any value this gateway cannot honour, is an error naming the file, the line and the key: a swanctl
directory either drives ikev2lib as it drives charon, or it is refused.

Top-level sections other than `connections` and `secrets` are allowed only as templates that
connections reference (`spoke : defaults { ... }`, strongSwan 5.7's references).

connections.<name>:
  version (2, or 0 = any: IKEv2), local_addrs, remote_addrs (addresses, subnets, ranges, %any; host
  names are refused: the engine does not resolve), local_port (500), remote_port, proposals
  (`default` = ikev2lib's default), rekey_time, reauth_time (0 only), dpd_delay, encap, send_cert,
  send_certreq, keyingtries (accepted, as strongSwan's retransmission count is), unique (no/never),
  fragmentation (yes/accept: always supported), mobike (yes, the default, or no: RFC 4555)
  local: auth (psk, pubkey, rsa, ecdsa, ed25519, ed448), id, certs (files in x509/)
  remote: auth (psk, pubkey, ...), id (%any or absent: anyone), cacerts (files in x509ca/: only
    these CAs vouch for this peer), revocation (strict, ifuri, relaxed)
  children.<name>: local_ts, remote_ts (subnets or addresses; `dynamic` = our/the peer's exact
    address), esp_proposals, mode (tunnel, transport), start_action (none, start), rekey_time,
    life_time, rekey_bytes, life_bytes, rekey_packets, life_packets, replay_window, per_cpu_sas
    (no, yes = RFC 9611 per-resource Child SAs, one per CPU; `encap` is refused), dpd_action
    (clear, none, trap: nothing to do without kernel policies), close_action (none)
secrets:
  ike<suffix> { id<suffix> = ..., secret = ... }   (hex 0x... and base64 0s... as strongSwan)
  private<suffix> / rsa<suffix> / ecdsa<suffix> / pkcs8<suffix> { file = ..., secret = passphrase }

Credentials: the private keys of `private/` (and `rsa/`, `ecdsa/`, `pkcs8/`), with passphrases from
the `secrets`, are matched to `local.certs` by public key; the certificate's chain is built from
`x509ca/` and `x509/`. Every certificate in `x509ca/` is a trust anchor (as in strongSwan) unless
`remote.cacerts` names some, and the CRLs of `x509crl/` apply. A PSK connection takes the secret whose
ids match both identities best (strongSwan's order: both, then the peer's, then none); one open to
any peer gets every secret as a per-peer key.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..addresses import EXACT_RANK, parse_selector
from ..config import ChildConfig, IkeConfig
from ..exceptions import LocalProtocolError
from ..identities import dn_text
from ..pki import (
    MAX_CHAIN_DEPTH,
    Credential,
    PrivateKey,
    Revocation,
    TrustStore,
    load_certificate_dir,
    load_certificates,
    load_crl_dir,
    parse_private_key,
)
from ..pki.parsed import issued_by
from .model import ConfigError, Connection, GatewayConfig, decode_secret, parse_duration, per_cpu_sas_for
from .swanctl_syntax import Section, Setting, parse_file, resolve_references

__all__ = ["load_swanctl", "CONFIG_FILE"]

CONFIG_FILE = "swanctl.conf"
KEY_DIRS = ("private", "rsa", "ecdsa", "pkcs8")
DEFAULT_IKE_PROPOSALS = IkeConfig.__dataclass_fields__["ike_proposals"].default
DEFAULT_ESP_PROPOSALS = ChildConfig.__dataclass_fields__["esp_proposals"].default
PUBKEY_AUTH = ("pubkey", "rsa", "ecdsa", "ed25519", "ed448")

CONNECTION_KEYS = frozenset({
    "version", "local_addrs", "remote_addrs", "local_port", "remote_port", "proposals", "rekey_time",
    "reauth_time", "dpd_delay", "encap", "send_cert", "send_certreq", "keyingtries", "unique",
    "fragmentation", "mobike",
})  # fmt: skip
LOCAL_KEYS = frozenset({"auth", "id", "certs"})
REMOTE_KEYS = frozenset({"auth", "id", "cacerts", "revocation"})
CHILD_KEYS = frozenset({
    "local_ts", "remote_ts", "esp_proposals", "mode", "start_action", "rekey_time", "life_time", "rekey_bytes",
    "life_bytes", "rekey_packets", "life_packets", "replay_window", "dpd_action", "close_action", "per_cpu_sas",
})  # fmt: skip
# key -> the values of it this gateway honours (anything else is refused, naming them)
ACCEPTED_VALUES = {
    "version": ("0", "2"),
    "unique": ("no", "never"),
    "fragmentation": ("yes", "accept"),
    "mobike": ("yes", "no"),
    "reauth_time": ("0",),
    "dpd_action": ("clear", "none", "trap"),
    "close_action": ("none",),
    "mode": ("tunnel", "transport"),
    "start_action": ("none", "start"),
    "per_cpu_sas": ("yes", "no"),
    "send_cert": ("always", "ifasked", "never"),
    "revocation": ("strict", "ifuri", "relaxed"),
}
_BOOLEANS = {"yes": True, "true": True, "enabled": True, "1": True, "no": False, "false": False, "disabled": False,
             "0": False}


def _fail(setting: Setting | Section, key: str, message: str) -> ConfigError:
    return ConfigError(setting.path, key, message, line=setting.line or None)


def _list(setting: Setting) -> tuple[str, ...]:
    return tuple(v.strip() for v in setting.value.split(",") if v.strip())


def _duration(setting: Setting, key: str) -> float:
    return parse_duration(setting.value, path=setting.path, key=key, line=setting.line or None)


def _boolean(setting: Setting, key: str) -> bool:
    value = _BOOLEANS.get(setting.value.strip().lower())
    if value is None:
        raise _fail(setting, key, f"{setting.value!r} is not yes or no")
    return value


def _integer(setting: Setting, key: str) -> int:
    try:
        return int(setting.value.strip(), 0)
    except ValueError:
        raise _fail(setting, key, f"{setting.value!r} is not an integer") from None


def _secret(setting: Setting, key: str) -> bytes:
    try:
        return decode_secret(setting.value.encode("utf-8"))
    except ValueError as exc:
        raise _fail(setting, key, str(exc)) from None


@dataclass
class _Secrets:
    ike: list[tuple[tuple[str, ...], bytes]]  # (ids, secret)
    passphrases: dict[str, bytes]  # key file name -> passphrase


class _Directory:
    """One swanctl directory being loaded: the parsed tree and the credential files, read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / CONFIG_FILE
        if not self.conf.is_file():
            raise ConfigError(str(self.conf), "", "no swanctl.conf in the directory")
        parsed = parse_file(self.conf)
        self.templates = _referenced_roots(parsed)  # top-level sections used only through references
        self.tree = _without_empty(resolve_references(parsed))
        self.secrets = self._secrets()
        self._keys: list[PrivateKey] | None = None
        self._trust: dict[tuple[tuple[str, ...], str], TrustStore] = {}

    def check_keys(self, section: Section, allowed: Iterable[str], where: str) -> None:
        allowed = frozenset(allowed)
        for key, setting in section.settings.items():
            if key not in allowed:
                raise _fail(setting, f"{where}.{key}", f"not supported here (supported: {', '.join(sorted(allowed))})")
            choices = ACCEPTED_VALUES.get(key)
            if choices is not None and setting.value.strip().lower() not in choices:
                raise _fail(setting, f"{where}.{key}", f"{setting.value!r} is not supported (supported: {', '.join(choices)})")

    # ---- secrets and credential files ---------------------------------------------------------------

    def _secrets(self) -> _Secrets:
        found = _Secrets([], {})
        section = self.tree.section("secrets")
        if section is None:
            return found
        if section.settings:
            setting = next(iter(section.settings.values()))
            raise _fail(setting, f"secrets.{setting.key}", "secrets holds sections only")
        for name, entry in section.sections.items():
            where = f"secrets.{name}"
            if name.startswith("ike"):
                ids = []
                for key, setting in entry.settings.items():
                    if key.startswith("id"):
                        ids.append(setting.value)
                    elif key != "secret":
                        raise _fail(setting, f"{where}.{key}", "an ike secret has id* and secret")
                secret = entry.settings.get("secret")
                if secret is None:
                    raise _fail(entry, where, "no secret")
                found.ike.append((tuple(ids), _secret(secret, f"{where}.secret")))
            elif name.startswith(KEY_DIRS):
                self.check_keys(entry, ("file", "secret"), where)
                file, secret = entry.settings.get("file"), entry.settings.get("secret")
                if file is None or secret is None:
                    raise _fail(entry, where, "a private key secret needs file and secret")
                found.passphrases[os.path.basename(file.value)] = _secret(secret, f"{where}.secret")
            else:
                raise _fail(entry, where, "only ike* and private*/rsa*/ecdsa*/pkcs8* secrets are supported")
        return found

    def private_keys(self) -> list[PrivateKey]:
        if self._keys is None:
            keys: list[PrivateKey] = []
            for sub in KEY_DIRS:
                folder = self.root / sub
                if not folder.is_dir():
                    continue
                for path in sorted(folder.iterdir()):
                    if path.is_file():
                        passphrase = self.secrets.passphrases.get(path.name)
                        try:
                            keys.append(parse_private_key(path.read_bytes(), passphrase, source=str(path)))
                        except LocalProtocolError as exc:
                            raise ConfigError(str(path), "", str(exc)) from exc
            self._keys = keys
        return self._keys

    @functools.cached_property
    def ca_certificates(self) -> tuple[x509.Certificate, ...]:
        folder = self.root / "x509ca"
        return load_certificate_dir(folder) if folder.is_dir() else ()

    @functools.cached_property
    def other_certificates(self) -> tuple[x509.Certificate, ...]:
        folder = self.root / "x509"
        return load_certificate_dir(folder) if folder.is_dir() else ()

    @functools.cached_property
    def crls(self) -> tuple[x509.CertificateRevocationList, ...]:
        folder = self.root / "x509crl"
        return load_crl_dir(folder) if folder.is_dir() else ()

    def file_in(self, sub: str, name: str, setting: Setting, key: str) -> Path:
        path = Path(name) if os.path.isabs(name) else self.root / sub / name
        if not path.is_file():
            raise _fail(setting, key, f"{path} does not exist")
        return path

    def credential(self, setting: Setting, key: str) -> Credential:
        """`local.certs`: the certificate, its key from the key directories, its chain."""
        path = self.file_in("x509", _list(setting)[0], setting, key)
        try:
            cert = load_certificates(path)[0]
        except LocalProtocolError as exc:
            raise _fail(setting, key, str(exc)) from exc
        spki = _spki(cert.public_key())
        private = next((k for k in self.private_keys() if _spki(k.public_key()) == spki), None)
        if private is None:
            raise _fail(setting, key, f"no private key in {', '.join(KEY_DIRS)}/ belongs to {path.name}")
        return Credential(private, cert, self._chain(cert))

    def _chain(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        pool = self.ca_certificates + self.other_certificates
        chain: list[x509.Certificate] = []
        current = cert
        while current.issuer != current.subject and len(chain) < MAX_CHAIN_DEPTH:
            issuer = next((c for c in pool if c.subject == current.issuer and c not in chain and c != current
                           and issued_by(current, c)), None)
            if issuer is None:
                break
            chain.append(issuer)
            current = issuer
        return tuple(chain)

    def trust(self, cacerts: tuple[str, ...], revocation: str) -> TrustStore:
        """One TrustStore per (cacerts, revocation): connections sharing them share it."""
        key = (cacerts, revocation)
        if key not in self._trust:
            anchors = self.ca_certificates
            if cacerts:
                anchors = tuple(c for name in cacerts for c in load_certificates(self.root / "x509ca" / name))
            mode = Revocation.STRICT if revocation == "strict" else Revocation.RELAXED
            self._trust[key] = TrustStore(anchors, self.crls, revocation=mode)
        return self._trust[key]

    # ---- connections --------------------------------------------------------------------------------

    def connections(self) -> list[Connection]:
        section = self.tree.section("connections")
        unknown = [n for n in self.tree.sections if n not in ("connections", "secrets", *self.templates)]
        if unknown:
            other = self.tree.sections[unknown[0]]
            raise _fail(other, unknown[0], "not supported (swanctl.conf sections here: connections, secrets, "
                                           "and sections that connections reference)")
        if section is None:
            return []
        return [self.connection(name, conn) for name, conn in section.sections.items()]

    def check_connection(self, conn: Section, where: str) -> None:
        """Every key of a connection is in the subset, before any of them is interpreted."""
        self.check_keys(conn, CONNECTION_KEYS, where)
        for sub, section in conn.sections.items():
            if sub == "local":
                self.check_keys(section, LOCAL_KEYS, f"{where}.local")
            elif sub == "remote":
                self.check_keys(section, REMOTE_KEYS, f"{where}.remote")
            elif sub == "children":
                for child_name, child in section.sections.items():
                    self.check_keys(child, CHILD_KEYS, f"{where}.children.{child_name}")
                    if child.sections:
                        grand = next(iter(child.sections))
                        raise _fail(child.sections[grand], f"{where}.children.{child_name}.{grand}",
                                    "a child has no subsections")
            else:
                raise _fail(section, f"{where}.{sub}",
                            "not supported (one local and one remote authentication round, and children)")
        if conn.sections.get("children") is not None and conn.sections["children"].settings:
            setting = next(iter(conn.sections["children"].settings.values()))
            raise _fail(setting, f"{where}.children.{setting.key}", "children holds sections only")

    def connection(self, name: str, conn: Section) -> Connection:
        where = f"connections.{name}"
        self.check_connection(conn, where)
        get = conn.settings.get
        local = conn.sections.get("local") or Section("local", conn.path, conn.line)
        remote = conn.sections.get("remote") or Section("remote", conn.path, conn.line)
        local_addrs = _addresses(get("local_addrs"), f"{where}.local_addrs")
        remote_addrs = _addresses(get("remote_addrs"), f"{where}.remote_addrs")
        port = get("local_port")
        if port is not None and _integer(port, f"{where}.local_port") != 500:
            raise _fail(port, f"{where}.local_port", "only 500 (the gateway's port is `ikev2lib run --ike-port`)")
        options: dict[str, object] = {}
        for key, field_name in (("rekey_time", "rekey_time"), ("dpd_delay", "dpd_delay")):
            setting = get(key)
            if setting is not None:
                options[field_name] = _duration(setting, f"{where}.{key}") or None  # 0 = off, as in strongSwan
        if get("encap") is not None:
            options["encap"] = _boolean(get("encap"), f"{where}.encap")  # type: ignore[arg-type]
        if get("mobike") is not None:
            options["mobike"] = _boolean(get("mobike"), f"{where}.mobike")  # type: ignore[arg-type]
        if get("send_certreq") is not None:
            options["send_certreq"] = _boolean(get("send_certreq"), f"{where}.send_certreq")  # type: ignore[arg-type]
        if get("send_cert") is not None:
            options["send_cert"] = get("send_cert").value.strip().lower()  # type: ignore[union-attr]
        proposals = get("proposals")
        if proposals is not None and _list(proposals) != ("default",):
            options["ike_proposals"] = ",".join(_list(proposals))

        local_auth = _auth(local.settings.get("auth"), f"{where}.local.auth")
        remote_auth = _auth(remote.settings.get("auth"), f"{where}.remote.auth")
        credential = None
        if local_auth == "pubkey":
            certs = local.settings.get("certs")
            if certs is None:
                raise _fail(local, f"{where}.local.certs", "auth = pubkey needs certs (raw public keys are not supported)")
            credential = self.credential(certs, f"{where}.local.certs")
            options["credentials"] = (credential,)
        local_id = _identity(local.settings.get("id"))
        if local_id is None:  # strongSwan's default: the certificate's subject, else our address
            local_id = _default_local_id(credential, local_addrs, local, f"{where}.local.id")
        remote_id = _identity(remote.settings.get("id"))
        if remote_auth == "pubkey":
            revocation = remote.settings.get("revocation")
            cacerts = remote.settings.get("cacerts")
            names = _list(cacerts) if cacerts is not None else ()
            for file in names:
                self.file_in("x509ca", file, cacerts, f"{where}.remote.cacerts")  # type: ignore[arg-type]
            options["trust"] = self.trust(names, revocation.value.strip().lower() if revocation else "relaxed")
        if "psk" in (local_auth, remote_auth):
            options.update(self._psks(local_id, remote_id, conn, where))
        children = conn.sections.get("children")
        if children is None or not children.sections:
            raise _fail(conn, f"{where}.children", "a connection needs at least one child")
        child_configs, start = [], False
        for child_name, child in children.sections.items():
            child_config, starts = self.child(child_name, child, f"{where}.children.{child_name}", local_addrs,
                                              remote_addrs)
            child_configs.append(child_config)
            start = start or starts
        remote_host = next((a for a in remote_addrs if parse_selector(a).rank == EXACT_RANK), None)
        remote_port = get("remote_port")
        try:
            config = IkeConfig(
                name=name, local_id=local_id, remote_id=remote_id, local_addrs=local_addrs, remote_addrs=remote_addrs,
                local_auth=local_auth, remote_auth=remote_auth, children=tuple(child_configs), **options,  # type: ignore[arg-type]
            )
            return Connection(
                config=config, start_action="start" if start else "none", remote_host=remote_host,
                remote_port=_integer(remote_port, f"{where}.remote_port") if remote_port is not None else 500,
                source=conn.path,
            )
        except LocalProtocolError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise _fail(conn, where, str(exc)) from exc

    def _psks(self, local_id: str, remote_id: str | None, conn: Section, where: str) -> dict[str, object]:
        """The shared key strongSwan would take: the secret naming both identities, else the peer's,
        else ours, else one naming none. Open to any peer: every secret also keys the ids it names."""
        ranked = [(score, secret) for ids, secret in self.secrets.ike
                  if (score := _psk_score(ids, local_id, remote_id)) is not None]
        peers = tuple((i, s) for ids, s in self.secrets.ike for i in ids if i != local_id) if remote_id is None else ()
        if not ranked and not peers:
            raise _fail(conn, where, f"auth = psk and no ike secret for {local_id!r} and {remote_id or '%any'!r}")
        result: dict[str, object] = {"peer_psks": peers}
        if ranked:
            result["psk"] = max(ranked, key=lambda pair: pair[0])[1]  # the first of the best
        return result

    def child(self, name: str, child: Section, where: str, local_addrs: tuple[str, ...],
              remote_addrs: tuple[str, ...]) -> tuple[ChildConfig, bool]:
        get = child.settings.get
        options: dict[str, object] = {"name": name}
        options["local_ts"] = _selectors(get("local_ts"), local_addrs, f"{where}.local_ts", child)
        options["remote_ts"] = _selectors(get("remote_ts"), remote_addrs, f"{where}.remote_ts", child)
        proposals = get("esp_proposals")
        if proposals is not None and _list(proposals) != ("default",):
            options["esp_proposals"] = ",".join(_list(proposals))
        if get("mode") is not None:
            options["mode"] = get("mode").value.strip().lower()  # type: ignore[union-attr]
        for key in ("rekey_time", "life_time"):
            setting = get(key)
            if setting is not None:
                options[key] = _duration(setting, f"{where}.{key}") or None
        for key in ("rekey_bytes", "life_bytes", "rekey_packets", "life_packets", "replay_window"):
            setting = get(key)
            if setting is not None:
                options[key] = _integer(setting, f"{where}.{key}")
        per_cpu = get("per_cpu_sas")
        if per_cpu is not None:
            options["per_cpu_sas"] = per_cpu_sas_for(per_cpu.value.strip().lower() == "yes")
        start = get("start_action")
        try:
            return ChildConfig(**options), start is not None and start.value.strip().lower() == "start"  # type: ignore[arg-type]
        except LocalProtocolError as exc:
            raise _fail(child, where, str(exc)) from exc


def _referenced_roots(root: Section) -> frozenset[str]:
    """The top-level sections some section references (`conn : defaults`): templates, not settings."""
    found: set[str] = set()
    pending = [root]
    while pending:
        section = pending.pop()
        found.update(reference.split(".")[0] for reference in section.references)
        pending.extend(section.sections.values())
    return frozenset(found)


def _without_empty(section: Section) -> Section:
    """`key =` means "the default" to swanctl: such settings are dropped (the syntax layer gives ""
    for it, and for `key = ""`, which no key of the supported subset gives a meaning to)."""
    section.settings = {k: v for k, v in section.settings.items() if v.value.strip()}
    for sub in section.sections.values():
        _without_empty(sub)
    return section


def _psk_score(ids: tuple[str, ...], local_id: str, remote_id: str | None) -> int | None:
    """How well a secret's ids fit a connection: 3 both, 2 the peer's, 1 ours, 0 none given; None:
    ids that name neither side."""
    if not ids:
        return 0
    peer, ours = remote_id is not None and remote_id in ids, local_id in ids
    return 2 * peer + ours if peer or ours else None


def _spki(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined,no-any-return]


def _addresses(setting: Setting | None, key: str) -> tuple[str, ...]:
    if setting is None:
        return ()
    values = _list(setting)
    for value in values:
        try:
            parse_selector(value)
        except LocalProtocolError as exc:
            raise _fail(setting, key, str(exc)) from exc
    return () if values in (("%any",), ()) else values


def _auth(setting: Setting | None, key: str) -> str:
    if setting is None:
        return "pubkey"  # strongSwan's default
    value = setting.value.strip().lower()
    if value == "psk":
        return "psk"
    if value.split("-")[0] in PUBKEY_AUTH:  # rsa, ecdsa-sha256, pubkey-sha384, ...: a certificate signature
        return "pubkey"
    raise _fail(setting, key, f"{setting.value!r} is not supported (psk, or pubkey / rsa / ecdsa / ed25519 / ed448)")


def _identity(setting: Setting | None) -> str | None:
    if setting is None or setting.value.strip() in ("", "%any"):
        return None
    return setting.value.strip()


def _default_local_id(credential: Credential | None, local_addrs: tuple[str, ...], section: Section, key: str) -> str:
    if credential is not None:
        return dn_text(credential.certificate.subject)
    exact = [a for a in local_addrs if parse_selector(a).rank == EXACT_RANK]
    if not exact:
        raise _fail(section, key, "no id, no certificate and no exact local address to default to")
    return exact[0]


def _selectors(setting: Setting | None, addrs: tuple[str, ...], key: str, child: Section) -> tuple[str, ...]:
    """Traffic selectors; `dynamic` (the default) is the side's own exact address."""
    values = _list(setting) if setting is not None else ("dynamic",)
    result = []
    for value in values:
        if value == "dynamic":
            exact = [a for a in addrs if parse_selector(a).rank == EXACT_RANK]
            if not exact:
                raise _fail(setting or child, key, "dynamic needs an exact address in the connection's addresses")
            result.append(exact[0])
        elif "[" in value:
            raise _fail(setting or child, key, f"{value!r}: protocol/port selectors are not supported")
        else:
            result.append(value)
    return tuple(result)


def load_swanctl(directory: str | os.PathLike[str]) -> GatewayConfig:
    """The gateway configuration of a swanctl directory (ConfigError naming file, line and key)."""
    folder = _Directory(Path(directory))
    return GatewayConfig(connections=tuple(folder.connections()), source=str(folder.conf))
