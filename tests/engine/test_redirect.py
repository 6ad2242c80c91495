"""RFC 5685 redirect in the simulated network: a gateway (gw1) sends its client to another (gw2)
during IKE_SA_INIT or on an established IKE SA; the client follows, says where it came from, and
stops following a loop. Forged, stale and malformed redirects move nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import (
    ChildSaCreated, IkeSaDeleted, IkeSaEstablished, IkeSaRedirected, ProtocolErrorEvent,
)  # fmt: skip
from ikev2lib.exceptions import LocalProtocolError, ParseError
from ikev2lib.exchanges import redirect as redirect_module
from ikev2lib.exchanges.redirect import MAX_REDIRECTS, REDIRECT_DELETE_DELAY
from ikev2lib.state import IkeState
from ikev2lib.wire import ExchangeType, Message, Notify, NotifyType
from ikev2lib.wire.redirect import Gateway, GatewayType, decode, encode

from .network import Network, Node, ike_config

CLIENT_IP, GW1_IP, GW2_IP, GW3_IP = "192.0.2.1", "192.0.2.10", "192.0.2.20", "192.0.2.30"
CLIENT_ID, GW_ID = "alice@example.org", "gw.example.org"


def client_config(**extra: object):  # type: ignore[no-untyped-def]
    return ike_config(local_id=CLIENT_ID, remote_id=GW_ID, **extra)


def gateway_config():  # type: ignore[no-untyped-def]
    return ike_config(local_id=GW_ID, remote_id=CLIENT_ID, local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))


def sa_init_requests(net: Network, dst_ip: str, since: int = 0) -> list[Message]:
    found = []
    for data, _, dst in net.tap[since:]:
        if dst != dst_ip or data[:4] == bytes(4):
            continue
        message = Message.parse(data)
        if message.exchange_type == ExchangeType.IKE_SA_INIT and not message.is_response:
            found.append(message)
    return found


def three(hook1=None, hook2=None) -> tuple[Network, Node, Node, Node]:  # type: ignore[no-untyped-def]
    net = Network()
    client = net.add(IkeEndpoint(local_addr=(CLIENT_IP, 500)))
    gw1 = net.add(IkeEndpoint(gateway_config(), local_addr=(GW1_IP, 500), redirect=hook1))
    gw2 = net.add(IkeEndpoint(gateway_config(), local_addr=(GW2_IP, 500), redirect=hook2))
    return net, client, gw1, gw2


def to(gateway: str):  # type: ignore[no-untyped-def]
    return lambda addr, config, came_from: gateway


# ---- the wire format ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, kind", [("192.0.2.20", GatewayType.IPV4), ("2001:db8::20", GatewayType.IPV6),
                                        ("gw2.example.org", GatewayType.FQDN)])
def test_gateway_identities_round_trip(text: str, kind: GatewayType) -> None:
    gateway = Gateway.parse(text)
    assert gateway.kind is kind
    assert decode(encode(gateway, b"n" * 32)) == (gateway, b"n" * 32)
    assert decode(encode(gateway)) == (gateway, b"")


def test_ipv4_encoding_is_the_rfc_layout() -> None:
    assert encode(Gateway.parse("192.0.2.20"), b"\x01\x02") == bytes([1, 4, 192, 0, 2, 20, 1, 2])


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x04\xc0\x00", b"\x01\x05\xc0\x00\x02\x14\x00",
                                  b"\x02\x04\xc0\x00\x02\x14", b"\x03\x00", b"\x03\x03a b", b"\x03\x02\xff\xfe",
                                  b"\x04\x01x", b"\x01\x04\xc0\x00\x02\x14" + bytes(257)])
def test_malformed_redirect_data_is_a_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        decode(data)


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_decode_never_fails_otherwise(data: bytes) -> None:
    try:
        gateway, nonce = decode(data)
    except ParseError:
        return
    assert decode(encode(gateway, nonce)) == (gateway, nonce)


@pytest.mark.parametrize("text", ["", "a..b", "-a.example", "a b", "x" * 64 + ".org", "gw_1.example"])
def test_operators_cannot_write_a_bad_gateway(text: str) -> None:
    with pytest.raises(ValueError):
        Gateway.parse(text)


# ---- redirect during IKE_SA_INIT ----------------------------------------------------------------


def test_sa_init_redirect_ends_with_a_tunnel_at_the_new_gateway() -> None:
    net, client, gw1, gw2 = three(hook1=to(GW2_IP))
    ike_sa_id = client.endpoint.initiate(client_config(), (GW1_IP, 500), net.now)
    net.run()
    first = sa_init_requests(net, GW1_IP)[0]
    assert first.notify(NotifyType.REDIRECT_SUPPORTED) is not None
    redirected = client.of_type(IkeSaRedirected)
    assert len(redirected) == 1 and redirected[0].new_ike_sa_id == ike_sa_id
    assert redirected[0].old_addr == (GW1_IP, 500) and redirected[0].remote_addr == (GW2_IP, 500)
    # gw1 kept nothing; gw2 serves the client, who told it where it came from
    assert len(gw1.endpoint) == 0 and gw1.endpoint.stats["sa_init_redirected"] == 1
    second = sa_init_requests(net, GW2_IP)[0]
    came_from = second.notify(NotifyType.REDIRECTED_FROM)
    assert came_from is not None and decode(bytes(came_from.data))[0] == Gateway.parse(GW1_IP)
    assert second.notify(NotifyType.REDIRECT_SUPPORTED) is None
    assert client.endpoint.state_of(ike_sa_id) == IkeState.ESTABLISHED
    assert client.endpoint.connection(ike_sa_id).remote_addr[0] == GW2_IP
    assert client.of_type(ChildSaCreated) and gw2.of_type(ChildSaCreated)


def test_the_hook_sees_the_client_and_where_it_came_from() -> None:
    seen: list[tuple[str, str, str | None]] = []

    def hook2(addr, config, came_from):  # type: ignore[no-untyped-def]
        seen.append((addr[0], config.local_id, came_from))
        return None

    net, client, _, _ = three(hook1=to(GW2_IP), hook2=hook2)
    client.endpoint.initiate(client_config(), (GW1_IP, 500), net.now)
    net.run()
    assert seen == [(CLIENT_IP, GW_ID, GW1_IP)]


def test_a_client_that_does_not_follow_is_served() -> None:
    net, client, gw1, _ = three(hook1=to(GW2_IP))
    ike_sa_id = client.endpoint.initiate(client_config(follow_redirects=False), (GW1_IP, 500), net.now)
    net.run()
    assert sa_init_requests(net, GW1_IP)[0].notify(NotifyType.REDIRECT_SUPPORTED) is None
    assert client.endpoint.state_of(ike_sa_id) == IkeState.ESTABLISHED
    assert "sa_init_redirected" not in gw1.endpoint.stats


def test_a_redirect_loop_stops_at_the_limit() -> None:
    net = Network()
    client = net.add(IkeEndpoint(local_addr=(CLIENT_IP, 500)))
    net.add(IkeEndpoint(gateway_config(), local_addr=(GW1_IP, 500), redirect=to(GW2_IP)))
    net.add(IkeEndpoint(gateway_config(), local_addr=(GW2_IP, 500), redirect=to(GW1_IP)))
    ike_sa_id = client.endpoint.initiate(client_config(), (GW1_IP, 500), net.now)
    net.run()
    assert len(client.of_type(IkeSaRedirected)) == MAX_REDIRECTS
    errors = [e for e in client.of_type(ProtocolErrorEvent) if "redirect" in e.description]
    assert errors and f"{MAX_REDIRECTS} redirects" in errors[-1].description
    deleted = client.of_type(IkeSaDeleted)
    assert deleted and "redirect loop" in deleted[-1].reason
    assert ike_sa_id not in client.endpoint.ike_sa_ids()
    assert client.endpoint.stats["redirect_loops"] == 1


def test_an_fqdn_redirect_is_left_to_the_user() -> None:
    net, client, _, gw2 = three(hook1=to("gw2.example.org"))
    config = client_config()
    client.endpoint.initiate(config, (GW1_IP, 500), net.now)
    net.run()
    event = client.of_type(IkeSaRedirected)[0]
    assert event.gateway == "gw2.example.org" and event.remote_addr is None and event.new_ike_sa_id is None
    assert client.endpoint.ike_sa_ids() == []
    # the user resolved the name: the new attempt names the gateway that redirected it
    new_id = client.endpoint.initiate(config, (GW2_IP, 500), net.now, redirection=event.redirection)
    net.run()
    assert client.endpoint.state_of(new_id) == IkeState.ESTABLISHED
    came_from = sa_init_requests(net, GW2_IP)[0].notify(NotifyType.REDIRECTED_FROM)
    assert came_from is not None and decode(bytes(came_from.data))[0].value == GW1_IP
    assert gw2.of_type(IkeSaEstablished)


def _redirect_response(spi_i: bytes, gateway: str, nonce: bytes) -> bytes:
    return Message(
        spi_i=spi_i, spi_r=bytes(8), exchange_type=ExchangeType.IKE_SA_INIT, message_id=0, is_initiator=False,
        is_response=True, payloads=[Notify(NotifyType.REDIRECT, data=encode(Gateway.parse(gateway), nonce))],
    ).serialize()  # fmt: skip


@pytest.mark.parametrize("case", ["wrong nonce", "no nonce", "wrong source", "malformed"])
def test_forged_sa_init_redirects_move_nothing(case: str) -> None:
    """Anyone can send an unprotected IKE_SA_INIT response: one that is not bound to our request is
    dropped, and the real gateway's answer still completes the handshake."""
    net, client, gw1, _ = three()
    net.drop = lambda data, src, dst: dst == GW1_IP  # hold back our request: the forgery comes first
    ike_sa_id = client.endpoint.initiate(client_config(), (GW1_IP, 500), net.now)
    net.run(until=net.now + 0.1)
    net.drop = None
    sa = client.endpoint.connection(ike_sa_id)
    ni = sa.init.ni if sa.init is not None else b""
    forged = {"wrong nonce": _redirect_response(sa.spi_i, GW3_IP, bytes(32)),
              "no nonce": _redirect_response(sa.spi_i, GW3_IP, b""),
              "wrong source": _redirect_response(sa.spi_i, GW3_IP, ni),
              "malformed": _redirect_response(sa.spi_i, GW3_IP, ni)[:-5] + b"\x05\x00\x00\x00\x00"}[case]
    src = (GW3_IP, 500) if case == "wrong source" else (GW1_IP, 500)
    client.endpoint.receive_datagram(forged, src, net.now)
    assert sa.remote_addr == (GW1_IP, 500) and sa.state == IkeState.SA_INIT_SENT
    assert not client.of_type(IkeSaRedirected)
    net.run()  # the retransmission reaches gw1, whose answer is the real one
    assert client.endpoint.state_of(ike_sa_id) == IkeState.ESTABLISHED
    assert sa.remote_addr[0] == GW1_IP and gw1.of_type(IkeSaEstablished)


def test_a_stale_redirect_after_moving_on_is_dropped() -> None:
    net, client, _, _ = three(hook1=to(GW2_IP))
    ike_sa_id = client.endpoint.initiate(client_config(), (GW1_IP, 500), net.now)
    net.run()
    sa = client.endpoint.connection(ike_sa_id)
    redirect = next(d for d, src, dst in net.tap if dst == CLIENT_IP and src[0] == GW1_IP)
    client.endpoint.receive_datagram(redirect, (GW1_IP, 500), net.now)  # gw1's answer once more
    assert sa.state == IkeState.ESTABLISHED and sa.remote_addr[0] == GW2_IP
    assert len(client.of_type(IkeSaRedirected)) == 1


# ---- redirect of an established client ---------------------------------------------------------


def established(net: Network, client: Node, gw: Node, ip: str) -> tuple[int, int]:
    ike_sa_id = client.endpoint.initiate(client_config(), (ip, 500), net.now)
    net.run()
    assert client.endpoint.state_of(ike_sa_id) == IkeState.ESTABLISHED
    return ike_sa_id, gw.endpoint.ike_sa_ids()[0]


def test_an_established_client_moves_to_the_new_gateway() -> None:
    net, client, gw1, gw2 = three()
    old_id, gw_sa = established(net, client, gw1, GW1_IP)
    gw1.endpoint.redirect_ike_sa(gw_sa, GW2_IP)
    net.run()
    event = client.of_type(IkeSaRedirected)[0]
    assert event.ike_sa_id == old_id and event.remote_addr == (GW2_IP, 500)
    assert event.new_ike_sa_id is not None and event.new_ike_sa_id != old_id
    assert client.endpoint.ike_sa_ids() == [event.new_ike_sa_id]
    assert client.endpoint.state_of(event.new_ike_sa_id) == IkeState.ESTABLISHED
    assert gw1.endpoint.ike_sa_ids() == [] and gw1.of_type(IkeSaDeleted)[0].by_peer  # the client deleted it
    assert gw2.of_type(ChildSaCreated)
    came_from = sa_init_requests(net, GW2_IP)[0].notify(NotifyType.REDIRECTED_FROM)
    assert came_from is not None and decode(bytes(came_from.data))[0].value == GW1_IP


def test_a_client_that_stays_is_deleted_by_the_gateway() -> None:
    net, client, gw1, _ = three()
    _, gw_sa = established(net, client, gw1, GW1_IP)
    sa = client.endpoint.connection(client.endpoint.ike_sa_ids()[0])
    sa.accepts_redirect = False  # as a client that announced support but then ignores the redirect
    gw1.endpoint.redirect_ike_sa(gw_sa, GW2_IP)
    net.run(until=net.now + 1.0)
    assert gw1.endpoint.ike_sa_ids() == [gw_sa]
    net.run(until=net.now + REDIRECT_DELETE_DELAY + 1.0)
    assert gw1.endpoint.ike_sa_ids() == [] and not gw1.of_type(IkeSaDeleted)[0].by_peer
    assert client.endpoint.stats["redirects_ignored"] == 1


def test_only_a_client_that_announced_support_can_be_redirected() -> None:
    net, client, gw1, _ = three()
    ike_sa_id = client.endpoint.initiate(client_config(follow_redirects=False), (GW1_IP, 500), net.now)
    net.run()
    with pytest.raises(LocalProtocolError, match="REDIRECT_SUPPORTED"):
        gw1.endpoint.redirect_ike_sa(gw1.endpoint.ike_sa_ids()[0], GW2_IP)
    with pytest.raises(LocalProtocolError):
        client.endpoint.redirect_ike_sa(ike_sa_id, "not a gateway!")


def test_redirect_support_survives_an_ike_rekey() -> None:
    net, client, gw1, gw2 = three()
    _, gw_sa = established(net, client, gw1, GW1_IP)
    gw1.endpoint.rekey_ike_sa(gw_sa)  # the gateway rekeys: the client becomes the responder of the new SA
    net.run()
    gw1.endpoint.redirect_ike_sa(gw_sa, GW2_IP)
    net.run()
    assert client.of_type(IkeSaRedirected) and gw2.of_type(ChildSaCreated)


def test_an_established_redirect_loop_stops_at_the_limit() -> None:
    net, client, gw1, gw2 = three()
    established(net, client, gw1, GW1_IP)
    for _ in range(MAX_REDIRECTS + 2):
        for gw, other in ((gw1, GW2_IP), (gw2, GW1_IP)):
            for sa_id in gw.endpoint.ike_sa_ids():
                if gw.endpoint.state_of(sa_id) == IkeState.ESTABLISHED:
                    gw.endpoint.redirect_ike_sa(sa_id, other)
        net.run()
    assert len(client.of_type(IkeSaRedirected)) == MAX_REDIRECTS
    assert client.endpoint.stats["redirect_loops"] >= 1
    assert len(client.endpoint.ike_sa_ids()) == 1  # it stays where the loop was noticed


@given(st.binary(max_size=80))
@settings(max_examples=60, deadline=None)
def test_any_authenticated_redirect_data_is_harmless(data: bytes) -> None:
    """Whatever an authenticated gateway puts in REDIRECT: followed if it is valid, otherwise
    counted and ignored; the client's endpoint never raises."""
    net, client, gw1, _ = three()
    _, gw_sa = established(net, client, gw1, GW1_IP)
    sa = gw1.endpoint.connection(gw_sa)
    sa.send_request(redirect_module._RedirectRequest(), [Notify(NotifyType.REDIRECT, data=data)], net.now)
    net.run(until=net.now + 5.0)
    try:
        decode(data)
    except ParseError:
        assert client.endpoint.stats["malformed_redirects"] == 1
        assert not client.of_type(IkeSaRedirected)
    else:
        assert len(client.of_type(IkeSaRedirected)) == 1
