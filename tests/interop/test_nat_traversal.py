"""NAT traversal through a real NAT (nftables masquerade with conntrack, `nat.NatTopology`).

The peer behind the NAT (inside) initiates to an `ikev2lib run` gateway on the outside, which sees
it only at the NAT's public address and a random port. Both sides detect the NAT, IKE floats to
4500 and ESP is UDP-encapsulated. Then the NAT's conntrack is flushed: the next packet from inside
gets a new public port (`random_ports`), and the gateway, not behind a NAT, must follow it (RFC 7296
2.23): on authentic ESP from the new port (reported by its C workers) or the next authenticated IKE
message. The same IKE and Child SAs carry on; nothing is renegotiated.

- strongSwan (libipsec) behind the NAT: its ESP from the new mapping moves the gateway.
- two ikev2lib gateways: the inside one sends NAT keepalives (RFC 3948 2.3) that hold the mapping,
  counted as they reach the outside namespace; after a flush its ESP moves the outside one.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fixtures import CharonFactory
from .gateway_process import RunningGateway, established
from .nat import NatTopology
from .netns import Namespace
from .strongswan import CharonSettings, psk_connection_pair
from .test_gateway_datapath import PSK, gateway_toml, start_gateway, wait_for_ping

pytestmark = pytest.mark.interop

GW_NET, PEER_NET = "10.1.0.0/24", "10.2.0.0/24"
GW_INNER, PEER_INNER = "10.1.0.1", "10.2.0.1"
RESUME_BOUND = 5.0  # seconds after the flush within which pings must come back (measured: well under 1 s)
PING_INTERVAL = 0.05
PING_COUNT = 100  # 5 s of pings at PING_INTERVAL
KEEPALIVE = 1  # seconds between the inside gateway's keepalives in the keepalive test
KEEPALIVE_WATCH = 3.5  # seconds the outside namespace counts them


@pytest.fixture
def nat() -> Iterator[NatTopology]:
    with NatTopology(random_ports=True) as topology:
        yield topology


def _public_port(nat: NatTopology, port: int) -> int:
    found = [m.public_port for m in nat.mappings() if m.sport == port and m.src == nat.inside_addr]
    assert len(found) == 1, nat.mappings()
    return found[0]


def _resume_after_flush(nat: NatTopology, ns: Namespace, src: str, dst: str) -> float:
    """Flush the NAT's mappings, ping from inside at once; seconds until the first reply."""
    nat.flush_conntrack()
    flushed = time.time()
    done = ns.run(["ping", "-D", "-n", "-c", str(PING_COUNT), "-i", str(PING_INTERVAL), "-W", "1", "-I", src, dst],
                  timeout=PING_COUNT * PING_INTERVAL + 10, check=False)
    replies = [float(m.group(1)) for m in re.finditer(r"^\[(\d+\.\d+)\] \d+ bytes from", done.stdout, re.M)]
    assert replies, done.stdout[-2000:]
    resume = replies[0] - flushed
    assert resume < RESUME_BOUND and len(replies) >= PING_COUNT - RESUME_BOUND / PING_INTERVAL, done.stdout[-2000:]
    return resume


def _gateway(stack: contextlib.ExitStack, ns: Namespace, work: Path, *, me: str, peer: str, inner: str,
             local_net: str, remote_net: str, local_id: str, remote_id: str, initiate: bool,
             keepalive: int | None = None) -> RunningGateway:
    toml = gateway_toml(me=me, peer=peer, inner=inner, local_net=local_net, remote_net=remote_net,
                        local_id=local_id, remote_id=remote_id, initiate=initiate)
    if keepalive is not None:  # a connection key: after the [connections.site] table's other keys
        toml = toml.replace("[connections.site.children.net]", f'natt_keepalive = "{keepalive}s"\n'
                            "[connections.site.children.net]")
    return start_gateway(stack, ns, work, toml)


def test_strongswan_behind_a_nat_keeps_its_sas_when_the_mapping_changes(nat: NatTopology, tmp_path: Path,
                                                                        charon_factory: CharonFactory) -> None:
    nat.inside.add_inner_address(f"{PEER_INNER}/32")  # charon needs an address inside its local TS
    charon_cfg, _ = psk_connection_pair(nat.inside_addr, nat.outside_addr, conn="site", child="net",
                                        esp_proposals=["aes128gcm16"], left_ts=[PEER_NET], right_ts=[GW_NET],
                                        psk=PSK, left_id="peer", right_id="gw")
    charon = charon_factory(nat.inside, "inside", CharonSettings(extra="    keep_alive = 2s"))
    charon.load(charon_cfg)
    with contextlib.ExitStack() as stack:
        gw = _gateway(stack, nat.outside, tmp_path / "gw", me=nat.outside_addr, peer=nat.public_addr,
                      inner=GW_INNER, local_net=GW_NET, remote_net=PEER_NET, local_id="gw", remote_id="peer",
                      initiate=False)
        gw.wait(lambda s: s["listen"], "gateway listening")
        charon.initiate(child="net", timeout=20)
        gw.wait(established("site"), "tunnel up")
        wait_for_ping(nat.inside, PEER_INNER, GW_INNER)
        before = gw.status()["ike_sas"][0]
        child_before = before["children"][0]
        assert child_before["udp_encap"] is True
        port_before = _public_port(nat, 4500)
        resume = _resume_after_flush(nat, nat.inside, PEER_INNER, GW_INNER)
        port_after = _public_port(nat, 4500)
        assert port_after != port_before  # the NAT did make a new mapping
        after = gw.status()["ike_sas"][0]
        assert (after["spi_i"], after["spi_r"]) == (before["spi_i"], before["spi_r"])  # the same IKE SA
        assert after["children"][0]["child_id"] == child_before["child_id"]  # and Child SA
        log = gw.log.read_text(errors="replace")
        assert f"peer moved from {nat.public_addr}:{port_before} to {nat.public_addr}:{port_after}" in log, log[-3000:]
        assert gw.status()["datapath"]["drops"] == {}
        sas = charon.list_sas()
        assert len(sas) == 1 and sas[0].spi_i == after["spi_i"]  # charon kept it too: no new IKE_SA_INIT
        print(f"strongSwan behind the NAT: ping resumed {resume * 1000:.0f} ms after the flush, "
              f"port {port_before} -> {port_after}")


def _count_keepalives(port: int, seconds: float) -> int:
    """In the outside namespace: UDP datagrams to `port` whose payload is the single octet 0xFF."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    sock.settimeout(0.2)
    found, deadline = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                packet = sock.recv(2048)
            except socket.timeout:
                continue
            ihl = (packet[0] & 0x0F) * 4
            if packet[9] == 17 and int.from_bytes(packet[ihl + 2:ihl + 4], "big") == port and packet[ihl + 8:] == b"\xff":
                found += 1
    finally:
        sock.close()
    return found


def test_an_ikev2lib_gateway_behind_a_nat_sends_keepalives_and_survives_a_new_mapping(nat: NatTopology,
                                                                                      tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        outside = _gateway(stack, nat.outside, tmp_path / "outside", me=nat.outside_addr, peer=nat.public_addr,
                           inner=GW_INNER, local_net=GW_NET, remote_net=PEER_NET, local_id="gw",
                           remote_id="peer", initiate=False)
        outside.wait(lambda s: s["listen"], "outside gateway listening")
        inside = _gateway(stack, nat.inside, tmp_path / "inside", me=nat.inside_addr, peer=nat.outside_addr,
                          inner=PEER_INNER, local_net=PEER_NET, remote_net=GW_NET, local_id="peer",
                          remote_id="gw", initiate=True, keepalive=KEEPALIVE)
        inside.wait(established("site"), "tunnel up")
        outside.wait(established("site"), "tunnel up (outside)")
        wait_for_ping(nat.inside, PEER_INNER, GW_INNER)
        seen = nat.outside.call(_count_keepalives, 4500, KEEPALIVE_WATCH)
        assert seen >= int(KEEPALIVE_WATCH / KEEPALIVE) - 1, seen  # only the side behind the NAT sends them
        before = outside.status()["ike_sas"][0]
        port_before = _public_port(nat, 4500)
        resume = _resume_after_flush(nat, nat.inside, PEER_INNER, GW_INNER)
        port_after = _public_port(nat, 4500)
        assert port_after != port_before
        after = outside.status()["ike_sas"][0]
        assert (after["spi_i"], after["spi_r"]) == (before["spi_i"], before["spi_r"])
        assert f"to {nat.public_addr}:{port_after}" in outside.log.read_text(errors="replace")
        assert "peer moved" not in inside.log.read_text(errors="replace")  # behind the NAT: never follows
        # and the outside gateway's own traffic reaches the inside again through the new mapping
        wait_for_ping(nat.outside, GW_INNER, PEER_INNER)
        print(f"ikev2lib behind the NAT: ping resumed {resume * 1000:.0f} ms after the flush")
