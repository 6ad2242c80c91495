"""Three namespaces with a real NAT in the middle, for NAT-traversal tests (RFC 7296 §2.23, RFC 3948).

`NatTopology` builds `inside` (10.99.0.2/24, default route via the router), `router` (10.99.0.1/24
on the inside link, 198.51.100.1/24 on the outside link, IPv4 forwarding, an nftables `ip nat`
table masquerading everything that leaves on the outside link, with conntrack) and `outside`
(198.51.100.2/24, no route to 10.99.0.0/24: it only ever sees the NAT's address). IPv6 is off in
all three. Leaving the context manager kills everything started in the namespaces and deletes them
(the veth links and the nft table go with them).

`masquerade=False` makes the router a plain router (no nft table; `outside` routes the inside
network through it): three namespaces in a row, as the redirect tests use them (a client, a
gateway that is also the router, a second gateway behind it).

Plain masquerade keeps the source port whenever it is free, so a mapping dropped with
`flush_conntrack()` comes back on the same public port (4500 stays 4500) and a test cannot see
the change. `random_ports=True` maps UDP and TCP to a port drawn at random from
`PUBLIC_PORT_RANGE` (which holds neither 500 nor 4500) for every new mapping.
"""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple

from .netns import CMD_TIMEOUT, IP, Namespace, NetnsError, _run_checked, require_root

IFNAME_MAX = 15  # Linux interface names (IFNAMSIZ - 1)
PUBLIC_PORT_RANGE = (49152, 65535)  # random_ports: the NAT's public ports (IANA dynamic range)
NFT_TABLE = "nat"
SYSCTLS_ALL = ("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
               "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")


@dataclass(frozen=True)
class NatAddresses:
    inside: str = "10.99.0.2"
    router_inside: str = "10.99.0.1"
    router_outside: str = "198.51.100.1"  # the NAT's public address
    outside: str = "198.51.100.2"
    prefix_len: int = 24


class NatMapping(NamedTuple):
    """One UDP conntrack entry of the router: the original direction and the NAT's public port."""

    src: str
    sport: int
    dst: str
    dport: int
    public_port: int  # destination port of the reply direction


def parse_conntrack(text: str) -> list[NatMapping]:
    """`conntrack -L -p udp` lines -> mappings. Each line carries src=/dst=/sport=/dport= twice: first
    the original direction, then the reply direction (whose dport is the NAT's public port)."""
    mappings = []
    for line in text.splitlines():
        fields: dict[str, list[str]] = {}
        for word in line.split():
            key, sep, value = word.partition("=")
            if sep:
                fields.setdefault(key, []).append(value)
        if not all(len(fields.get(key, ())) >= 2 for key in ("src", "dst", "sport", "dport")):
            continue  # not a UDP entry line
        mappings.append(NatMapping(fields["src"][0], int(fields["sport"][0]), fields["dst"][0],
                                   int(fields["dport"][0]), int(fields["dport"][1])))
    return mappings


def _require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise NetnsError(f"{name} is not installed: apt-get install {package} (scripts/apt-packages.txt)")
    return path


class NatTopology:
    """inside -- router (NAT) -- outside; use as a context manager (cleanup guaranteed)."""

    def __init__(self, random_ports: bool = False, addresses: NatAddresses = NatAddresses(),
                 tag: str | None = None, masquerade: bool = True) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.random_ports = random_ports
        self.masquerade = masquerade
        self.addresses = addresses
        self.inside_name = f"ikt-{self.tag}-i"
        self.router_name = f"ikt-{self.tag}-n"
        self.outside_name = f"ikt-{self.tag}-o"
        # two veth links: inside_if <-> router_inside_if, router_outside_if <-> outside_if
        self.inside_if = f"vk{self.tag}i"
        self.router_inside_if = f"vk{self.tag}ni"
        self.router_outside_if = f"vk{self.tag}no"
        self.outside_if = f"vk{self.tag}o"
        if len(self.router_inside_if) > IFNAME_MAX:
            raise NetnsError(f"tag {self.tag!r} too long: interface names are limited to {IFNAME_MAX} characters")
        self._namespaces: dict[str, Namespace] = {}

    def _ns(self, role: str) -> Namespace:
        ns = self._namespaces.get(role)
        if ns is None:
            raise NetnsError("NAT topology not set up")
        return ns

    @property
    def inside(self) -> Namespace:
        return self._ns("inside")

    @property
    def router(self) -> Namespace:
        return self._ns("router")

    @property
    def outside(self) -> Namespace:
        return self._ns("outside")

    @property
    def inside_addr(self) -> str:
        return self.addresses.inside

    @property
    def outside_addr(self) -> str:
        return self.addresses.outside

    @property
    def public_addr(self) -> str:
        """The NAT's outside address: what `outside` sees as the source of everything from `inside`."""
        return self.addresses.router_outside

    def nat_rules(self) -> list[str]:
        """The postrouting rules of the router's `ip nat` table."""
        out = f'oifname "{self.router_outside_if}"'
        rules = []
        if self.random_ports:
            low, high = PUBLIC_PORT_RANGE
            # fully-random: a fresh random port per mapping on every kernel (plain `random` hashed the
            # tuple on older kernels, which would give a flushed mapping its old port back)
            rules.append(f"{out} meta l4proto {{ tcp, udp }} masquerade to :{low}-{high} fully-random")
        rules.append(f"{out} masquerade")  # ICMP, and everything when not random_ports
        return rules

    def setup(self) -> NatTopology:
        require_root()
        nft = _require_tool("nft", "nftables") if self.masquerade else ""
        a = self.addresses
        for addr in (a.inside, a.router_inside, a.router_outside, a.outside):
            ipaddress.ip_address(addr)  # reject a typo before `ip` does something odd
        try:
            for role, name in (("inside", self.inside_name), ("router", self.router_name),
                               ("outside", self.outside_name)):
                self._namespaces[role] = ns = Namespace.create(name)
                ns.run(["sysctl", "-qw", *SYSCTLS_ALL])  # before the links: no IPv6 on them at all
            links = ((self.inside_if, self.inside_name, self.router_inside_if),
                     (self.outside_if, self.outside_name, self.router_outside_if))
            for ifname, ns_name, peer in links:
                _run_checked([IP, "link", "add", ifname, "netns", ns_name, "type", "veth",
                              "peer", "name", peer, "netns", self.router_name])
            for ns, ifname, addr in ((self.inside, self.inside_if, a.inside),
                                     (self.router, self.router_inside_if, a.router_inside),
                                     (self.router, self.router_outside_if, a.router_outside),
                                     (self.outside, self.outside_if, a.outside)):
                ns.ip("addr", "add", f"{addr}/{a.prefix_len}", "dev", ifname)
                ns.ip("link", "set", ifname, "up")
            self.inside.ip("route", "add", "default", "via", a.router_inside)
            self.router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            if not self.masquerade:
                inside_net = ipaddress.ip_interface(f"{a.inside}/{a.prefix_len}").network
                self.outside.ip("route", "add", str(inside_net), "via", a.router_outside)
                return self
            ruleset = (f"table ip {NFT_TABLE} {{\n  chain postrouting {{\n"
                       "    type nat hook postrouting priority srcnat; policy accept;\n"
                       + "".join(f"    {rule}\n" for rule in self.nat_rules()) + "  }\n}\n")
            proc = subprocess.run([*self.router.exec_prefix(), nft, "-f", "-"], input=ruleset,
                                  capture_output=True, text=True, timeout=CMD_TIMEOUT)
            if proc.returncode != 0:
                raise NetnsError(f"nft rejected the NAT ruleset: {proc.stderr.strip()}\n{ruleset}")
        except BaseException:
            self.close()
            raise
        return self

    def flush_conntrack(self) -> None:
        """Drop every conntrack entry of the router: the next packet through it gets a new mapping."""
        self.router.run([_require_tool("conntrack", "conntrack"), "-F"])

    def mappings(self) -> list[NatMapping]:
        """The router's current UDP conntrack entries."""
        done = self.router.run([_require_tool("conntrack", "conntrack"), "-L", "-p", "udp"])
        return parse_conntrack(done.stdout)

    def close(self) -> None:
        for role in ("outside", "router", "inside"):
            ns = self._namespaces.pop(role, None)
            if ns is not None:
                ns.close()

    def __enter__(self) -> NatTopology:
        return self.setup()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
