"""Where the data path's AF_XDP frames go: the peer's next hop on the XDP device, from the kernel.

Frames sent from an XSK bypass the kernel's neighbour layer, so the Ethernet header must be written by
us: the route to the peer (its device and gateway, as `ip route get` gives it) and the gateway's or
the peer's MAC address in the neighbour table. A peer whose route leaves by another device, or whose
next hop is not resolved (no entry, INCOMPLETE, FAILED), has no `NextHop`: its ESP stays on the
sockets, and the kernel, sending it, resolves the address; the next refresh then finds it.

One netlink session per refresh (pyroute2): one route lookup per peer and one dump of the device's
neighbours and link, so a refresh of N peers costs N + 2 requests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetlinkError  # type: ignore[import-untyped]

__all__ = ["NextHop", "resolve_next_hops"]

RTN_UNICAST = 1  # <linux/rtnetlink.h>: a route to a remote address (not local, not blackhole)
# <linux/neighbour.h>: states whose link-layer address is usable; STALE and DELAY are still correct
# until proven otherwise, which the kernel's own traffic to the address (IKE) keeps checking.
NUD_REACHABLE, NUD_STALE, NUD_DELAY, NUD_PROBE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x04, 0x08, 0x10, 0x40, 0x80
NUD_USABLE = NUD_REACHABLE | NUD_STALE | NUD_DELAY | NUD_PROBE | NUD_NOARP | NUD_PERMANENT
ZERO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class NextHop:
    """The Ethernet header and outer source of frames to one peer."""

    dst_mac: bytes  # the next hop's (the gateway's, or the peer's on a directly connected network)
    src_mac: bytes  # the device's
    mtu: int  # the device's
    source: bytes  # the outer source address (packed), the sockets' bound address or the route's

    def forwarder_l2(self) -> tuple[bytes, bytes, int, bytes]:
        """What CoreForwarder.set_tunnels takes as a tunnel's `l2`."""
        return (self.dst_mac, self.src_mac, self.mtu, self.source)


def _mac(text: str | None) -> bytes | None:
    if not text or text == ZERO_MAC:
        return None
    return bytes.fromhex(text.replace(":", ""))


def _route(ipr: Any, peer: str, ifindex: int) -> tuple[str, str | None] | None:
    """(next hop address, the route's preferred source) when the route to `peer` leaves by `ifindex`."""
    try:
        routes = ipr.route("get", dst=peer)
    except NetlinkError:  # unreachable, no route
        return None
    if not routes:
        return None
    route = routes[0]
    if route["type"] != RTN_UNICAST or route.get_attr("RTA_OIF") != ifindex:
        return None
    return route.get_attr("RTA_GATEWAY") or peer, route.get_attr("RTA_PREFSRC")


def resolve_next_hops(ifindex: int, peers: Iterable[str], source: str | None) -> dict[str, NextHop | None]:
    """Each peer's NextHop through device `ifindex`, or None (another device, or not resolved).
    `source`: the outer source address the sockets are bound to; None (a wildcard bind): the route's.
    OSError when netlink itself fails (the device is gone, say)."""
    peers = list(dict.fromkeys(peers))
    found: dict[str, NextHop | None] = dict.fromkeys(peers)
    if not peers:
        return found
    try:
        with IPRoute() as ipr:
            _resolve(ipr, ifindex, peers, source, found)
    except NetlinkError as exc:
        raise OSError(int(exc.code), f"netlink: {exc}") from None
    return found


def _resolve(ipr: Any, ifindex: int, peers: list[str], source: str | None, found: dict[str, NextHop | None]) -> None:
    """Fill `found` in one netlink session: the device, its neighbours, then each peer's route."""
    links = ipr.link("get", index=ifindex)
    if not links:
        return
    src_mac, mtu = _mac(links[0].get_attr("IFLA_ADDRESS")), int(links[0].get_attr("IFLA_MTU") or 0)
    if src_mac is None or mtu <= 0:
        return  # not an Ethernet device
    neighbours: dict[str, bytes] = {}
    for entry in ipr.get_neighbours(ifindex=ifindex):
        mac = _mac(entry.get_attr("NDA_LLADDR"))
        address = entry.get_attr("NDA_DST")
        if mac is not None and address and entry["state"] & NUD_USABLE:
            neighbours[str(ipaddress.ip_address(address))] = mac
    for peer in peers:
        route = _route(ipr, peer, ifindex)
        if route is None:
            continue
        via, preferred = route
        dst_mac = neighbours.get(str(ipaddress.ip_address(via)))
        outer = source or preferred
        if dst_mac is not None and outer is not None:
            found[peer] = NextHop(dst_mac, src_mac, mtu, ipaddress.ip_address(outer).packed)
