"""A hub: one `ikev2lib run` gateway with 50 connections (every other one PSK, the rest certificates;
distinct identities, addresses and subnets; the shared policy written once: a referenced section of
swanctl.conf, or templates of the TOML format) and 50 initiators, each on its own address, each
landing on its own connection."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.drivers.asyncio_udp import AsyncioIkeDriver
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import ChildSaCreated, ProtocolErrorEvent

from .gateway_process import RunningGateway
from .netns import NamespacePair
from .pki_files import InteropPki, build_pki, write_swanctl_credentials

pytestmark = pytest.mark.interop

SPOKES = 50
HUB_ID = "hub.example.org"
SPOKE_WAIT = 60.0  # seconds for all spokes to establish (50 handshakes, half with certificates)
STOP_TIMEOUT = 20.0


def spoke_addr(i: int) -> str:
    return f"192.0.2.{100 + i}"


def spoke_net(i: int) -> str:
    return f"10.{100 + i}.0.0/16"


def psk(i: int) -> str:
    return f"secret of spoke {i} 0123456789"


def _hub_directory(root: Path, ns: NamespacePair, pki: InteropPki) -> Path:
    write_swanctl_credentials(root, pki.leaf(HUB_ID), [pki.root], stem="hub")  # x509/hub.pem, private/hub.pem
    # the policy every spoke shares, referenced by each (strongSwan's `conn : template`)
    lines = [f"policy {{ local_addrs = {ns.right_addr}\n"
             "    proposals = aes128gcm16-prfsha256-x25519\n    rekey_time = 4h\n    dpd_delay = 30s }",
             "connections {"]
    secrets = ["secrets {"]
    for i in range(SPOKES):
        if i % 2:
            auth = ("        local { auth = pubkey\n            certs = hub.pem\n"
                    f"            id = {HUB_ID} }}\n        remote {{ auth = pubkey\n            id = spoke{i}.example.org }}")
        else:
            auth = (f"        local {{ auth = psk\n            id = {HUB_ID} }}\n"
                    f"        remote {{ auth = psk\n            id = spoke{i}.example.org }}")
            secrets.append(f"    ike-{i} {{ id-1 = {HUB_ID}\n        id-2 = spoke{i}.example.org\n"
                           f"        secret = \"{psk(i)}\" }}")
        lines.append(f"    spoke{i} : policy {{\n        remote_addrs = {spoke_addr(i)}\n{auth}\n"
                     f"        children {{ net{i} {{ local_ts = 10.0.0.0/16\n            remote_ts = {spoke_net(i)}\n"
                     "            esp_proposals = aes128gcm16 } }\n    }")
    (root / "swanctl.conf").write_text("\n".join(lines + ["}"] + secrets + ["}"]) + "\n")
    return root


def _hub_toml(root: Path, ns: NamespacePair, pki: InteropPki) -> Path:
    """The same hub in the native format: the shared policy and the certificate setup as templates."""
    write_swanctl_credentials(root, pki.leaf(HUB_ID), [pki.root], stem="hub")  # x509/hub.pem, private/hub.pem
    lines = [
        "[templates.policy]",
        f'local_addrs = ["{ns.right_addr}"]',
        f'local_id = "{HUB_ID}"',
        'ike_proposals = "aes128gcm16-prfsha256-x25519"',
        'rekey_time = "4h"',
        'dpd_delay = "30s"',
        "[templates.policy.child]",
        'local_ts = ["10.0.0.0/16"]',
        'esp_proposals = "aes128gcm16"',
        "[templates.certificates]",
        'template = "policy"',
        'local_auth = "pubkey"',
        'remote_auth = "pubkey"',
        'cert = "x509/hub.pem"',
        'key = "private/hub.pem"',
        'chain = ["x509/hub-chain-0.pem"]',
        'cacerts = ["x509ca"]',
    ]
    for i in range(SPOKES):
        lines += [f"[connections.spoke{i}]", f'template = "{"certificates" if i % 2 else "policy"}"',
                  f'remote_addrs = ["{spoke_addr(i)}"]', f'remote_id = "spoke{i}.example.org"']
        if not i % 2:
            lines.append(f'psk = "{psk(i)}"')
        lines += [f"[connections.spoke{i}.children.net{i}]", f'remote_ts = ["{spoke_net(i)}"]']
    path = root / "hub.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _spoke_config(i: int, pki: InteropPki) -> IkeConfig:
    child = ChildConfig(name=f"net{i}", local_ts=(spoke_net(i),), remote_ts=("10.0.0.0/16",))
    if i % 2:
        auth: dict[str, Any] = {"local_auth": "pubkey", "remote_auth": "pubkey",
                                "credentials": (pki.leaf(f"spoke{i}.example.org"),), "trust": pki.trust()}
    else:
        auth = {"psk": psk(i).encode()}
    return IkeConfig(name="hub", local_id=f"spoke{i}.example.org", remote_id=HUB_ID, children=(child,), **auth)


def run_spokes(configs: list[IkeConfig], hub: str, timeout: float) -> dict[int, Any]:
    """Runs in the spokes' namespace: one driver per spoke address, all initiating at once; returns
    per spoke its Child SA (SPIs, selectors) or the errors it saw."""

    async def main() -> dict[int, Any]:
        drivers = [await AsyncioIkeDriver.create(lambda addr: IkeEndpoint(local_addr=addr), host=spoke_addr(i))
                   for i in range(len(configs))]
        for driver, config in zip(drivers, configs):
            driver.initiate(config, (hub, 500))

        async def outcome(i: int, driver: AsyncioIkeDriver) -> Any:
            errors = []
            while True:
                event = await driver.next_event()
                if isinstance(event, ChildSaCreated):
                    return {"spi_in": event.spi_in.hex(), "local_ts": list(event.local_ts), "name": event.name}
                if isinstance(event, ProtocolErrorEvent):
                    errors.append(event.description)
                    return {"errors": errors}

        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(outcome(i, d) for i, d in enumerate(drivers))), timeout)
        finally:
            for driver in drivers:
                driver.close()
        return dict(enumerate(results))

    return asyncio.run(main())


@pytest.mark.parametrize("source", ["swanctl", "toml"])
def test_hub_of_fifty_connections(netns_pair: NamespacePair, tmp_path: Path, source: str) -> None:
    pki = build_pki("p256")
    ifname = netns_pair.left_if
    for i in range(SPOKES):
        netns_pair.left.ip("addr", "add", f"{spoke_addr(i)}/24", "dev", ifname)
    if source == "swanctl":
        args = ["--swanctl", str(_hub_directory(tmp_path / "hub-swanctl", netns_pair, pki))]
    else:
        args = ["--config", str(_hub_toml(tmp_path / "hub-toml", netns_pair, pki))]
    gateway = RunningGateway(netns_pair.right, args, tmp_path)
    try:
        gateway.wait(lambda s: len(s["connections"]) == SPOKES, "the hub to start")
        configs = [_spoke_config(i, pki) for i in range(SPOKES)]
        started = time.monotonic()
        results = netns_pair.left.call(run_spokes, configs, netns_pair.right_addr, SPOKE_WAIT,
                                       timeout=SPOKE_WAIT + 15)
        elapsed = time.monotonic() - started
        failed = {i: r for i, r in results.items() if "errors" in r}
        assert failed == {}, (failed, gateway.text())
        status = gateway.status()
        by_name = {s["name"]: s for s in status["ike_sas"]}
        assert set(by_name) == {f"spoke{i}" for i in range(SPOKES)}, (sorted(by_name), elapsed)
        for i in range(SPOKES):
            sa = by_name[f"spoke{i}"]
            # both sides do MOBIKE (the default): IKE left 500 for 4500 at IKE_AUTH (RFC 4555 3.3)
            assert sa["remote"] == f"{spoke_addr(i)}[4500]" and sa["remote_id"] == f"spoke{i}.example.org"
            assert (sa["remote_certificate"] is not None) == bool(i % 2)
            (child,) = sa["children"]
            assert child["name"] == f"net{i}" and child["remote_ts"] == [spoke_net(i)]
            assert child["spi_out"] == results[i]["spi_in"] and results[i]["local_ts"] == [spoke_net(i)]
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=STOP_TIMEOUT) == 0, gateway.text()
    finally:
        gateway.close()
