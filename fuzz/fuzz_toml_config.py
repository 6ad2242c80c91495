"""libFuzzer harness (atheris) for the native TOML configuration (ikev2lib.gateway.toml_config): any
bytes, read as a configuration file in a directory holding a gateway's usual files (CA, CRL, a
certificate and its key, a PKCS#12 bundle), must give a GatewayConfig or a ConfigError.

Invariant: only ConfigError escapes; anything else is a bug.
Run bounded, e.g.:  .venv/bin/python fuzz/fuzz_toml_config.py -max_total_time=30 -rss_limit_mb=1024

A byte of each input picks a shape: as-is, or appended to a valid hub configuration (templates and
connections using all of those files), so that mutations reach merging and conversion, not only the
TOML parser.
"""

from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from ikev2lib.gateway.model import ConfigError
    from ikev2lib.gateway.toml_config import load_toml_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.serialization import pkcs12  # noqa: E402

from tests.pki.certs import KeyPool, build_pki, make_crl  # noqa: E402

PEM = serialization.Encoding.PEM
SEED = b"""
listen = ["192.0.2.1"]
[templates.base]
rekey_time = "4h"
dpd_delay = "30s"
retransmit = { timeout = "2s", tries = 3 }
[templates.site]
template = "base"
ike_proposals = ["aes256gcm16-prfsha384-ecp384"]
local_auth = "pubkey"
remote_auth = "pubkey"
local_id = "vpn.example.org"
cert = "x509/hub.pem"
key = "private/hub.pem"
cacerts = ["x509ca"]
crls = ["x509crl/inter.crl"]
[templates.site.child]
esp_proposals = ["aes256gcm16"]
rekey_time = "1h"
[connections.spoke1]
template = "site"
local_addrs = ["192.0.2.1"]
remote_addrs = ["198.51.100.7"]
start_action = "start"
[connections.spoke1.children.net]
local_ts = ["10.0.0.0/16"]
remote_ts = ["10.1.0.0/16"]
[connections.spoke2]
template = ["base"]
local_id = "vpn.example.org"
psk = "0x00ff"
credentials = [{ pkcs12 = "hub.p12", passphrase = "p12" }]
[connections.spoke2.peer_psks]
"@spoke2" = "0sAP8="
[connections.spoke2.children.lan]
start_action = "none"
"""


def _gateway_dir() -> Path:
    pki = build_pki(KeyPool(rsa_count=0), "p256")
    root = Path(tempfile.mkdtemp(prefix="fuzz-toml-"))
    atexit.register(shutil.rmtree, root, True)
    for sub in ("x509ca", "x509crl", "x509", "private"):
        (root / sub).mkdir()
    key = pki.ee_key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (root / "x509ca" / "root.pem").write_bytes(pki.root.public_bytes(PEM))
    (root / "x509crl" / "inter.crl").write_bytes(make_crl(pki.inter, pki.inter_key).public_bytes(PEM))
    (root / "x509" / "hub.pem").write_bytes(pki.ee.public_bytes(PEM) + pki.inter.public_bytes(PEM))
    (root / "private" / "hub.pem").write_bytes(key)
    bundle = pkcs12.serialize_key_and_certificates(
        b"hub", pki.ee_key, pki.ee, [pki.inter], serialization.BestAvailableEncryption(b"p12")
    )
    (root / "hub.p12").write_bytes(bundle)
    return root


BASE_DIR = _gateway_dir()
load_toml_text(SEED, path="seed.toml", base_dir=BASE_DIR)  # the seed itself must load


def test_one_input(data: bytes) -> None:
    if not data:
        return
    document = data[1:] if data[0] & 1 else SEED + data[1:]
    try:
        load_toml_text(document, path="fuzz.toml", base_dir=BASE_DIR)
    except ConfigError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
