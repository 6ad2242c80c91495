"""`ikev2lib run --swanctl DIR` against strongSwan: a swanctl directory that charon itself loads
drives the ikev2lib gateway (a separate process in the `left` namespace), with a certificate
connection it initiates (start_action = start) and a PSK connection charon initiates to it; then
the control commands (status, terminate, initiate, reload), SIGHUP and SIGTERM."""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from .fixtures import CharonFactory
from .gateway_process import RunningGateway, established
from .netns import NamespacePair
from .pki_files import build_pki, write_swanctl_credentials
from .strongswan import ChildConfig, ConnectionConfig, PskSecret, SwanctlConfig
from .traffic import udp_send

pytestmark = pytest.mark.interop

PSK = "gateway-run-psk-0123456789abcdef"
EXTRA_PSK = "extra-connection-psk-fedcba9876543210"
STOP_TIMEOUT = 15.0  # seconds for SIGTERM to delete the SAs and exit

LEFT_CONF = """\
# the ikev2lib side; charon loads this very directory too (test_swanctl_directory_loads_in_charon)
connections {{
    site {{
        version = 2
        local_addrs = {left}
        remote_addrs = {right}
        proposals = aes128gcm16-prfsha256-x25519
        rekey_time = 4h
        local {{
            auth = pubkey
            certs = own.pem
            id = left
        }}
        remote {{
            auth = pubkey
            id = right
        }}
        children {{
            net {{
                local_ts = 10.1.0.0/16
                remote_ts = 10.2.0.0/16
                esp_proposals = aes128gcm16
                start_action = start
            }}
        }}
    }}
    back {{
        local_addrs = {left}
        remote_addrs = {right}
        proposals = aes256gcm16-prfsha384-ecp384
        local {{
            auth = psk
            id = left-psk
        }}
        remote {{
            auth = psk
            id = right-psk
        }}
        children {{
            back-net {{
                local_ts = 10.11.0.0/16
                remote_ts = 10.12.0.0/16
                esp_proposals = aes256gcm16
            }}
        }}
    }}
    include conf.d/*.conf
}}
secrets {{
    ike-back {{
        id-1 = left-psk
        id-2 = right-psk
        secret = "{psk}"
    }}
    ike-extra {{
        id-1 = left-extra
        id-2 = right-extra
        secret = 0x{psk_hex}
    }}
}}
"""

EXTRA_CONF = """\
extra {{
    local_addrs = {left}
    remote_addrs = {right}
    local {{
        auth = psk
        id = left-extra
    }}
    remote {{
        auth = psk
        id = right-extra
    }}
    children {{
        extra-net {{
            local_ts = 10.21.0.0/16
            remote_ts = 10.22.0.0/16
            start_action = start
        }}
    }}
}}
"""


def _right_config(ns: NamespacePair) -> SwanctlConfig:
    def conn(name: str, child: str, lts: str, rts: str, auth: str, lid: str, rid: str, props: str,
             esp: str, start: str = "none") -> ConnectionConfig:
        extra = {"certs": "own.pem"} if auth == "pubkey" else {}
        return ConnectionConfig(name, [ns.right_addr], [ns.left_addr], lid, rid,
                                [ChildConfig(child, [lts], [rts], esp_proposals=[esp], start_action=start)],
                                proposals=[props], auth=auth, local_extra=extra)

    return SwanctlConfig(
        [conn("site", "net", "10.2.0.0/16", "10.1.0.0/16", "pubkey", "right", "left",
              "aes128gcm16-prfsha256-x25519", "aes128gcm16"),
         conn("back", "back-net", "10.12.0.0/16", "10.11.0.0/16", "psk", "right-psk", "left-psk",
              "aes256gcm16-prfsha384-ecp384", "aes256gcm16"),
         conn("extra", "extra-net", "10.22.0.0/16", "10.21.0.0/16", "psk", "right-extra", "left-extra",
              "aes128gcm16-prfsha256-x25519", "aes128gcm16")],
        [PskSecret(["left-psk", "right-psk"], PSK), PskSecret(["left-extra", "right-extra"], EXTRA_PSK)],
    )


def _left_directory(path: Path, ns: NamespacePair, pki: Any) -> Path:
    write_swanctl_credentials(path, pki.leaf("left"), [pki.root])
    (path / "conf.d").mkdir()
    (path / "swanctl.conf").write_text(LEFT_CONF.format(left=ns.left_addr, right=ns.right_addr, psk=PSK,
                                                                 psk_hex=EXTRA_PSK.encode().hex()))
    return path


@pytest.fixture
def gateway_setup(netns_pair: NamespacePair, charon_factory: CharonFactory, tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = build_pki("p256")
    left_dir = _left_directory(tmp_path / "left-swanctl", netns_pair, pki)
    for inner in ("10.12.0.1/32", "10.22.0.1/32"):  # kernel-libipsec routes need a local address in the selector
        netns_pair.right.add_inner_address(inner)
    charon = charon_factory(netns_pair.right, "right")
    write_swanctl_credentials(charon.swanctl_dir, pki.leaf("right"), [pki.root])
    charon.load(_right_config(netns_pair))
    gateway = RunningGateway(netns_pair.left, ["--swanctl", str(left_dir)], tmp_path)
    try:
        yield netns_pair, charon, gateway, left_dir
    finally:
        gateway.close()


def test_swanctl_directory_loads_in_charon(netns_pair: NamespacePair, charon_factory: CharonFactory,
                                           tmp_path: Path) -> None:
    """The directory the gateway runs is one strongSwan accepts as it is."""
    left_dir = _left_directory(tmp_path / "left-swanctl", netns_pair, build_pki("p256"))
    probe = charon_factory(netns_pair.left, "left-probe")
    shutil.copytree(left_dir, probe.swanctl_dir, dirs_exist_ok=True)
    out = probe.swanctl("--load-all", "--noprompt")
    assert "loaded connection 'site'" in out and "loaded connection 'back'" in out, out
    assert "loaded ike secret 'ike-back'" in out, out
    conns = probe.swanctl("--list-conns")
    # `back` has no version (any): charon lists IKEv1/2, or IKEv2 where it is built without IKEv1
    assert "site: IKEv2," in conns and re.search(r"back: IKEv(1/)?2,", conns), conns


def test_gateway_runs_a_swanctl_directory_against_charon(gateway_setup) -> None:  # type: ignore[no-untyped-def]
    ns, charon, gateway, left_dir = gateway_setup
    # start_action = start: the gateway initiates `site` (certificates) at once
    site = gateway.wait(established("site"), "site established")
    ike = charon.wait_for_ike("site")
    assert (ike.spi_i, ike.spi_r) == (site["spi_i"], site["spi_r"]) and site["initiator"]
    assert site["remote_certificate"] == "CN=right,O=ikev2lib tests"
    child = site["children"][0]
    ch = charon.wait_for_child("net")
    assert (ch.spi_in, ch.spi_out) == (child["spi_out"], child["spi_in"])
    assert child["local_ts"] == ["10.1.0.0/16"] and child["remote_ts"] == ["10.2.0.0/16"]

    # charon initiates `back` (PSK) to the gateway, which answers as a responder of two connections
    charon.initiate(child="back-net")
    back = gateway.wait(established("back"), "back established")
    assert not back["initiator"] and back["proposal"] == "aes256gcm16-prfsha384-ecp384"
    assert back["children"][0]["name"] == "back-net"

    # ESP from charon reaches the gateway's data plane and is counted there
    ns.right.call(udp_send, "10.2.0.1", "10.1.0.1", 5001, [b"through the tunnel"] * 3, 0.02)
    gateway.wait(lambda s: established("site")(s)["children"][0]["packets_in"] >= 3, "ESP counted")
    text = gateway.command("status")
    assert "site: #" in text and "ESTABLISHED" in text and "net: #" in text, text

    # terminate and initiate by name
    assert gateway.command("terminate", "site")["terminated"] == 1
    charon.wait_for_ike_gone(site["spi_i"])
    gateway.command("initiate", "site")
    again = gateway.wait(established("site"), "site again")
    assert again["spi_i"] != site["spi_i"]

    # SIGHUP reload: a connection added through the include starts; the other SAs stay as they were
    (left_dir / "conf.d" / "extra.conf").write_text(EXTRA_CONF.format(left=ns.left_addr, right=ns.right_addr))
    gateway.proc.send_signal(signal.SIGHUP)
    extra = gateway.wait(established("extra"), "extra established after reload")
    assert extra["children"][0]["name"] == "extra-net"
    status = gateway.status()
    assert {s["spi_i"] for s in status["ike_sas"]} >= {again["spi_i"], back["spi_i"], extra["spi_i"]}
    assert "extra" in status["connections"]

    # a reload through the control socket with a broken file changes nothing
    (left_dir / "conf.d" / "broken.conf").write_text("broken { mystery_key = 1 }\n")
    done = gateway.run("reload")
    assert done.returncode == 1 and "mystery_key" in done.stderr, done
    assert len(gateway.status()["ike_sas"]) == 3

    # SIGTERM: every IKE SA is deleted (charon hears it) and the process exits 0
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(timeout=STOP_TIMEOUT) == 0, gateway.text()
    charon.wait_for_no_sas(timeout=STOP_TIMEOUT)
    assert not gateway.control.exists()
