"""The native TOML configuration (ikev2lib.gateway.toml_config): templates, merging, credentials and
trust loaded once, and every error naming the file, the dotted key and what was wrong."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2lib.gateway import toml_config
from ikev2lib.gateway.model import ConfigError, Connection, DataPathConfig, GatewayConfig, RedirectPolicy
from ikev2lib.gateway.toml_config import (
    MAX_CONFIG_FILE,
    MAX_CONNECTIONS,
    MAX_TEMPLATE_DEPTH,
    load_toml,
    load_toml_text,
)
from ikev2lib.pki import Revocation, TrustStore
from pki.certs import KeyPool, Pki, build_pki, make_crl

KEY_PASSPHRASE = "key-s3cret"
P12_PASSPHRASE = "p12-s3cret"
PEM = serialization.Encoding.PEM


def _pem(*certs: Any) -> bytes:
    return b"".join(cert.public_bytes(PEM) for cert in certs)


@dataclass
class Files:
    """A gateway's directory: CA, CRL, the hub's certificate and key in several forms."""

    dir: Path
    pki: Pki


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    pki = build_pki(KeyPool(rsa_count=0), "p256")
    root = tmp_path_factory.mktemp("gateway")
    for sub in ("x509ca", "x509crl", "x509", "private"):
        (root / sub).mkdir()
    (root / "x509ca" / "root.pem").write_bytes(_pem(pki.root))
    (root / "x509crl" / "inter.crl").write_bytes(make_crl(pki.inter, pki.inter_key).public_bytes(PEM))
    (root / "x509" / "hub.pem").write_bytes(_pem(pki.ee, pki.inter))
    (root / "x509" / "inter.pem").write_bytes(_pem(pki.inter))
    plain = serialization.NoEncryption()
    encrypted = serialization.BestAvailableEncryption(KEY_PASSPHRASE.encode())
    pkcs8 = serialization.PrivateFormat.PKCS8
    (root / "private" / "hub.pem").write_bytes(pki.ee_key.private_bytes(PEM, pkcs8, plain))
    (root / "private" / "hub-encrypted.pem").write_bytes(pki.ee_key.private_bytes(PEM, pkcs8, encrypted))
    (root / "private" / "passphrase.txt").write_text(KEY_PASSPHRASE + "\n")
    bundle = pkcs12.serialize_key_and_certificates(
        b"hub", pki.ee_key, pki.ee, [pki.inter], serialization.BestAvailableEncryption(P12_PASSPHRASE.encode())
    )
    (root / "hub.p12").write_bytes(bundle)
    (root / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    return Files(root, pki)


def load(text: str, base_dir: Path | None = None) -> GatewayConfig:
    return load_toml_text(text, path="gw.toml", base_dir=base_dir)


def error_of(text: str, base_dir: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, base_dir)
    return info.value


def one(text: str, base_dir: Path | None = None) -> Connection:
    (connection,) = load(text, base_dir).connections
    return connection


PSK_CONN = """
[connections.c]
local_id = "gw.example.org"
psk = "secret"
[connections.c.children.net]
local_ts = "10.0.0.0/16"
remote_ts = "10.1.0.0/16"
"""

CHILD = "[connections.c.children.net]"


def _with(extra: str, section: str = "[connections.c]") -> str:
    """PSK_CONN with `extra` lines in `section` (the connection's, or CHILD)."""
    return PSK_CONN.replace(section + "\n", section + "\n" + extra + "\n", 1)


# --- a realistic hub ------------------------------------------------------------------------------

HUB_TEMPLATE = """
listen = ["192.0.2.1"]

[templates.site]
ike_proposals = ["aes256gcm16-prfsha384-ecp384", "aes128gcm16-prfsha256-x25519"]
rekey_time = "4h"
dpd_delay = "30s"
local_addrs = ["192.0.2.1"]
local_id = "vpn.example.org"
local_auth = "pubkey"
remote_auth = "pubkey"
cert = "x509/hub.pem"
key = "private/hub.pem"
cacerts = ["x509ca"]
crls = ["x509crl"]
revocation = "strict"
retransmit = { timeout = "2s", tries = 3 }
[templates.site.child]
esp_proposals = ["aes256gcm16"]
rekey_time = "1h"
"""


def _spoke(i: int) -> str:
    lines = [
        f"[connections.spoke{i}]",
        'template = "site"',
        f'remote_addrs = ["198.51.{i // 250}.{i % 250 + 1}"]',
        f'remote_id = "spoke{i}.example.org"',
    ]
    if i % 2 == 0:  # a PSK spoke
        lines += ['local_auth = "psk"', 'remote_auth = "psk"', f'psk = "0x{i:04x}00ff"']
    if i % 10 == 0:
        lines += ['ike_proposals = "aes128gcm16-prfsha256-x25519"', "rekey_time = 3600", 'start_action = "start"']
    lines += [
        f"[connections.spoke{i}.children.lan]",
        'local_ts = "10.0.0.0/16"',
        f'remote_ts = "10.{i}.0.0/16"',
    ]
    if i % 7 == 0:
        lines += ['rekey_time = "2h"']
    return "\n".join(lines) + "\n"


def test_hub_with_a_hundred_spokes(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Path] = []
    for name in ("load_certificate_dir", "load_crl_dir", "load_certificates", "load_private_key"):
        real: Callable[..., Any] = getattr(toml_config, name)

        def counting(path: Path, *args: Any, real: Callable[..., Any] = real) -> Any:
            loads.append(path)
            return real(path, *args)

        monkeypatch.setattr(toml_config, name, counting)
    text = HUB_TEMPLATE + "".join(_spoke(i) for i in range(100))
    config = load(text, files.dir)

    assert config.listen == ("192.0.2.1",)
    assert [c.name for c in config.connections] == [f"spoke{i}" for i in range(100)]
    assert all(c.source == "gw.toml" for c in config.connections)
    # each file once for the whole hub: the CA directory, the CRL directory, the hub's certificate and key
    assert sorted(p.name for p in loads) == ["hub.pem", "hub.pem", "x509ca", "x509crl"]
    first = config.connections[1].config
    for i, connection in enumerate(config.connections):
        ike = connection.config
        assert ike.remote_id == f"spoke{i}.example.org"
        assert ike.local_id == "vpn.example.org" and ike.local_addrs == ("192.0.2.1",)
        assert ike.dpd_delay == 30.0
        assert ike.retransmit.timeout == 2.0 and ike.retransmit.tries == 3 and ike.retransmit.base == 1.8
        assert ike.trust is first.trust and ike.credentials[0] is first.credentials[0]
        if i % 10 == 0:
            assert ike.ike_proposals == "aes128gcm16-prfsha256-x25519" and ike.rekey_time == 3600.0
            assert connection.start_action == "start"
        else:
            assert ike.ike_proposals == "aes256gcm16-prfsha384-ecp384,aes128gcm16-prfsha256-x25519"
            assert ike.rekey_time == 4 * 3600.0 and connection.start_action == "none"
        assert connection.remote_host == f"198.51.{i // 250}.{i % 250 + 1}" and connection.remote_port == 500
        if i % 2 == 0:
            assert (ike.local_auth, ike.remote_auth, ike.psk) == ("psk", "psk", bytes.fromhex(f"{i:04x}00ff"))
        else:
            assert (ike.local_auth, ike.remote_auth, ike.psk) == ("pubkey", "pubkey", b"")
        (child,) = ike.children
        assert (child.name, child.esp_proposals, child.local_ts, child.remote_ts) == (
            "lan", "aes256gcm16", ("10.0.0.0/16",), (f"10.{i}.0.0/16",)
        )  # fmt: skip
        assert child.rekey_time == (7200.0 if i % 7 == 0 else 3600.0)
    trust = first.trust
    assert isinstance(trust, TrustStore) and trust.revocation is Revocation.STRICT
    assert trust.anchors == (files.pki.root,) and trust.crls_of(files.pki.inter.subject.public_bytes())
    credential = first.credentials[0]
    assert credential.certificate == files.pki.ee and credential.chain == (files.pki.inter,)


def test_load_toml_takes_paths_from_the_file_directory(files: Files) -> None:
    path = files.dir / "gateway.toml"
    path.write_text(HUB_TEMPLATE + _spoke(1))
    config = load_toml(path)
    assert config.source == str(path) and config.connections[0].source == str(path)
    assert config.connections[0].config.credentials[0].certificate == files.pki.ee
    (files.dir / "broken.toml").write_text(HUB_TEMPLATE.replace("x509/hub.pem", "nowhere/hub.pem") + _spoke(1))
    with pytest.raises(ConfigError) as info:
        load_toml(files.dir / "broken.toml")
    assert (info.value.path, info.value.key) == (str(files.dir / "broken.toml"), "connections.spoke1.cert")
    assert str(files.dir / "nowhere" / "hub.pem") in info.value.detail and "(from template 'site')" in info.value.detail


# --- templates and merging ------------------------------------------------------------------------


def test_template_chains_and_lists_apply_in_order() -> None:
    config = load("""
[templates.base]
psk = "base"
rekey_time = "1h"
dpd_delay = "10s"
fragment_size = 1300
[templates.mid]
template = "base"
rekey_time = "2h"
remote_port = 4000
[templates.other]
template = ["base"]
dpd_delay = "20s"
remote_port = 5000
[connections.a]
template = ["mid", "other"]
local_id = "a.example.org"
[connections.a.children.net]
[connections.b]
template = ["other", "mid"]
local_id = "b.example.org"
fragment_size = 1400
[connections.b.children.net]
""")
    a, b = config.connections
    # each template is resolved on its own first: for a, `other` brings base's rekey_time back over mid's
    def values(c: Connection) -> tuple[object, ...]:
        return (c.config.rekey_time, c.config.dpd_delay, c.remote_port, c.config.fragment_size)

    assert values(a) == (3600.0, 20.0, 5000, 1300)
    assert values(b) == (7200.0, 10.0, 4000, 1400)
    assert a.config.psk == b.config.psk == b"base"


def test_datapath_table() -> None:
    assert load(_with("")).datapath is None
    config = load('[datapath]\ntun = "vpn0"\naddresses = ["10.1.0.1/24", "2001:db8:1::1/64"]\nworkers = 2\n'
                  'path_mtu = 9000\nmss_clamp = false\n' + _with(""))
    assert config.datapath == DataPathConfig(tun="vpn0", addresses=("10.1.0.1/24", "2001:db8:1::1/64"), workers=2,
                                             path_mtu=9000, mss_clamp=False)
    assert load("[datapath]\n" + _with("")).datapath == DataPathConfig()  # every key has a default
    assert load("max_sas_per_peer = 2500\n" + _with("")).max_sas_per_peer == 2500


HA_TABLE = """[ha]
etcd = ["192.0.2.250:2379", "192.0.2.251:2379"]
cluster = "hub"
node = "gw-a"
service_address = "192.0.2.1/24"
service_interface = "eth0"
"""


def test_ha_table(tmp_path: Path) -> None:
    key = bytes(range(32))
    config = load(HA_TABLE + f'key = "0x{key.hex()}"\nlease = "3s"\ndead_after = "0.3s"\n' + _with(""))
    ha = config.ha
    assert ha is not None and ha.key == key and ha.etcd == ("192.0.2.250:2379", "192.0.2.251:2379")
    assert (ha.cluster, ha.node, ha.service_ip, ha.lease, ha.dead_after) == ("hub", "gw-a", "192.0.2.1", 3, 0.3)
    assert "key=" not in repr(ha)  # the key never reaches a log line
    (tmp_path / "raw.key").write_bytes(b"\n" * 32)  # raw octets, even line breaks, are taken as they are
    (tmp_path / "text.key").write_text("0s" + __import__("base64").b64encode(key).decode() + "\n")
    assert load(HA_TABLE + 'key_file = "raw.key"\n' + _with(""), tmp_path).ha.key == b"\n" * 32  # type: ignore[union-attr]
    assert load(HA_TABLE + 'key_file = "text.key"\n' + _with(""), tmp_path).ha.key == key  # type: ignore[union-attr]
    assert load(_with("")).ha is None


@pytest.mark.parametrize(("extra", "key", "message"), [
    ("", "ha", "exactly one of `key` and `key_file`"),
    ('key = "0x00"\n', "ha", "the key must be 32 octets"),
    (f'key = "0x{"00" * 32}"\nheartbeat = "2s"\n', "ha", "heartbeat must be shorter than dead_after"),
    (f'key = "0x{"00" * 32}"\nwhen = 1\n', "ha.when", "allowed:"),
])
def test_ha_errors(extra: str, key: str, message: str) -> None:
    err = error_of(HA_TABLE + extra + _with(""))
    assert err.key == key and message in err.detail, err


def test_redirect_table_and_follow_redirects() -> None:
    assert load(_with("")).redirect is None
    config = load('[redirect]\nto = "gw2.example.org"\nabove = 500\n' + _with("follow_redirects = false"))
    assert config.redirect == RedirectPolicy(to="gw2.example.org", above=500)
    assert config.connections[0].config.follow_redirects is False
    assert load('[redirect]\nto = "2001:db8::2"\n' + _with("")).redirect == RedirectPolicy(to="2001:db8::2", above=0)
    assert load(_with("")).connections[0].config.follow_redirects is True  # strongSwan's default


def test_child_defaults_and_children_order() -> None:
    config = load("""
[templates.t]
psk = "x"
[templates.t.child]
esp_proposals = ["aes256gcm16", "aes128gcm16"]
rekey_time = "1h"
replay_window = 64
[templates.t.children.first]
local_ts = "10.9.0.0/16"
mode = "transport"
[connections.c]
template = "t"
local_id = "c.example.org"
[connections.c.child]
replay_window = 128
[connections.c.children.zeta]
rekey_time = "2h"
[connections.c.children.alpha]
esp_proposals = "aes128-sha256"
[connections.c.children.first]
remote_ts = "10.8.0.0/16"
""")
    children = config.connections[0].config.children
    assert [c.name for c in children] == ["first", "zeta", "alpha"]  # templates' first, then file order
    first, zeta, alpha = children
    assert (first.local_ts, first.remote_ts, first.mode) == (("10.9.0.0/16",), ("10.8.0.0/16",), "transport")
    assert first.esp_proposals == "aes256gcm16,aes128gcm16" and first.rekey_time == 3600.0
    assert (zeta.rekey_time, zeta.replay_window, zeta.mode) == (7200.0, 128, "tunnel")
    assert (alpha.esp_proposals, alpha.rekey_time, alpha.replay_window) == ("aes128-sha256", 3600.0, 128)


def test_start_action_per_child_and_remote_host() -> None:
    base = _with('remote_addrs = ["%any", "10.2.0.0/24", "2001:db8::7/128", "192.0.2.9"]')
    assert one(base).start_action == "none"
    started = one(base + '[connections.c.children.other]\nstart_action = "start"\n')
    assert started.start_action == "start" and started.remote_host == "2001:db8::7"
    assert one(base.replace("[connections.c]", '[connections.c]\nstart_action = "start"')).start_action == "start"
    defaults = one(base + '[connections.c.child]\nstart_action = "start"\n')
    assert defaults.start_action == "start"
    responder = _with('remote_addrs = ["10.2.0.0/24"]')
    assert one(responder).remote_host is None
    err = error_of(responder + '[connections.c.children.other]\nstart_action = "start"\n')
    assert (err.path, err.key) == ("gw.toml", "connections.c") and "needs a remote address" in err.detail


def test_psk_notations_and_files(tmp_path: Path) -> None:
    assert one(PSK_CONN).config.psk == b"secret"
    assert one(PSK_CONN.replace('"secret"', '"0x00ff10"')).config.psk == b"\x00\xff\x10"
    assert one(PSK_CONN.replace('"secret"', '"0sAP8Q"')).config.psk == b"\x00\xff\x10"
    assert one(PSK_CONN.replace('"secret"', '"gr\\u00fcezi"')).config.psk == "grüezi".encode()
    (tmp_path / "psk.txt").write_bytes(b"from a file\r\n")
    (tmp_path / "psk.hex").write_text("0xdeadbeef\n")
    assert one(PSK_CONN.replace('psk = "secret"', 'psk_file = "psk.txt"'), tmp_path).config.psk == b"from a file"
    assert one(PSK_CONN.replace('psk = "secret"', 'psk_file = "psk.hex"'), tmp_path).config.psk == b"\xde\xad\xbe\xef"
    peers = one(PSK_CONN + '[connections.c.peer_psks]\n"alice@example.org" = "a"\n"@bob" = "0x0b"\n').config
    assert peers.peer_psks == (("alice@example.org", b"a"), ("@bob", b"\x0b"))
    # a layer giving psk_file hides the template's psk (and the other way round)
    layered = f"""
[templates.t]
psk_file = "{tmp_path / 'psk.txt'}"
{PSK_CONN.replace('[connections.c]', '[connections.c]' + chr(10) + 'template = "t"')}"""
    assert one(layered).config.psk == b"secret"
    reversed_ = layered.replace(f'psk_file = "{tmp_path / "psk.txt"}"', 'psk = "template"').replace(
        'psk = "secret"', f'psk_file = "{tmp_path / "psk.txt"}"'
    )
    assert one(reversed_).config.psk == b"from a file"


def test_pkcs12_and_encrypted_keys(files: Files) -> None:
    cert_conn = """
[connections.c]
local_id = "vpn.example.org"
local_auth = "pubkey"
psk = "for the peer"
{auth}
[connections.c.children.net]
"""
    p12 = one(cert_conn.format(auth=f'pkcs12 = "hub.p12"\nkey_passphrase = "{P12_PASSPHRASE}"'), files.dir)
    assert p12.config.credentials[0].certificate == files.pki.ee
    assert p12.config.credentials[0].chain == (files.pki.inter,)
    encrypted = 'cert = "x509/hub.pem"\nkey = "private/hub-encrypted.pem"\n'
    with_passphrase = one(cert_conn.format(auth=encrypted + f'key_passphrase = "{KEY_PASSPHRASE}"'), files.dir)
    assert with_passphrase.config.credentials[0].certificate == files.pki.ee
    from_file = one(cert_conn.format(auth=encrypted + 'passphrase_file = "private/passphrase.txt"'), files.dir)
    assert from_file.config.credentials[0].certificate == files.pki.ee
    (files.dir / "p12pass.txt").write_text(P12_PASSPHRASE)
    several = one(cert_conn.format(auth=f"""credentials = [
  {{ cert = "x509/hub.pem", key = "private/hub-encrypted.pem", passphrase = "{KEY_PASSPHRASE}" }},
  {{ pkcs12 = "hub.p12", passphrase_file = "p12pass.txt" }},
]"""), files.dir)
    assert [c.certificate for c in several.config.credentials] == [files.pki.ee, files.pki.ee]
    shorthand_first = one(cert_conn.format(
        auth='cert = "x509/hub.pem"\nkey = "private/hub.pem"\ncredentials = [{ pkcs12 = "hub.p12", passphrase = "'
        + P12_PASSPHRASE + '" }]'
    ), files.dir)  # fmt: skip
    assert [c.chain for c in shorthand_first.config.credentials] == [(files.pki.inter,), (files.pki.inter,)]
    # a connection's cert and key hide a template's pkcs12
    layered = f'[templates.t]\npkcs12 = "hub.p12"\nkey_passphrase = "{P12_PASSPHRASE}"\n' + cert_conn.format(
        auth='template = "t"\ncert = "x509/inter.pem"\nkey = "private/hub.pem"'
    )
    err = error_of(layered, files.dir)  # the template's passphrase is still there, the bundle is not
    assert err.key == "connections.c.cert" and "does not belong to certificate" in err.detail
    err = error_of(cert_conn.format(auth=encrypted + 'key_passphrase = "wrong"'), files.dir)
    assert err.key == "connections.c.key" and "wrong passphrase" in err.detail
    err = error_of(cert_conn.format(auth=encrypted), files.dir)
    assert err.key == "connections.c.key" and "no passphrase" in err.detail
    err = error_of(cert_conn.format(auth='pkcs12 = "hub.p12"\nkey_passphrase = "wrong"'), files.dir)
    assert err.key == "connections.c.pkcs12" and "wrong passphrase" in err.detail


def test_zero_and_any_undo_a_template() -> None:
    text = """
[templates.t]
psk = "x"
dpd_delay = "30s"
rekey_time = "4h"
remote_id = "peer.example.org"
[templates.t.child]
rekey_time = "1h"
life_time = "2h"
[connections.c]
template = "t"
local_id = "c.example.org"
dpd_delay = 0
rekey_time = "0s"
remote_id = "%any"
[connections.c.children.net]
rekey_time = 0
life_time = 0
"""
    ike = one(text).config
    assert (ike.dpd_delay, ike.rekey_time, ike.remote_id) == (None, None, None)
    assert (ike.children[0].rekey_time, ike.children[0].life_time) == (None, None)


def test_unused_templates_are_checked_too() -> None:
    err = error_of(PSK_CONN + '[templates.unused]\ndpd_delay = "30s"\nbogus = 1\n')
    assert err.key == "templates.unused.bogus" and "unknown key" in err.detail
    err = error_of(PSK_CONN + '[templates.unused]\ntemplate = "missing"\n')
    assert err.key == "templates.unused.template" and "unknown template 'missing'" in err.detail
    # a value every connection overrides is still checked
    text = '[templates.t]\nrekey_time = "soon"\n' + _with('template = "t"\nrekey_time = 60')
    err = error_of(text)
    assert err.key == "templates.t.rekey_time" and "not a duration" in err.detail


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('listen = ["192.0.2.1"]\nhosts = 1\n', "hosts",
         "unknown key; allowed: connections, datapath, ha, listen, max_sas_per_peer, redirect, templates"),
        ("[redirect]\nabove = 3\n", "redirect", "needs `to`"),
        ('[redirect]\nto = "not a host!"\n', "redirect.to", "neither an IP address nor a DNS name"),
        ('[redirect]\nto = "192.0.2.9"\nabove = -1\n', "redirect.above", "must be in 0..10000"),
        ('[redirect]\nto = "192.0.2.9"\nwhen = 1\n', "redirect.when", "allowed: above, to"),
        (_with("foo = 1"), "connections.c.foo", "allowed: cacerts, cert"),
        ("[datapath]\nqueues = 2\n", "datapath.queues", "allowed: addresses, mss_clamp, offload, path_mtu, tun, workers"),
        ("[datapath]\nworkers = 65\n", "datapath.workers", "must be in 0..64"),
        ("[datapath]\npath_mtu = 500\n", "datapath.path_mtu", "must be in 576..65535"),
        ('[datapath]\naddresses = ["10.1.0.300/24"]\n', "datapath.addresses[0]", "not an address with a prefix"),
        ('[datapath]\nmss_clamp = "yes"\n', "datapath.mss_clamp", "expected true or false"),
        ("datapath = 1\n", "datapath", "expected a table"),
        ("max_sas_per_peer = 0\n", "max_sas_per_peer", "must be in 1..10000"),
        (_with("rekeytime = 1", CHILD), "connections.c.children.net.rekeytime", "allowed:"),
        (_with("retransmit = { timeout = 1, count = 3 }"), "connections.c.retransmit.count",
         "allowed: base, timeout, tries"),
        (_with('credentials = [{ cert = "a", keyfile = "b" }]'), "connections.c.credentials[0].keyfile", "allowed:"),
        (_with("[connections.c.child]\nsize = 1\n"), "connections.c.child.size", "allowed:"),
        ("connections = 1\n", "connections", "expected a table, got an integer"),
        ("[connections]\nc = 1\n", "connections.c", "expected a table, got an integer"),
        (_with("rekey_time = true"), "connections.c.rekey_time", "expected a duration"),
        (_with('rekey_time = "4 hours"'), "connections.c.rekey_time", "not a duration"),
        (_with("rekey_time = inf"), "connections.c.rekey_time", "at most"),
        (_with("dpd_delay = -5"), "connections.c.dpd_delay", "cannot be negative"),
        (_with('encap = "yes"'), "connections.c.encap", "expected true or false, got a string"),
        (_with("remote_addrs = [1, 2]"), "connections.c.remote_addrs[0]", "expected a string, got an integer"),
        (_with("local_addrs = { a = 1 }"), "connections.c.local_addrs", "expected a string or an array of strings"),
        (_with("remote_port = 0"), "connections.c.remote_port", "must be in 1..65535"),
        (_with("fragment_size = 1.5"), "connections.c.fragment_size", "expected an integer, got a float"),
        (_with("replay_window = -1", CHILD), "connections.c.children.net.replay_window", "must be in 0.."),
        (_with("per_cpu_sas = 17", CHILD), "connections.c.children.net.per_cpu_sas", "must be in 0..16"),
        (_with('per_cpu_sas = "yes"', CHILD), "connections.c.children.net.per_cpu_sas", "expected an integer"),
        (_with("retransmit = { base = nan }"), "connections.c.retransmit.base", "finite"),
        (_with("retransmit = { tries = 99 }"), "connections.c.retransmit", "tries must be in"),
        (_with('start_action = "trap"'), "connections.c.start_action", "expected one of none, start"),
        (_with('revocation = "paranoid"'), "connections.c.revocation", "expected one of relaxed, strict"),
        (_with("peer_psks = { alice = 1 }"), "connections.c.peer_psks.alice", "expected a string"),
        (_with('peer_psks = { "a b" = "0xzz" }'), 'connections.c.peer_psks."a b"', "not hexadecimal after 0x"),
        (PSK_CONN.replace('"secret"', '"0s!!"'), "connections.c.psk", "not base64 after 0s"),
        (_with('psk_file = "{THIS}"'), "connections.c.psk_file", "give psk or psk_file, not both"),
        (_with("template = 3"), "connections.c.template", "expected a string or an array of strings"),
        (_with('template = ["nope"]'), "connections.c.template", "unknown template 'nope'"),
        (PSK_CONN.replace('local_id = "gw.example.org"', ""), "connections.c.local_id", "missing"),
        (PSK_CONN.split("[connections.c.children")[0], "connections.c.children", "missing"),
        (_with('ike_proposals = "aes256gcm17-prfsha256-x25519"'), "connections.c",
         "ike_proposals: unknown proposal keyword"),
        (_with('local_auth = "eap"'), "connections.c", "local_auth must be one of psk, pubkey"),
        (_with('remote_auth = "pubkey"'), "connections.c", 'remote_auth="pubkey" needs trust'),
        (_with('remote_addrs = ["gw.example.org"]'), "connections.c", "not an IP address, subnet, range or %any"),
        (_with('mode = "beet"', CHILD), "connections.c", "child 'net': mode must be"),
        (_with('esp_proposals = "aes1"', CHILD), "connections.c", "esp_proposals (child 'net')"),
        (_with('rekey_time = "2h"\nlife_time = "1h"', CHILD), "connections.c", "greater than"),
        (_with('cert = "{THIS}"'), "connections.c.cert", "needs key"),
        (_with('key = "{THIS}"'), "connections.c.key", "needs cert"),
        (_with('pkcs12 = "{THIS}"\ncert = "{THIS}"'), "connections.c.cert", "pkcs12 bundle holds"),
        (_with('cert = "/etc"\nkey = "{THIS}"'), "connections.c.cert", "not a regular file"),
        (_with('cacerts = "/dev/null"'), "connections.c.cacerts", "not a regular file or directory"),
        (_with('cacerts = ["/nonexistent/ca.pem"]'), "connections.c.cacerts[0]", "cannot read"),
        (_with('cacerts = ["x509ca"]'), "connections.c.cacerts[0]", "relative path needs"),
        (_with('key_passphrase = "a"\npassphrase_file = "{THIS}"\ncert = "a"'), "connections.c.passphrase_file",
         "give key_passphrase or passphrase_file, not both"),
        ('[connections.""]\n', 'connections.""', "a name must be printable"),
        (PSK_CONN.replace("children.net", 'children."bad\\u0007"'), 'connections.c.children."bad\\u0007"', "printable"),
        ('listen = ["0.0.0.0/0"]\n', "listen[0]", "not an IP address"),
        ('listen = "192.0.2.1"\n[templates]\nt = []\n', "templates.t", "expected a table, got an array"),
    ],
)
def test_errors_name_file_key_and_problem(text: str, key: str, message: str) -> None:
    err = error_of(text.replace("{THIS}", str(Path(__file__).resolve())))  # any regular file
    assert (err.path, err.key) == ("gw.toml", key), str(err)
    assert message in err.detail, str(err)
    assert str(err).startswith(f"gw.toml: {key}: ")


def test_file_errors(files: Files, tmp_path: Path) -> None:
    garbage = _with('local_auth = "pubkey"\ncert = "garbage.pem"\nkey = "private/hub.pem"')
    err = error_of(garbage, files.dir)
    assert err.key == "connections.c.cert" and "garbage.pem: not an X.509 certificate" in err.detail
    err = error_of(_with('local_auth = "pubkey"\ncert = "x509/hub.pem"\nkey = "garbage.pem"'), files.dir)
    assert err.key == "connections.c.key" and "garbage.pem: not a private key" in err.detail
    err = error_of(_with('cacerts = "garbage.pem"\nremote_auth = "pubkey"'), files.dir)
    assert err.key == "connections.c.cacerts" and "garbage.pem" in err.detail
    err = error_of(_with('cacerts = "x509/hub.pem"\nremote_auth = "pubkey"'), files.dir)
    assert err.key == "connections.c.cacerts" and "not a CA certificate" in err.detail
    err = error_of(_with('cacerts = "x509ca"\ncrls = ["x509ca/root.pem"]'), files.dir)
    assert err.key == "connections.c.crls[0]" and "not an X.509 CRL" in err.detail
    (tmp_path / "empty").mkdir()
    err = error_of(_with('cacerts = "empty"'), tmp_path)
    assert err.key == "connections.c.cacerts" and "holds no certificates" in err.detail
    err = error_of(_with('cert = "x509/hub.pem"\nkey = "private/hub.pem"\nchain = ["garbage.pem"]'), files.dir)
    assert err.key == "connections.c.chain[0]" and "garbage.pem" in err.detail
    (tmp_path / "big").write_bytes(b"x" * (toml_config.MAX_SECRET_FILE + 1))
    err = error_of(PSK_CONN.replace('psk = "secret"', 'psk_file = "big"'), tmp_path)
    assert err.key == "connections.c.psk_file" and "larger than" in err.detail


def test_inherited_errors_name_connection_and_template(files: Files) -> None:
    text = """
[templates.base]
psk = "x"
ike_proposals = "aes256gcm17-prfsha256-x25519"
dpd_delay = "half a minute"
cacerts = "missing.pem"
[templates.site]
template = "base"
[templates.site.child]
mode = "beet"
[connections.spoke]
template = "site"
local_id = "spoke.example.org"
[connections.spoke.children.net]
"""
    err = error_of(text, files.dir)
    assert err.key == "connections.spoke.dpd_delay" and err.detail.endswith("(from template 'base')")
    text = text.replace('dpd_delay = "half a minute"', "")
    err = error_of(text, files.dir)
    assert err.key == "connections.spoke.cacerts" and "missing.pem" in err.detail and "'base'" in err.detail
    text = text.replace('cacerts = "missing.pem"', "")
    err = error_of(text.replace('mode = "beet"', "nonsense = 1"), files.dir)
    assert err.key == "connections.spoke.child.nonsense" and "(from template 'site')" in err.detail
    err = error_of(text, files.dir)
    assert err.key == "connections.spoke" and "child 'net': mode must be" in err.detail
    assert err.detail.endswith("(from template 'site')")
    err = error_of(text.replace('mode = "beet"', ""), files.dir)
    assert err.key == "connections.spoke" and "unknown proposal keyword" in err.detail
    assert err.detail.endswith("(from template 'base')")


def test_template_cycles_unknown_names_and_depth() -> None:
    cycle = PSK_CONN.replace("[connections.c]", '[connections.c]\ntemplate = "a"') + """
[templates.a]
template = "b"
[templates.b]
template = ["c"]
[templates.c]
template = "a"
"""
    err = error_of(cycle)
    assert err.key == "templates.c.template" and "template cycle: a -> b -> c -> a" in err.detail
    unknown = cycle.replace('[templates.c]\ntemplate = "a"', '[templates.c]\ntemplate = "zz"')
    err = error_of(unknown)
    assert err.key == "templates.c.template" and "unknown template 'zz' (via a -> b -> c)" in err.detail

    def chain(length: int) -> str:
        links = "".join(f'[templates.t{i}]\ntemplate = "t{i + 1}"\n' for i in range(1, length))
        return links + f"[templates.t{length}]\n"

    deepest = PSK_CONN.replace("[connections.c]", '[connections.c]\ntemplate = "t1"') + chain(MAX_TEMPLATE_DEPTH)
    assert one(deepest).name == "c"
    too_deep = PSK_CONN.replace("[connections.c]", '[connections.c]\ntemplate = "t1"') + chain(MAX_TEMPLATE_DEPTH + 1)
    err = error_of(too_deep)
    assert f"nested more than {MAX_TEMPLATE_DEPTH} deep: t1 -> t2" in err.detail
    assert err.detail.endswith(f"t{MAX_TEMPLATE_DEPTH + 1}") and err.key.endswith(".template")
    # the same, where the lower half was resolved (and memoized) for an earlier connection
    earlier = PSK_CONN.replace("[connections.c]", '[connections.b]\ntemplate = "t9"\nlocal_id = "b"\npsk = "x"\n'
                               '[connections.b.children.x]\n[connections.c]\ntemplate = "t1"')
    err = error_of(earlier + chain(MAX_TEMPLATE_DEPTH + 1))
    assert err.key == "templates.t8.template" and "t1 -> t2 -> t3" in err.detail and "t17" in err.detail


def test_document_level_errors(tmp_path: Path) -> None:
    err = error_of('[connections.c]\nlocal_id = "a"\nlocal_id = "b"\n')
    assert (err.key, err.line) == ("", 3) and "not valid TOML" in err.detail and "line 3, column" in err.detail
    assert str(err).startswith("gw.toml:3: not valid TOML")
    err = error_of("x = " + "[" * 5000)
    assert err.key == "" and "nested too deeply" in err.detail
    err = error_of("x = 1" + "0" * 5000)
    assert "not valid TOML" in err.detail
    err = error_of("\n" + "a." * 40 + "b = 1\n")
    assert err.line == 2 and "dotted key of more than" in err.detail
    err = error_of("# " + "x" * MAX_CONFIG_FILE)
    assert "larger than" in err.detail
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_toml_text(b"a = '\xff'", path="gw.toml")
    with pytest.raises(ConfigError, match="lone surrogate"):
        load_toml_text("a = '\ud800'", path="gw.toml")
    many = "".join(f"[connections.c{i}]\n" for i in range(MAX_CONNECTIONS + 1))
    err = error_of(many)
    assert err.key == "connections" and str(MAX_CONNECTIONS) in err.detail
    with pytest.raises(ConfigError, match="cannot read") as info:
        load_toml(tmp_path / "missing.toml")
    assert info.value.path == str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_toml(tmp_path)
    assert load("").connections == ()


# --- properties -----------------------------------------------------------------------------------


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)


_seconds = st.integers(1, 10**6)
# key -> (values as written, with what the loaded config holds; how to read it off a connection)
OVERRIDABLE: dict[str, tuple[st.SearchStrategy[tuple[object, object]], Callable[[Connection], object]]] = {
    "ike_proposals": (
        st.sampled_from(["aes128gcm16-prfsha256-x25519", "aes256gcm16-prfsha384-ecp384", "aes256-sha256-modp2048"])
        .map(lambda p: (p, p)),
        lambda c: c.config.ike_proposals,
    ),
    "rekey_time": (_seconds.map(lambda s: (s, float(s))), lambda c: c.config.rekey_time),
    "dpd_delay": (_seconds.map(lambda s: (f"{s}m", 60.0 * s)), lambda c: c.config.dpd_delay),
    "fragment_size": (st.integers(256, 65535).map(lambda n: (n, n)), lambda c: c.config.fragment_size),
    "remote_port": (st.integers(1, 65535).map(lambda n: (n, n)), lambda c: c.remote_port),
    "encap": (st.booleans().map(lambda b: (b, b)), lambda c: c.config.encap),
    "send_cert": (st.sampled_from(["always", "ifasked", "never"]).map(lambda v: (v, v)), lambda c: c.config.send_cert),
    "psk": (st.text("abc", min_size=1, max_size=5).map(lambda t: (t, t.encode())), lambda c: c.config.psk),
    "retransmit": (
        st.integers(0, 20).map(lambda n: ({"tries": n}, n)),
        lambda c: c.config.retransmit.tries,
    ),
}
CHILD_OVERRIDABLE: dict[str, tuple[st.SearchStrategy[tuple[object, object]], Callable[[Any], object]]] = {
    "esp_proposals": (st.sampled_from(["aes128gcm16", "aes256gcm16", "aes128-sha256"]).map(lambda p: (p, p)),
                      lambda child: child.esp_proposals),
    "replay_window": (st.integers(0, 4096).map(lambda n: (n, n)), lambda child: child.replay_window),
    "mode": (st.sampled_from(["tunnel", "transport"]).map(lambda m: (m, m)), lambda child: child.mode),
    "rekey_time": (_seconds.map(lambda s: (f"{s}s", float(s))), lambda child: child.rekey_time),
}


@st.composite
def layers(draw: st.DrawFn) -> list[tuple[dict[str, tuple[object, object]], dict[str, tuple[object, object]]]]:
    """Three layers (base template, site template, connection), each a random subset of keys."""
    result = []
    for _ in range(3):
        keys = draw(st.sets(st.sampled_from(sorted(OVERRIDABLE))))
        child_keys = draw(st.sets(st.sampled_from(sorted(CHILD_OVERRIDABLE))))
        values = {k: draw(OVERRIDABLE[k][0]) for k in sorted(keys)}
        result.append((values, {k: draw(CHILD_OVERRIDABLE[k][0]) for k in sorted(child_keys)}))
    return result


@settings(max_examples=150, deadline=None)
@given(layers(), st.booleans())
def test_the_nearest_layer_wins(drawn: list[Any], child_defaults: bool) -> None:
    names = ["templates.base", "templates.site", "connections.c"]
    text = ""
    for name, (values, child_values) in zip(names, drawn):
        text += f"[{name}]\n" + "".join(f"{k} = {_toml(v[0])}\n" for k, v in values.items())
        if name == "templates.site":
            text += 'template = "base"\n'
        if name == "connections.c":
            text += 'template = ["site"]\nlocal_id = "c.example.org"\n'
        # child values of templates go to the `child` defaults, or to the child itself
        table = f"[{name}.child]" if child_defaults and name != "connections.c" else f"[{name}.children.net]"
        text += f"{table}\n" + "".join(f"{k} = {_toml(v[0])}\n" for k, v in child_values.items())
    if not any("psk" in values for values, _ in drawn):
        text += '[connections.c.peer_psks]\npeer = "x"\n'
    connection = one(text)
    for key, (_, read) in OVERRIDABLE.items():
        given_by = [values[key][1] for values, _ in drawn if key in values]
        if given_by:
            assert read(connection) == given_by[-1], key
    (child,) = connection.config.children
    for key, (_, read) in CHILD_OVERRIDABLE.items():
        given_by = [child_values[key][1] for _, child_values in drawn if key in child_values]
        if given_by:
            assert read(child) == given_by[-1], key


def _only_config_errors(document: str | bytes, base_dir: Path | None = None) -> None:
    try:
        result = load_toml_text(document, path="fuzz.toml", base_dir=base_dir)
    except ConfigError as exc:
        assert exc.path == "fuzz.toml"
        return
    assert isinstance(result, GatewayConfig)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_any_input_is_a_config_or_a_config_error(document: str | bytes) -> None:
    _only_config_errors(document)


KEYS = sorted(toml_config._CONNECTION_KEYS | toml_config._CHILD_KEYS | toml_config._CREDENTIAL_KEYS | {"timeout"})
_scalars = st.one_of(
    st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
    st.sampled_from(["30s", "4h", "0x00ff", "0s", "%any", "start", "pubkey", "psk", "x509ca", "hub.p12",
                     "x509/hub.pem", "private/hub.pem", "10.0.0.0/8", "192.0.2.1", "aes128gcm16", "site"]),
)  # fmt: skip
_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    max_leaves=8,
)
_tables = st.dictionaries(st.sampled_from(KEYS), _values, max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(["site", "base"]), _tables, max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), _tables, max_size=2),
    st.one_of(st.none(), _values),
)
def test_any_document_is_a_config_or_a_config_error(
    files: Files, templates: dict[str, Any], connections: dict[str, Any], listen: object
) -> None:
    document: dict[str, Any] = {"templates": templates, "connections": connections}
    if listen is not None:
        document["listen"] = listen
    text = "".join(f"{k} = {_toml(v)}\n" for k, v in document.items())
    _only_config_errors(text, files.dir)


@pytest.mark.parametrize(("value", "expected"), [("true", min(os.cpu_count() or 1, 16)), ("false", 0), ("3", 3)])
def test_per_cpu_sas_is_one_per_cpu_or_a_number(value: str, expected: int) -> None:
    config = load_toml_text(_with(f"per_cpu_sas = {value}", CHILD), base_dir=None)
    assert config.connections[0].config.children[0].per_cpu_sas == expected


def test_mobike_is_on_by_default_and_can_be_turned_off() -> None:
    assert one(PSK_CONN).config.mobike is True
    assert one(_with("mobike = false")).config.mobike is False
    assert "expected true or false" in str(error_of(_with('mobike = "no"')))

