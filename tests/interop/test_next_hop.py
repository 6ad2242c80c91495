"""Where AF_XDP frames go (ikev2lib.gateway.nexthop) against the kernel's real route and neighbour tables.

In the left namespace of a veth pair: the right side's address on the link (resolved by a ping), an
address behind it through a gateway route, an address on the link that nobody answers for, one that
leaves by another device (a second veth), and the namespace's own address. Only the first two may be sent as frames,
with the right side's MAC address as destination.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from .netns import NamespacePair, PairAddresses

pytestmark = pytest.mark.interop

BEHIND_RIGHT = "198.51.100.7"  # routed via the right side
SILENT = "192.0.2.99"  # on the link, no host: its neighbour entry never resolves
OTHER_DEVICE_PEER = "203.0.113.9"  # on a second veth pair inside the left namespace


@pytest.fixture
def pair() -> Iterator[NamespacePair]:
    with NamespacePair(PairAddresses(left_inner=(), right_inner=())) as ns:
        ns.left.ip("route", "add", "198.51.100.0/24", "via", ns.right_addr)
        other = f"{ns.left_if}x"
        ns.left.ip("link", "add", other, "type", "veth", "peer", "name", f"{ns.left_if}y")
        ns.left.ip("addr", "add", "203.0.113.1/24", "dev", other)
        ns.left.ip("link", "set", other, "up")
        ns.left.run(["ping", "-c", "1", "-W", "2", ns.right_addr])  # the right side's MAC in the table
        ns.left.run(["ping", "-c", "1", "-W", "1", SILENT], check=False)  # INCOMPLETE, then FAILED
        yield ns


def _mac(ns: NamespacePair, left: bool) -> bytes:
    side, ifname = (ns.left, ns.left_if) if left else (ns.right, ns.right_if)
    info = json.loads(side.run(["ip", "-j", "link", "show", ifname]).stdout)[0]
    return bytes.fromhex(info["address"].replace(":", ""))


def _resolve(ifname: str, peers: list[str], source: str | None) -> dict[str, object]:
    from ikev2lib.gateway.nexthop import resolve_next_hops

    return dict(resolve_next_hops(socket.if_nametoindex(ifname), peers, source))


def test_only_resolved_next_hops_on_the_device_get_frames(pair: NamespacePair) -> None:
    from ikev2lib.gateway.nexthop import NextHop

    peers = [pair.right_addr, BEHIND_RIGHT, SILENT, OTHER_DEVICE_PEER, pair.left_addr]
    found = pair.left.call(_resolve, pair.left_if, peers, None)
    right_mac, left_mac = _mac(pair, left=False), _mac(pair, left=True)
    here = socket.inet_aton(pair.left_addr)
    expected = NextHop(right_mac, left_mac, 1500, here)
    assert found[pair.right_addr] == expected  # directly connected
    assert found[BEHIND_RIGHT] == expected  # through the gateway route: the gateway's MAC
    assert found[SILENT] is None  # no neighbour entry that can be used: the sockets send, the kernel resolves
    assert found[OTHER_DEVICE_PEER] is None  # the route leaves by the other veth
    assert found[pair.left_addr] is None  # a local address


def test_the_bound_source_wins_over_the_routes_and_a_flushed_entry_falls_back(pair: NamespacePair) -> None:
    pair.left.ip("addr", "add", "192.0.2.50/24", "dev", pair.left_if)
    found = pair.left.call(_resolve, pair.left_if, [pair.right_addr], "192.0.2.50")
    hop = found[pair.right_addr]
    assert hop is not None and hop.source == socket.inet_aton("192.0.2.50")  # type: ignore[attr-defined]
    pair.left.ip("neigh", "flush", "dev", pair.left_if)
    assert pair.left.call(_resolve, pair.left_if, [pair.right_addr], None)[pair.right_addr] is None
    pair.left.run(["ping", "-c", "1", "-W", "2", pair.right_addr])  # what the kernel's own sends do
    assert pair.left.call(_resolve, pair.left_if, [pair.right_addr], None)[pair.right_addr] is not None


def test_an_unknown_device_or_no_peers_resolve_to_nothing(pair: NamespacePair) -> None:
    assert pair.left.call(_resolve, pair.left_if, [], None) == {}
    assert pair.left.call(_resolve, "lo", [pair.right_addr], None) == {pair.right_addr: None}  # not Ethernet


def test_a_device_that_is_gone_is_an_os_error(pair: NamespacePair) -> None:
    def resolve_missing() -> str:
        from ikev2lib.gateway.nexthop import resolve_next_hops

        try:
            resolve_next_hops(2**31 - 1, ["192.0.2.2"], None)
        except OSError as exc:
            return str(exc)
        return "no error"

    assert "netlink" in pair.left.call(resolve_missing)
