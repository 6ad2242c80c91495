"""One `ikev2lib run` hub holding SPOKES site-to-site tunnels with its data path, from a spoke gateway
process in another namespace that initiates them all (one IKE SA and one Child SA per spoke, each with
its own /32 behind it): every tunnel comes up, traffic crosses a sample of them in both directions
while the hub holds them all, and `ikev2lib status` keeps answering."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from .gateway_process import RunningGateway
from .netns import NamespacePair, PairAddresses
from .test_gateway_datapath import ping, start_gateway

pytestmark = pytest.mark.interop

SPOKES = int(__import__("os").environ.get("SPOKES", "2000"))
HUB_NET = "10.1.0.0/24"
HUB_INNER = "10.1.0.1"
SPOKE_RANGE = "10.200.0.0/16"  # spoke i owns 10.200.<i // 250>.<i % 250 + 1>
PSK = "scale-test-psk-0123456789abcdef"
ESTABLISH_TIMEOUT = 240.0  # seconds for every tunnel to come up (a few per millisecond, plus routes)
STATUS_POLL = 2.0  # seconds between status calls while the tunnels come up
SAMPLE = (0, 1, SPOKES // 3, SPOKES // 2, SPOKES - 1)  # spokes whose tunnels carry pings


def spoke_address(i: int) -> str:
    return f"10.200.{i // 250}.{i % 250 + 1}"


def hub_toml(me: str, peer: str) -> str:
    lines = [f'listen = ["{me}"]', f"max_sas_per_peer = {SPOKES}", "[datapath]", 'tun = "hub0"', "workers = 2", f'addresses = ["{HUB_INNER}/24"]',
             "[templates.spoke]", f'local_addrs = ["{me}"]', f'remote_addrs = ["{peer}"]', 'local_id = "hub"',
             f'psk = "{PSK}"', 'ike_proposals = "aes128gcm16-prfsha256-x25519"',
             "[templates.spoke.child]", f'local_ts = ["{HUB_NET}"]', 'esp_proposals = "aes128gcm16"']
    for i in range(SPOKES):
        lines += [f"[connections.spoke{i}]", 'template = "spoke"', f'remote_id = "spoke{i}"',
                  f"[connections.spoke{i}.children.net]", f'remote_ts = ["{spoke_address(i)}/32"]']
    return "\n".join(lines) + "\n"


def spokes_toml(me: str, peer: str) -> str:
    lines = [f'listen = ["{me}"]', "[datapath]", 'tun = "spk0"', "workers = 1", 'addresses = ["10.200.0.1/16"]',
             "[templates.hub]", f'local_addrs = ["{me}"]', f'remote_addrs = ["{peer}"]', 'remote_id = "hub"',
             f'psk = "{PSK}"', 'ike_proposals = "aes128gcm16-prfsha256-x25519"', 'start_action = "start"',
             "[templates.hub.child]", f'remote_ts = ["{HUB_NET}"]', 'esp_proposals = "aes128gcm16"']
    for i in range(SPOKES):
        lines += [f"[connections.spoke{i}]", 'template = "hub"', f'local_id = "spoke{i}"',
                  f"[connections.spoke{i}.children.net]", f'local_ts = ["{spoke_address(i)}/32"]']
    return "\n".join(lines) + "\n"


def _established(status: dict[str, object]) -> int:
    return sum(1 for s in status["ike_sas"] if s["state"] == "established" and s["children"])  # type: ignore[index,union-attr]


def test_a_hub_holds_two_thousand_tunnels_and_keeps_forwarding(tmp_path: Path) -> None:
    with NamespacePair(PairAddresses(left_inner=(), right_inner=())) as pair, contextlib.ExitStack() as stack:
        for side in (pair.left, pair.right):
            side.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
        # the spoke namespace answers for every spoke address (AnyIP), as the sites' networks would
        pair.right.ip("route", "add", "local", SPOKE_RANGE, "dev", "lo")
        hub = start_gateway(stack, pair.left, tmp_path / "hub", hub_toml(pair.left_addr, pair.right_addr))
        hub.wait(lambda s: s["listen"], "hub listening")
        spokes = start_gateway(stack, pair.right, tmp_path / "spokes", spokes_toml(pair.right_addr, pair.left_addr))
        started = time.monotonic()
        while _established(hub.status()) < SPOKES:  # polled slowly: a status of every SA is not free
            assert time.monotonic() - started < ESTABLISH_TIMEOUT, hub.text()
            time.sleep(STATUS_POLL)
        took = time.monotonic() - started
        status = hub.status()
        assert status["datapath"]["tunnels"] == SPOKES
        assert len(pair.left.ip("route", "show", "dev", "hub0").splitlines()) == SPOKES + 1  # + the TUN's own net
        for i in SAMPLE:
            ping(pair.left, HUB_INNER, spoke_address(i), count=3)
            ping(pair.right, spoke_address(i), HUB_INNER, count=3)
        asked = time.monotonic()
        status = hub.status()  # every SA described, counters of every tunnel read
        answered = time.monotonic() - asked
        traffic = status["datapath"]["traffic"]
        assert all(traffic[f"spoke{i}"]["packets_in"] >= 6 and traffic[f"spoke{i}"]["packets_out"] >= 6 for i in SAMPLE)
        assert status["datapath"]["drops"] == {}
        print(f"{SPOKES} tunnels up in {took:.1f} s; status with all of them answered in {answered:.2f} s")
        del spokes
