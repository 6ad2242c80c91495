"""Two in-process `Gateway`s on loopback UDP (127.0.0.1 initiates `site`, 127.0.0.2 answers as
`hub`), for the metrics tests. ESP is forced into UDP (`encap`), so no raw socket and no root."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.gateway.model import Connection, GatewayConfig
from ikev2lib.gateway.run import Gateway

INITIATOR_ADDR = "127.0.0.1"
RESPONDER_ADDR = "127.0.0.2"
PSK = b"metrics-test-psk-0123456789abcdef"
SETTLE_TIMEOUT = 5.0  # seconds for a loopback handshake (milliseconds normally)
POLL = 0.02
SHUTDOWN_WAIT = 1.0


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class Pair:
    initiator: Gateway
    responder: Gateway

    async def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = SETTLE_TIMEOUT) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            await asyncio.sleep(POLL)


def established(gateway: Gateway, children: int = 1) -> bool:
    status = gateway.status()
    return any(ike["state"] == "established" and len(ike["children"]) >= children for ike in status["ike_sas"])


@asynccontextmanager
async def gateway_pair(*, initiator_child: ChildConfig | None = None, ike_rekey_time: float | None = None,
                       responder_esp: str = "aes128gcm16") -> AsyncIterator[Pair]:
    """Start both gateways (the initiator's `site` has start_action = start); shut both down after."""
    ports = {host: (free_udp_port(host), free_udp_port(host)) for host in (INITIATOR_ADDR, RESPONDER_ADDR)}
    child = initiator_child or ChildConfig(name="net", local_ts=("10.1.0.0/16",), remote_ts=("10.2.0.0/16",))
    site = IkeConfig(
        name="site", local_id="site.example", remote_id="hub.example", psk=PSK, local_addrs=(INITIATOR_ADDR,),
        remote_addrs=(RESPONDER_ADDR,), children=(child,), encap=True, remote_natt_port=ports[RESPONDER_ADDR][1],
        rekey_time=ike_rekey_time,
    )
    hub = IkeConfig(
        name="hub", local_id="hub.example", remote_id="site.example", psk=PSK, local_addrs=(RESPONDER_ADDR,),
        remote_addrs=(INITIATOR_ADDR,), encap=True, remote_natt_port=ports[INITIATOR_ADDR][1],
        children=(ChildConfig(name="hub-net", local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",),
                              esp_proposals=responder_esp),),
    )
    site_config = GatewayConfig(connections=(Connection(config=site, start_action="start", remote_host=RESPONDER_ADDR,
                                                        remote_port=ports[RESPONDER_ADDR][0]),))
    hub_config = GatewayConfig(connections=(Connection(config=hub),))
    responder = Gateway(lambda: hub_config, ike_port=ports[RESPONDER_ADDR][0], natt_port=ports[RESPONDER_ADDR][1])
    initiator = Gateway(lambda: site_config, ike_port=ports[INITIATOR_ADDR][0], natt_port=ports[INITIATOR_ADDR][1])
    await responder.start()
    try:
        await initiator.start()
        try:
            yield Pair(initiator, responder)
        finally:
            await initiator.shutdown(SHUTDOWN_WAIT)
    finally:
        await responder.shutdown(SHUTDOWN_WAIT)

