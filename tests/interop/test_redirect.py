"""RFC 5685 redirect with strongSwan as the client: one `ikev2lib run` gateway sends it to another.

Three namespaces in a row (`NatTopology(masquerade=False)`): strongSwan (libipsec) as the client at
10.99.0.2; gateway 1 at 10.99.0.1, which is also the router; gateway 2 at 198.51.100.2 behind it.
Both gateways have the same identity and inner network, as two instances of one service would.

- IKE_SA_INIT: gateway 1's [redirect] policy sends every new client to gateway 2 (statelessly, with
  the client's nonce); charon ends with its tunnel at gateway 2, and ping crosses it.
- established: the client's tunnel runs through gateway 1; `ikev2lib redirect --to` sends it to
  gateway 2 (an INFORMATIONAL REDIRECT); charon deletes the old IKE SA and sets up a new one there.
- a loop: each gateway redirects to the other; charon stops after its limit of redirects.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fixtures import CharonFactory
from .gateway_process import RunningGateway, established
from .nat import NatTopology
from .netns import Namespace
from .strongswan import Charon, CharonError, psk_connection_pair
from .test_gateway_datapath import PSK, gateway_toml, start_gateway, wait_for_ping

pytestmark = pytest.mark.interop

GW_NET, PEER_NET = "10.1.0.0/24", "10.2.0.0/24"
GW_INNER, PEER_INNER = "10.1.0.1", "10.2.0.1"
STRONGSWAN_MAX_REDIRECTS = 5  # charon.max_redirects, strongSwan's default


@pytest.fixture
def line() -> Iterator[NatTopology]:
    with NatTopology(masquerade=False) as topology:
        yield topology


def _gateway(stack: contextlib.ExitStack, ns: Namespace, work: Path, me: str, peer: str,
             redirect_to: str | None = None) -> RunningGateway:
    toml = gateway_toml(me=me, peer=peer, inner=GW_INNER, local_net=GW_NET, remote_net=PEER_NET, local_id="gw",
                        remote_id="peer", initiate=False)
    if redirect_to is not None:
        toml += f'[redirect]\nto = "{redirect_to}"\nabove = 0\n'
    gateway = start_gateway(stack, ns, work, toml)
    gateway.wait(lambda s: s["listen"], f"gateway at {me} listening")
    return gateway


def _client(line: NatTopology, charon_factory: CharonFactory) -> Charon:
    line.inside.add_inner_address(f"{PEER_INNER}/32")  # charon needs an address inside its local TS
    config, _ = psk_connection_pair(line.inside_addr, line.addresses.router_inside, conn="site", child="net",
                                    esp_proposals=["aes128gcm16"], left_ts=[PEER_NET], right_ts=[GW_NET], psk=PSK,
                                    left_id="peer", right_id="gw")
    charon = charon_factory(line.inside, "client")
    charon.load(config)
    return charon


def test_strongswan_redirected_in_ike_sa_init_gets_its_tunnel_at_the_second_gateway(
        line: NatTopology, tmp_path: Path, charon_factory: CharonFactory) -> None:
    charon = _client(line, charon_factory)
    gw1_addr, gw2_addr = line.addresses.router_inside, line.outside_addr
    with contextlib.ExitStack() as stack:
        gw1 = _gateway(stack, line.router, tmp_path / "gw1", gw1_addr, line.inside_addr, redirect_to=gw2_addr)
        gw2 = _gateway(stack, line.outside, tmp_path / "gw2", gw2_addr, line.inside_addr)
        charon.initiate(child="net", timeout=20)
        sa = gw2.wait(established("site"), "tunnel up at gateway 2")
        sas = charon.list_sas()
        assert len(sas) == 1 and sas[0].remote_host == gw2_addr and sas[0].state == "ESTABLISHED"
        assert (sas[0].spi_i, sas[0].spi_r) == (sa["spi_i"], sa["spi_r"])
        assert gw1.status()["ike_sas"] == []  # gateway 1 answered statelessly and kept nothing
        wait_for_ping(line.inside, PEER_INNER, GW_INNER)
        log = charon.log_text()
        assert f"redirected to {gw2_addr}" in log and "N(REDIR_SUP)" in log, log[-3000:]


def test_an_established_strongswan_client_moves_when_the_gateway_redirects_it(
        line: NatTopology, tmp_path: Path, charon_factory: CharonFactory) -> None:
    charon = _client(line, charon_factory)
    gw1_addr, gw2_addr = line.addresses.router_inside, line.outside_addr
    with contextlib.ExitStack() as stack:
        gw1 = _gateway(stack, line.router, tmp_path / "gw1", gw1_addr, line.inside_addr)
        gw2 = _gateway(stack, line.outside, tmp_path / "gw2", gw2_addr, line.inside_addr)
        charon.initiate(child="net", timeout=20)
        old = gw1.wait(established("site"), "tunnel up at gateway 1")
        wait_for_ping(line.inside, PEER_INNER, GW_INNER)
        answer = gw1.command("redirect", "--to", gw2_addr)
        assert answer == {"ok": True, "redirected": 1, "unable": 0}
        new = gw2.wait(established("site"), "tunnel up at gateway 2")
        gw1.wait(lambda s: s["ike_sas"] == [], "the client deleted its IKE SA at gateway 1")
        sas = charon.wait_until(lambda: [s for s in charon.list_sas() if s.state == "ESTABLISHED"
                                         and s.remote_host == gw2_addr and s.children], 20, "charon at gateway 2")
        assert len(charon.list_sas()) == 1 and sas[0].spi_i == new["spi_i"] != old["spi_i"]
        wait_for_ping(line.inside, PEER_INNER, GW_INNER)
        assert f"redirected by {gw1_addr} to {gw2_addr}" not in gw1.log.read_text()  # we are the gateway here
        assert "redirecting 1 IKE SAs to" in gw1.log.read_text()


def test_a_redirect_loop_between_two_gateways_stops_at_strongswans_limit(
        line: NatTopology, tmp_path: Path, charon_factory: CharonFactory) -> None:
    charon = _client(line, charon_factory)
    gw1_addr, gw2_addr = line.addresses.router_inside, line.outside_addr
    with contextlib.ExitStack() as stack:
        gw1 = _gateway(stack, line.router, tmp_path / "gw1", gw1_addr, line.inside_addr, redirect_to=gw2_addr)
        gw2 = _gateway(stack, line.outside, tmp_path / "gw2", gw2_addr, line.inside_addr, redirect_to=gw1_addr)
        with pytest.raises(CharonError):
            charon.initiate(child="net", timeout=20)
        log = charon.log_text()
        # charon follows five redirects, refuses the sixth ("only 5 redirects are allowed within 300 seconds")
        assert len(re.findall(r"redirected to ", log)) == STRONGSWAN_MAX_REDIRECTS + 1, log[-4000:]
        assert f"only {STRONGSWAN_MAX_REDIRECTS} redirects are allowed" in log, log[-4000:]
        assert charon.list_sas() == []
        assert gw1.status()["ike_sas"] == [] and gw2.status()["ike_sas"] == []
