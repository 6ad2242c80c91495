"""Two namespaces for MOBIKE tests (RFC 4555): a `mobile` host whose outer address moves, and a
`gateway` that stays put.

    mobile (192.0.2.10/24 on link 1)  ---- veth ----  gateway (192.0.2.1/24)
    mobile (198.51.100.10/24, link 2) ---- veth ----  gateway (198.51.100.1/24)   second_link=True only

`move_address()` makes the mobile host change its address the way a DHCP renumbering does: it adds the
new address to the interface (a secondary, same subnet), then deletes the old (primary) one. Linux
deletes the secondaries together with the primary unless `promote_secondaries` is set, so it is set
(`all`, `default` and per interface) in both namespaces before any link exists. IPv6 is off in both
namespaces: libipsec's TUN device would otherwise get a link-local address, and charon would send
MOBIKE address updates at random moments. rp_filter is off so that the gateway answers on link 2 for
its link-1 address (the weak host model) in the second-link variant.

With `second_link`, the mobile host also reaches the gateway's link-1 address over link 2 through a
route of a higher metric (`198.51.100.1` as next hop): while link 1 is up its connected route wins,
and `link_down(1)` (down, addresses flushed) leaves only the link-2 route, so the kernel (and charon's
kernel-netlink, asked for a source address) picks 198.51.100.10. The gateway has a connected route to
198.51.100.0/24 and sends its answers there.

Leaving the context manager kills everything started in the namespaces and deletes them (the veth
links go with them).
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from types import TracebackType

from .netns import IP, Namespace, NetnsError, _run_checked, require_root

IFNAME_MAX = 15  # Linux interface names (IFNAMSIZ - 1)
SYSCTLS_ALL = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
               "net.ipv4.conf.all.promote_secondaries=1", "net.ipv4.conf.default.promote_secondaries=1",
               "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
LINK2_ROUTE_METRIC = 500  # the mobile host's detour to the gateway's link-1 subnet over link 2


@dataclass(frozen=True)
class MobikeAddresses:
    mobile: str = "192.0.2.10"  # the mobile host's first address (link 1)
    moved: str = "192.0.2.20"  # where move_address() takes it by default (same subnet)
    gateway: str = "192.0.2.1"
    mobile2: str = "198.51.100.10"  # link 2 (second_link=True)
    gateway2: str = "198.51.100.1"
    prefix_len: int = 24
    mobile_inner: tuple[str, ...] = ()  # /32 addresses put on the mobile host's `lo`
    gateway_inner: tuple[str, ...] = ()


class MobikeTopology:
    """mobile -- gateway over one (or two) veth links; use as a context manager (cleanup guaranteed)."""

    def __init__(self, second_link: bool = False, addresses: MobikeAddresses = MobikeAddresses(),
                 tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.second_link = second_link
        self.addresses = addresses
        self.mobile_name = f"ikt-{self.tag}-m"
        self.gateway_name = f"ikt-{self.tag}-g"
        self.mobile_if, self.gateway_if = f"vk{self.tag}m1", f"vk{self.tag}g1"
        self.mobile_if2, self.gateway_if2 = f"vk{self.tag}m2", f"vk{self.tag}g2"
        if len(self.mobile_if) > IFNAME_MAX:
            raise NetnsError(f"tag {self.tag!r} too long: interface names are limited to {IFNAME_MAX} characters")
        self._namespaces: dict[str, Namespace] = {}

    def _ns(self, role: str) -> Namespace:
        ns = self._namespaces.get(role)
        if ns is None:
            raise NetnsError("MOBIKE topology not set up")
        return ns

    @property
    def mobile(self) -> Namespace:
        return self._ns("mobile")

    @property
    def gateway(self) -> Namespace:
        return self._ns("gateway")

    def setup(self) -> MobikeTopology:
        require_root()
        a = self.addresses
        for addr in (a.mobile, a.moved, a.gateway, a.mobile2, a.gateway2):
            ipaddress.ip_address(addr)  # reject a typo before `ip` does something odd
        try:
            for role, name in (("mobile", self.mobile_name), ("gateway", self.gateway_name)):
                self._namespaces[role] = ns = Namespace.create(name)
                ns.run(["sysctl", "-qw", *SYSCTLS_ALL])  # before the links: they inherit `default`
            links = [(self.mobile_if, self.gateway_if, a.mobile, a.gateway)]
            if self.second_link:
                links.append((self.mobile_if2, self.gateway_if2, a.mobile2, a.gateway2))
            for mobile_if, gateway_if, mobile_addr, gateway_addr in links:
                _run_checked([IP, "link", "add", mobile_if, "netns", self.mobile_name, "type", "veth",
                              "peer", "name", gateway_if, "netns", self.gateway_name])
                for ns, ifname, addr in ((self.mobile, mobile_if, mobile_addr),
                                         (self.gateway, gateway_if, gateway_addr)):
                    for key in ("promote_secondaries=1", "rp_filter=0"):
                        ns.run(["sysctl", "-qw", f"net.ipv4.conf.{ifname}.{key}"])
                    ns.ip("addr", "add", f"{addr}/{a.prefix_len}", "dev", ifname)
                    ns.ip("link", "set", ifname, "up")
            if self.second_link:
                subnet = ipaddress.ip_network(f"{a.gateway}/{a.prefix_len}", strict=False)
                self.mobile.ip("route", "add", str(subnet), "via", a.gateway2, "dev", self.mobile_if2,
                               "metric", str(LINK2_ROUTE_METRIC))
            for ns, inner in ((self.mobile, a.mobile_inner), (self.gateway, a.gateway_inner)):
                for cidr in inner:
                    ns.add_inner_address(cidr)
        except BaseException:
            self.close()
            raise
        return self

    # ---- looking and moving ------------------------------------------------------------------------

    @staticmethod
    def ipv4_addresses(ns: Namespace, ifname: str) -> list[str]:
        """The IPv4 addresses on `ifname`, primary first (as `ip` lists them)."""
        info = json.loads(ns.ip("-j", "-4", "addr", "show", "dev", ifname) or "[]")
        return [a["local"] for link in info for a in link.get("addr_info", []) if a.get("family") == "inet"]

    def mobile_addresses(self) -> list[str]:
        """Every IPv4 address the mobile host can use outside: those of its links that are up, link 1 first."""
        found: list[str] = []
        for ifname in (self.mobile_if, self.mobile_if2) if self.second_link else (self.mobile_if,):
            if self.link_is_up(self.mobile, ifname):
                found += self.ipv4_addresses(self.mobile, ifname)
        return found

    @staticmethod
    def link_is_up(ns: Namespace, ifname: str) -> bool:
        info = json.loads(ns.ip("-j", "link", "show", "dev", ifname) or "[]")
        return bool(info) and "UP" in info[0].get("flags", []) and info[0].get("operstate") != "DOWN"

    def move_address(self, new: str | None = None, old: str | None = None, settle: float = 0.0) -> float:
        """Move the mobile host from `old` (its link-1 address) to `new` on link 1: add `new` (it
        becomes a secondary), wait `settle` seconds, delete `old` (promote_secondaries makes `new`
        the primary instead of deleting it too). Returns time.time() right after the deletion."""
        a = self.addresses
        new, old = new or a.moved, old or a.mobile
        self.mobile.ip("addr", "add", f"{new}/{a.prefix_len}", "dev", self.mobile_if)
        if settle:
            time.sleep(settle)
        self.mobile.ip("addr", "del", f"{old}/{a.prefix_len}", "dev", self.mobile_if)
        moved_at = time.time()
        left = self.ipv4_addresses(self.mobile, self.mobile_if)
        if left != [new]:
            raise NetnsError(f"after moving {old} -> {new} the mobile host has {left} on {self.mobile_if} "
                             "(promote_secondaries not in effect?)")
        return moved_at

    def link_down(self, link: int = 1, flush: bool = True) -> float:
        """Take the mobile host's end of link `link` down and (flush) delete its addresses, as a host
        that lost the link and its lease does; returns time.time() right after. Without the flush
        charon keeps its old address: the kernel still routes from an address of a down interface
        (over the other link), so charon finds its path valid and sends only an address list update."""
        ifname = self.mobile_if if link == 1 else self.mobile_if2
        self.mobile.ip("link", "set", ifname, "down")
        if flush:
            self.mobile.ip("-4", "addr", "flush", "dev", ifname)
        return time.time()

    def link_up(self, link: int = 1) -> None:
        self.mobile.ip("link", "set", self.mobile_if if link == 1 else self.mobile_if2, "up")

    def route_source(self, ns: Namespace, dst: str) -> str | None:
        """The source address the kernel of `ns` picks for `dst` (what charon's kernel-netlink asks)."""
        info = json.loads(ns.ip("-j", "route", "get", dst) or "[]")
        return info[0].get("prefsrc") if info else None

    def close(self) -> None:
        for role in ("gateway", "mobile"):
            ns = self._namespaces.pop(role, None)
            if ns is not None:
                ns.close()

    def __enter__(self) -> MobikeTopology:
        return self.setup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
