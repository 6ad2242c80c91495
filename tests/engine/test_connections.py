"""Many connections on one responder: choosing by addresses then identities (as strongSwan does),
PSK and certificate connections side by side, and changes at run time."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st

from ikev2lib.config import ChildConfig, IkeConfig
from ikev2lib.connections import ConnectionTable
from ikev2lib.endpoint import IkeEndpoint
from ikev2lib.events import ChildSaCreated, IkeSaEstablished, ProtocolErrorEvent
from ikev2lib.exceptions import LocalProtocolError
from ikev2lib.pki import Credential, TrustStore
from ikev2lib.wire import AuthMethod, IDi, IDr, NotifyType

from pki.certs import NOW, KeyPool, build_pki, issue, name

from .network import RESPONDER_IP, Network, Node, ike_config

PSK = b"a pre-shared key for the connection tests"
GW = "hub.example.org"
HUB_SPOKES = 50


def conn(name: str, **kw: object) -> IkeConfig:
    kw.setdefault("local_id", GW)
    kw.setdefault("psk", PSK)
    return IkeConfig(name=name, **kw)  # type: ignore[arg-type]


def names(configs: object) -> list[str]:
    return [c.name for c in configs]  # type: ignore[attr-defined]


# ---- the table on its own ------------------------------------------------------------------------


def test_addresses_rank_exact_then_narrower_ranges_and_subnets_then_any() -> None:
    table = ConnectionTable([
        conn("any"),
        conn("wide", remote_addrs=("10.0.0.0/8",)),
        conn("range", remote_addrs=("10.1.2.0-10.1.2.255",)),
        conn("narrow", remote_addrs=("10.1.0.0/16",)),
        conn("exact", remote_addrs=("10.1.2.3",)),
        conn("other", remote_addrs=("192.0.2.0/24",)),
        conn("any4", remote_addrs=("%any4",)),
        conn("v6", remote_addrs=("2001:db8::/32",)),
    ])
    assert names(table.for_addresses("192.0.2.1", "10.1.2.3")) == ["exact", "range", "narrow", "wide", "any", "any4"]
    assert names(table.for_addresses("192.0.2.1", "10.9.9.9")) == ["wide", "any", "any4"]
    assert names(table.for_addresses("2001:db8::1", "2001:db8::2")) == ["v6", "any"]


def test_local_addresses_count_too() -> None:
    table = ConnectionTable([
        conn("a", local_addrs=("192.0.2.1",)),
        conn("b", local_addrs=("192.0.2.0/24",)),
        conn("c", local_addrs=("198.51.100.1",)),
    ])
    assert names(table.for_addresses("192.0.2.1", "10.0.0.1")) == ["a", "b"]
    assert names(table.for_addresses("192.0.2.7", "10.0.0.1")) == ["b"]
    # bound to the wildcard address, the endpoint cannot tell: every local list matches
    assert names(table.for_addresses("0.0.0.0", "10.0.0.1")) == ["a", "b", "c"]


def test_identity_exact_before_any_and_hints_and_auth_methods() -> None:
    table = ConnectionTable([
        conn("anyone"),
        conn("alice-psk", remote_id="alice@example.org"),
        conn("alice-other-gw", remote_id="alice@example.org", local_id="other.example.org"),
        conn("bob", remote_id="bob@example.org"),
    ])
    alice = IDi.from_value("alice@example.org")
    psk = int(AuthMethod.SHARED_KEY_MIC)
    assert names(table.for_identity("192.0.2.1", "10.0.0.1", alice, None, psk)) == ["alice-psk", "alice-other-gw", "anyone"]
    hint = IDr.from_value("other.example.org")
    assert names(table.for_identity("192.0.2.1", "10.0.0.1", alice, hint, psk)) == ["alice-other-gw"]
    # a certificate signature is not what any of these PSK connections accepts
    assert names(table.for_identity("192.0.2.1", "10.0.0.1", alice, None, int(AuthMethod.DIGITAL_SIGNATURE))) == []
    carol = IDi.from_value("carol@example.org")
    assert names(table.for_identity("192.0.2.1", "10.0.0.1", carol, None, psk)) == ["anyone"]


def test_replace_keeps_the_position_and_remove_forgets() -> None:
    table = ConnectionTable([conn("a"), conn("b"), conn("c")])
    table.add(conn("a", remote_id="x@example.org"))
    assert names(table) == ["a", "b", "c"]
    assert table.get("a").remote_id == "x@example.org"  # type: ignore[union-attr]
    removed = table.remove("b")
    assert removed.name == "b" and names(table.for_addresses("192.0.2.1", "10.0.0.1")) == ["a", "c"]
    with pytest.raises(LocalProtocolError, match="no connection named 'b'"):
        table.remove("b")


@pytest.mark.parametrize("bad", ["gw.example.org", "10.0.0.9-10.0.0.1", "10.0.0.1-2001:db8::1", "300.1.1.1", ""])
def test_bad_address_selectors_are_configuration_errors(bad: str) -> None:
    with pytest.raises(LocalProtocolError, match="address"):
        conn("x", remote_addrs=(bad,))


def test_distinct_names_required() -> None:
    with pytest.raises(LocalProtocolError, match="distinct names"):
        IkeEndpoint([conn("a"), conn("a")], local_addr=(RESPONDER_IP, 500))


_octet = st.integers(0, 3)
_selector = st.one_of(
    st.sampled_from(["%any", "%any4", "%any6", "2001:db8::1"]),
    st.builds(lambda a, b, c: f"10.0.{a}.{b}-10.0.{a}.{b + c}", _octet, _octet, _octet),
    st.builds(lambda a, b: f"10.0.{a}.{b}", _octet, _octet),
    st.builds(lambda a, p: f"10.0.{a}.0/{p}", _octet, st.sampled_from([16, 22, 24])),
)


def _reference(configs: list[IkeConfig], remote: str) -> list[str]:
    """Brute force: rank every connection by its best-matching selector, stable by position."""
    ip = ipaddress.ip_address(remote)

    def rank(selectors: tuple[str, ...]) -> int:
        best = 0
        for s in selectors or ("%any",):
            if s in ("%any", "%any4"):
                best = max(best, 1)
            elif s == "%any6" or ":" in s:
                continue  # the remote address is IPv4
            elif "-" in s:
                first, last = (ipaddress.ip_address(v) for v in s.split("-"))
                if first <= ip <= last:  # ranked like the smallest subnet holding the range
                    best = max(best, 2 + 32 - (int(last) - int(first)).bit_length())
            else:
                net = ipaddress.ip_network(s, strict=False)
                if ip in net:
                    best = max(best, 1000 if net.num_addresses == 1 else 2 + net.prefixlen)
        return best

    ranked = [(rank(c.remote_addrs), i, c.name) for i, c in enumerate(configs)]
    return [n for r, _, n in sorted(ranked, key=lambda t: (-t[0], t[1])) if r]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_selector, max_size=3), min_size=1, max_size=12), _octet, _octet)
def test_address_choice_matches_a_brute_force_ranking(selectors: list[list[str]], a: int, b: int) -> None:
    configs = [conn(f"c{i}", remote_addrs=tuple(s)) for i, s in enumerate(selectors)]
    remote = f"10.0.{a}.{b}"
    assert names(ConnectionTable(configs).for_addresses("192.0.2.1", remote)) == _reference(configs, remote)


# ---- a hub: one responder, many spokes -----------------------------------------------------------------


def spoke_ip(i: int) -> str:
    return f"198.51.100.{i + 10}"


def spoke_subnet(i: int) -> str:
    return f"10.{100 + i}.0.0/16"


@pytest.fixture(scope="module")
def hub_pki():  # type: ignore[no-untyped-def]
    return build_pki(KeyPool(rsa_count=1), "p256")


def _spoke_credential(pki, i: int) -> Credential:  # type: ignore[no-untyped-def]
    key = pki.keys.new("p256")
    dns = f"spoke{i}.example.org"
    cert = issue(name(dns), key, pki.inter, pki.inter_key, ca=False, san=x509.SubjectAlternativeName([x509.DNSName(dns)]))
    return Credential(key, cert, (pki.inter,))


def test_hub_with_mixed_psk_and_certificate_spokes(hub_pki) -> None:  # type: ignore[no-untyped-def]
    """50 spokes, every other one with a certificate, each its own identity, subnet and key; all reach
    the hub at one address (remote_addrs %any) and each lands on its own connection."""
    pki = hub_pki
    trust = TrustStore([pki.root])
    hub_cred = _spoke_credential(pki, 999)  # the hub's own certificate (its SAN differs; id below)
    hub_key = hub_cred.key
    hub_cert = issue(name(GW), hub_key, pki.inter, pki.inter_key, ca=False,
                     san=x509.SubjectAlternativeName([x509.DNSName(GW)]))
    hub_cred = Credential(hub_key, hub_cert, (pki.inter,))
    hub_conns, spokes = [], []
    for i in range(HUB_SPOKES):
        spoke_id = f"spoke{i}.example.org"
        subnet = spoke_subnet(i)
        child = ChildConfig(name=f"net{i}", local_ts=("10.0.0.0/16",), remote_ts=(subnet,))
        spoke_child = ChildConfig(name=f"net{i}", local_ts=(subnet,), remote_ts=("10.0.0.0/16",))
        if i % 2:
            auth = dict(local_auth="pubkey", remote_auth="pubkey", credentials=(hub_cred,), trust=trust)
            spoke_auth = dict(local_auth="pubkey", remote_auth="pubkey", credentials=(_spoke_credential(pki, i),),
                              trust=trust)
        else:
            key = f"psk of spoke {i}".encode()
            auth = dict(psk=key)
            spoke_auth = dict(psk=key)
        hub_conns.append(IkeConfig(name=f"spoke{i}", local_id=GW, remote_id=spoke_id, children=(child,), **auth))
        spokes.append(IkeConfig(name="hub", local_id=spoke_id, remote_id=GW, children=(spoke_child,), **spoke_auth))
    net = Network()
    hub = net.add(IkeEndpoint(hub_conns, local_addr=(RESPONDER_IP, 500), wall_clock=lambda: NOW.timestamp()))
    nodes: list[Node] = []
    for i, config in enumerate(spokes):
        node = net.add(IkeEndpoint(local_addr=(spoke_ip(i), 500), wall_clock=lambda: NOW.timestamp()))
        node.endpoint.initiate(config, (RESPONDER_IP, 500), net.now)
        nodes.append(node)
    net.run()
    assert hub.of_type(ProtocolErrorEvent) == []
    landed = {e.remote_id: e.connection for e in hub.of_type(IkeSaEstablished)}  # type: ignore[attr-defined]
    assert landed == {f"spoke{i}.example.org": f"spoke{i}" for i in range(HUB_SPOKES)}
    children = {c.remote_ts: c.name for c in hub.of_type(ChildSaCreated)}  # type: ignore[attr-defined]
    assert children == {(spoke_subnet(i),): f"net{i}" for i in range(HUB_SPOKES)}
    for i, node in enumerate(nodes):
        (child,) = node.of_type(ChildSaCreated)
        assert child.local_ts == (spoke_subnet(i),)  # type: ignore[attr-defined]
    with_certs = [sa for sa in hub.endpoint.connections() if sa.peer_certificate is not None]
    assert len(with_certs) == HUB_SPOKES // 2


def test_a_spoke_with_the_key_of_another_is_refused() -> None:
    hub_conns = [conn(f"s{i}", remote_id=f"s{i}@example.org", psk=f"key {i}".encode()) for i in range(3)]
    net = Network()
    hub = net.add(IkeEndpoint(hub_conns, local_addr=(RESPONDER_IP, 500)))
    mallory = net.add(IkeEndpoint(local_addr=("198.51.100.66", 500)))
    icfg = ike_config(local_id="s1@example.org", remote_id=GW, psk=b"key 2")  # s1's name, s2's key
    mallory.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    assert not hub.of_type(IkeSaEstablished)
    (error,) = hub.of_type(ProtocolErrorEvent)
    assert error.notify == NotifyType.AUTHENTICATION_FAILED  # type: ignore[attr-defined]


def test_ike_proposals_pick_among_connections_for_the_same_peer() -> None:
    hub_conns = [
        conn("gcm", ike_proposals="aes256gcm16-prfsha384-ecp384"),
        conn("chacha", ike_proposals="chacha20poly1305-prfsha256-x25519"),
    ]
    net = Network()
    hub = net.add(IkeEndpoint(hub_conns, local_addr=(RESPONDER_IP, 500)))
    spoke = net.add(IkeEndpoint(local_addr=("198.51.100.7", 500)))
    icfg = ike_config(local_id="x@example.org", remote_id=GW, psk=PSK, ike="chacha20poly1305-prfsha256-x25519",
                      local_ts=("10.2.0.0/16",), remote_ts=("10.1.0.0/16",))
    spoke.endpoint.initiate(icfg, (RESPONDER_IP, 500), net.now)
    net.run()
    (established,) = hub.of_type(IkeSaEstablished)
    assert established.connection == "chacha"  # type: ignore[attr-defined]


def test_no_connection_for_the_address_is_refused_statelessly() -> None:
    net = Network()
    hub = net.add(IkeEndpoint([conn("only", remote_addrs=("203.0.113.0/24",))], local_addr=(RESPONDER_IP, 500)))
    spoke = net.add(IkeEndpoint(local_addr=("198.51.100.7", 500)))
    spoke.endpoint.initiate(ike_config(local_id="x@example.org", psk=PSK), (RESPONDER_IP, 500), net.now)
    net.run()
    assert len(hub.endpoint) == 0 and hub.endpoint.stats["no_matching_connection"] == 1
    assert any(e.notify == NotifyType.NO_PROPOSAL_CHOSEN for e in spoke.of_type(ProtocolErrorEvent))  # type: ignore[attr-defined]


# ---- changes at run time ---------------------------------------------------------------------------


def _spoke(net: Network, i: int, config: IkeConfig) -> Node:
    node = net.add(IkeEndpoint(local_addr=(spoke_ip(i), 500)))
    node.endpoint.initiate(config, (RESPONDER_IP, 500), net.now)
    net.run()
    return node


def _spoke_config(i: int, **kw: object) -> IkeConfig:
    return ike_config(local_id=f"s{i}@example.org", remote_id=GW, psk=f"key {i}".encode(),
                      local_ts=(spoke_subnet(i),), remote_ts=("10.0.0.0/16",), **kw)


def _hub_conn(i: int, **kw: object) -> IkeConfig:
    child = ChildConfig(local_ts=("10.0.0.0/16",), remote_ts=(spoke_subnet(i),))
    return conn(f"s{i}", remote_id=f"s{i}@example.org", psk=f"key {i}".encode(), children=(child,), **kw)


def test_adding_changing_and_removing_connections_leaves_other_sas_alone() -> None:
    net = Network()
    hub = net.add(IkeEndpoint([_hub_conn(0), _hub_conn(1)], local_addr=(RESPONDER_IP, 500)))
    s0 = _spoke(net, 0, _spoke_config(0))
    s1 = _spoke(net, 1, _spoke_config(1))
    assert len(hub.of_type(IkeSaEstablished)) == 2
    sa0 = next(sa for sa in hub.endpoint.connections() if sa.config.name == "s0")

    hub.endpoint.remove_connection("s1")
    hub.endpoint.add_connection(_hub_conn(2))
    hub.endpoint.add_connection(dataclasses.replace(_hub_conn(0), rekey_time=3600.0))  # changed in place
    # s0's and s1's IKE SAs are untouched: they still rekey and carry new Child SAs
    for node in (s0, s1):
        (sid,) = node.endpoint.ike_sa_ids()
        node.endpoint.rekey_ike_sa(sid)
        node.endpoint.create_child_sa(sid)
    net.run()
    assert hub.of_type(ProtocolErrorEvent) == []
    assert len(hub.of_type(ChildSaCreated)) == 4
    assert sa0.config.rekey_time is None  # the SA kept the definition it was made with
    # a new peer for the removed connection is refused; the added one works
    again = _spoke(net, 3, _spoke_config(1))
    assert not again.of_type(IkeSaEstablished)
    s2 = _spoke(net, 4, _spoke_config(2))
    assert len(s2.of_type(IkeSaEstablished)) == 1
    assert [e.connection for e in hub.of_type(IkeSaEstablished)][-1] == "s2"  # type: ignore[attr-defined]
