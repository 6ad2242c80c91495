"""A swanctl directory as a gateway configuration: what maps where, strongSwan's defaults, and a clear
error (file, line, key) for everything outside the supported subset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ikev2lib.gateway.model import ConfigError
from ikev2lib.gateway.swanctl import load_swanctl
from ikev2lib.pki import Revocation

from pki.certs import KeyPool, build_pki, issue, make_crl, name

SITE = """\
connections {
    hub {
        local_addrs = 192.0.2.1
        remote_addrs = 198.51.100.0/24, 203.0.113.7
        proposals = aes256gcm16-prfsha384-ecp384, aes128-sha256-modp2048
        rekey_time = 4h
        dpd_delay = 30s
        encap = yes
        mobike = no
        local {
            auth = ecdsa-sha256
            certs = gw.pem
        }
        remote {
            auth = pubkey
            id = "spoke.example.org"
            revocation = strict
        }
        children {
            net {
                local_ts = 10.0.0.0/16
                remote_ts = 10.1.0.0/16, 10.2.0.0/16
                esp_proposals = aes256gcm16-ecp384
                rekey_time = 1h
                life_time = 66m
                rekey_bytes = 1000000
                per_cpu_sas = yes
                start_action = start
            }
            host {
                remote_ts = 203.0.113.7
                esp_proposals = default
            }
        }
    }
    road : connections.hub {
        remote_addrs = %any
        local {
            auth = psk
            id = gw.example.org
        }
        remote {
            auth = psk
            id = %any
        }
        children {
            net {
                start_action = none
            }
        }
    }
}
secrets {
    ike-alice {
        id = alice@example.org
        secret = 0x736563726574
    }
    ike-bob {
        id-a = bob@example.org
        id-b = gw.example.org
        secret = "bob's secret"
    }
    private-gw {
        file = gw.pem
        secret = "key passphrase"
    }
}
"""


@pytest.fixture(scope="module")
def pki():  # type: ignore[no-untyped-def]
    return build_pki(KeyPool(rsa_count=1), "p256")


def _directory(tmp_path: Path, pki, conf: str = SITE) -> Path:  # type: ignore[no-untyped-def]
    root = tmp_path / "swanctl"
    for sub in ("x509", "x509ca", "x509crl", "private"):
        (root / sub).mkdir(parents=True)
    key = pki.keys.new("p256")
    cert = issue(name("gw.example.org"), key, pki.inter, pki.inter_key, ca=False,
                 san=x509.SubjectAlternativeName([x509.DNSName("gw.example.org")]))
    pem = serialization.Encoding.PEM
    (root / "x509" / "gw.pem").write_bytes(cert.public_bytes(pem))
    (root / "x509ca" / "root.pem").write_bytes(pki.root.public_bytes(pem))
    (root / "x509ca" / "inter.pem").write_bytes(pki.inter.public_bytes(pem))
    (root / "x509crl" / "inter.crl").write_bytes(make_crl(pki.inter, pki.inter_key).public_bytes(pem))
    encrypted = serialization.BestAvailableEncryption(b"key passphrase")
    (root / "private" / "gw.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, encrypted))
    (root / "swanctl.conf").write_text(conf)
    return root


def test_site_configuration(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    gateway = load_swanctl(_directory(tmp_path, pki))
    hub, road = gateway.connections
    c = hub.config
    assert (c.name, c.local_addrs, c.remote_addrs) == ("hub", ("192.0.2.1",), ("198.51.100.0/24", "203.0.113.7"))
    assert c.ike_proposals == "aes256gcm16-prfsha384-ecp384,aes128-sha256-modp2048"
    assert (c.rekey_time, c.dpd_delay, c.encap) == (4 * 3600, 30, True)
    assert not c.mobike and not road.config.mobike  # mobike = no (road references hub); the default is yes
    assert (c.local_auth, c.remote_auth, c.remote_id) == ("pubkey", "pubkey", "spoke.example.org")
    assert c.local_id == "O=ikev2lib tests, CN=gw.example.org"  # strongSwan's default: the subject DN
    (credential,) = c.credentials
    assert credential.certificate.subject == name("gw.example.org") and credential.chain == (pki.inter, pki.root)
    assert c.trust is not None and c.trust.revocation is Revocation.STRICT and len(c.trust.anchors) == 2
    net, host = c.children
    assert (net.name, net.local_ts, net.remote_ts) == ("net", ("10.0.0.0/16",), ("10.1.0.0/16", "10.2.0.0/16"))
    assert (net.esp_proposals, net.rekey_time, net.life_time, net.rekey_bytes) == ("aes256gcm16-ecp384", 3600, 3960, 10**6)
    assert (host.local_ts, host.remote_ts) == (("192.0.2.1",), ("203.0.113.7",))  # local_ts dynamic: our address
    assert host.esp_proposals == "aes128gcm16"  # default
    assert (net.per_cpu_sas, host.per_cpu_sas) == (min(os.cpu_count() or 1, 16), 0)  # yes: one per CPU
    assert (hub.start_action, hub.remote_host, hub.remote_port) == ("start", "203.0.113.7", 500)

    # `road : connections.hub` inherits everything it does not say itself
    r = road.config
    assert (r.remote_addrs, r.local_auth, r.remote_auth, r.remote_id) == ((), "psk", "psk", None)
    assert r.ike_proposals == c.ike_proposals and road.start_action == "none" and road.remote_host is None
    assert r.psk == b"bob's secret"  # the secret naming our identity
    assert dict(r.peer_psks) == {"alice@example.org": b"secret", "bob@example.org": b"bob's secret"}


def test_psk_choice_follows_strongswan(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    conf = """connections { c { local_addrs = 192.0.2.1
        local { auth = psk
                id = me }
        remote { auth = psk
                 id = peer }
        children { x { local_ts = 10.0.0.0/8
                       remote_ts = 10.1.0.0/16 } } } }
    secrets {
        ike-any { secret = general }
        ike-mine { id = me
                   secret = mine }
        ike-both { id-1 = me
                   id-2 = peer
                   secret = both }
        ike-other { id = stranger
                    secret = other }
    }
    """
    (c,) = load_swanctl(_directory(tmp_path, pki, conf)).connections
    assert c.config.psk == b"both" and c.config.peer_psks == ()


@pytest.mark.parametrize(
    "conf, line, key, words",
    [
        ("connections { c { mobike_extra = yes } }", 1, "connections.c.mobike_extra", "not supported"),
        ("connections {\n c {\n  version = 1\n } }", 3, "connections.c.version", "'1' is not supported"),
        ("connections { c { local-2 { auth = psk } } }", 1, "connections.c.local-2", "one local and one remote"),
        ("connections { c { remote_addrs = vpn.example.org } }", 1, "connections.c.remote_addrs", "host names"),
        ("connections { c { local { auth = eap-mschapv2 } } }", 1, "connections.c.local.auth", "not supported"),
        ("connections { c { local { auth = pubkey } } }", 1, "connections.c.local.certs", "needs certs"),
        ("connections { c { local { auth = pubkey\n certs = missing.pem } } }", 2, "connections.c.local.certs",
         "does not exist"),
        ("connections { c { local { auth = psk\n id = me }\n remote { auth = psk } } }", 1, "connections.c",
         "no ike secret"),
        ("connections { c { local_addrs = 192.0.2.1\n local { auth = psk }\n remote { auth = psk } } }\n"
         "secrets { ike { secret = s } }", 1, "connections.c.children", "at least one child"),
        ("connections { c { children { x { updown = /bin/true } } } }", 1, "connections.c.children.x.updown",
         "not supported"),
        ("connections { c { children { x { start_action = trap } } } }", 1,
         "connections.c.children.x.start_action", "'trap' is not supported"),
        ("connections { c { children { x { per_cpu_sas = encap } } } }", 1,
         "connections.c.children.x.per_cpu_sas", "'encap' is not supported"),
        ("connections { c { local { auth = psk\n id = me } remote { auth = psk } children { x { local_ts = 10.0.0.0/8[tcp/80] } } } }"
         " secrets { ike { secret = s } }", 2,
         "connections.c.children.x.local_ts", "protocol/port"),
        ("connections { c { rekey_time = soon } }", 1, "connections.c.rekey_time", "not a duration"),
        ("pools { p { addrs = 10.9.0.0/24 } }", 1, "pools", "not supported"),
        ("secrets { eap-x { secret = s } }", 1, "secrets.eap-x", "only ike"),
        ("secrets { ike-x { id = a } }", 1, "secrets.ike-x", "no secret"),
        ("secrets { ike-x { secret = 0xZZ } }", 1, "secrets.ike-x.secret", "hex"),
    ],
)
def test_outside_the_subset_is_an_error_naming_file_line_and_key(
    tmp_path: Path, pki, conf: str, line: int, key: str, words: str  # type: ignore[no-untyped-def]
) -> None:
    root = _directory(tmp_path, pki, conf)
    with pytest.raises(ConfigError) as caught:
        load_swanctl(root)
    error = caught.value
    assert error.key == key and words in str(error), str(error)
    assert error.path == str(root / "swanctl.conf") and error.line == line, str(error)


def test_syntax_errors_and_missing_files(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="no swanctl.conf"):
        load_swanctl(tmp_path)
    root = _directory(tmp_path, pki, "connections { c {\n")
    with pytest.raises(Exception, match="swanctl.conf:1"):
        load_swanctl(root)
    root = _directory(tmp_path / "x", pki, SITE)
    (root / "private" / "gw.pem").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="gw.pem"):
        load_swanctl(root)


def test_includes_and_references_come_from_the_syntax_layer(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    root = _directory(tmp_path, pki, "connections {\n include conf.d/*.conf\n}\nsecrets { ike { secret = s } }\n")
    (root / "conf.d").mkdir()
    for i in range(3):
        (root / "conf.d" / f"{i}.conf").write_text(
            f"spoke{i} {{ local_addrs = 192.0.2.1\n remote_addrs = 198.51.100.{i + 1}\n"
            f" local {{ auth = psk\n id = hub }}\n remote {{ auth = psk\n id = spoke{i} }}\n"
            f" children {{ net {{ local_ts = 10.0.0.0/16\n remote_ts = 10.{i + 1}.0.0/16 }} }} }}\n")
    gateway = load_swanctl(root)
    assert [c.name for c in gateway.connections] == ["spoke0", "spoke1", "spoke2"]
    assert [c.remote_host for c in gateway.connections] == ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    assert all(c.config.psk == b"s" for c in gateway.connections)


def test_top_level_templates_referenced_by_connections(tmp_path: Path, pki) -> None:  # type: ignore[no-untyped-def]
    conf = """defaults {
        local_addrs = 192.0.2.1
        proposals = chacha20poly1305-prfsha256-x25519
        local { auth = psk
                id = hub }
        remote { auth = psk }
    }
    connections {
        a : defaults { remote { id = a@example.org }
            children { x { local_ts = 10.0.0.0/16
                           remote_ts = 10.1.0.0/16 } } }
        b : defaults { remote { id = b@example.org }
            proposals = aes128gcm16-prfsha256-x25519
            children { x { local_ts = 10.0.0.0/16
                           remote_ts = 10.2.0.0/16 } } }
    }
    secrets { ike { secret = s } }
    """
    a, b = load_swanctl(_directory(tmp_path, pki, conf)).connections
    assert (a.config.remote_id, a.config.ike_proposals) == ("a@example.org", "chacha20poly1305-prfsha256-x25519")
    assert (b.config.remote_id, b.config.ike_proposals) == ("b@example.org", "aes128gcm16-prfsha256-x25519")
    assert a.config.local_addrs == b.config.local_addrs == ("192.0.2.1",)
