"""The address an HA leader holds (`gateway/ha.py`): added to an interface on takeover, announced with
a gratuitous ARP so that the peers' (or the router's) neighbour entries move to our MAC at once, and
removed when the gateway stops leading. IPv4 only is announced; an IPv6 address is added, and the
peers find it through neighbour discovery (an unsolicited Neighbor Advertisement is not sent yet).

The standby binds its sockets to the address before it holds it: `allow_nonlocal_bind` sets the
namespace's ip_nonlocal_bind sysctl, which is what keepalived users set too.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute, NetlinkError  # type: ignore[import-untyped]

__all__ = ["add_address", "remove_address", "announce", "allow_nonlocal_bind", "GRATUITOUS_ARPS"]

GRATUITOUS_ARPS = 3  # announcements sent per takeover (one may be lost)
NETLINK_TIMEOUT = 5.0  # seconds one address change may take
_T = TypeVar("_T")
ETH_P_ARP = 0x0806
_BROADCAST = b"\xff" * 6
_NONLOCAL_BIND = {4: "/proc/sys/net/ipv4/ip_nonlocal_bind", 6: "/proc/sys/net/ipv6/ip_nonlocal_bind"}


def _ifindex(ipr: IPRoute, interface: str) -> int:
    found = ipr.link_lookup(ifname=interface)
    if not found:
        raise OSError(f"no interface {interface!r}")
    return int(found[0])


def _off_loop(work: Callable[[], _T]) -> _T:
    """Run a netlink call in a thread of its own: pyroute2's IPRoute runs an asyncio loop inside,
    which cannot start in a thread whose loop is running (the gateway's)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink") as pool:
        return pool.submit(work).result(timeout=NETLINK_TIMEOUT)


def add_address(interface: str, address: str) -> bool:
    """Add `address` ("192.0.2.1/24") to `interface`; False if it was there already."""
    return _off_loop(lambda: _change("add", interface, address, {17}))  # EEXIST


def remove_address(interface: str, address: str) -> bool:
    """Remove `address` from `interface`; False if it was not there."""
    return _off_loop(lambda: _change("del", interface, address, {99, 19}))  # EADDRNOTAVAIL, ENODEV


def _change(command: str, interface: str, address: str, no_op: set[int]) -> bool:
    """One netlink address change; False when the kernel answers with one of the `no_op` errors."""
    iface = ipaddress.ip_interface(address)
    with IPRoute() as ipr:
        try:
            ipr.addr(command, index=_ifindex(ipr, interface), address=str(iface.ip),
                     prefixlen=iface.network.prefixlen)
        except NetlinkError as exc:
            if exc.code in no_op:
                return False
            raise OSError(f"cannot {command} {address} on {interface}: {exc}") from exc
    return True


def _mac_of(interface: str) -> bytes:
    text = Path(f"/sys/class/net/{interface}/address").read_text().strip()
    return bytes.fromhex(text.replace(":", ""))


def gratuitous_arp(mac: bytes, ip: bytes) -> bytes:
    """An ARP request for our own address from our own MAC to everyone (RFC 5227 3: an announcement)."""
    ethernet = _BROADCAST + mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip + bytes(6) + ip
    return ethernet + arp


def announce(interface: str, address: str, count: int = GRATUITOUS_ARPS) -> int:
    """Send `count` gratuitous ARPs for an IPv4 `address` out of `interface`; returns how many."""
    ip = ipaddress.ip_interface(address).ip
    if ip.version != 4:
        return 0
    frame = gratuitous_arp(_mac_of(interface), ip.packed)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, 0))
        for _ in range(count):
            sock.send(frame)
    return count


def allow_nonlocal_bind(version: int) -> None:
    """Let sockets bind an address this host does not hold (yet): the standby's listeners."""
    Path(_NONLOCAL_BIND[version]).write_text("1\n")
